"""Writing bundles: embed (cached), project (cached) and pack a dataset x models into one file.

The writer half of bundles (a pipeline over the engine); the format and the reader live in
``engine.data.bundle`` (a dataset source: ``bundle:PATH``). A bundle can be produced on a GPU
box and opened on a laptop or on Streamlit Community Cloud with no model at all.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    THUMB_SIZE,
    member_digest,
    npy_bytes,
)
from engine.errors import ItemError, ParallaxError
from engine.store.cache import Cache, atomic_write_bytes
from engine.store.progress import ProgressCallback, ProgressTracker

NEIGHBOURS_K = 10


def _thumbnail_bytes(image: Any, size: int = THUMB_SIZE) -> bytes:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, format="WEBP", quality=80, method=4)
    return buf.getvalue()


def _quality_or_none(vectors: np.ndarray, coords: np.ndarray) -> dict[str, Any] | None:
    from engine.maps.project import map_quality

    try:
        return map_quality(vectors, coords)
    except ParallaxError:  # too few items to measure: the bundle is still fine
        return None


def _findings(
    dataset: Any,
    models_meta: list[dict[str, Any]],
    cache: Cache,
    *,
    compute: bool,
    progress: ProgressCallback | None,
) -> dict[str, Any] | None:
    """The findings JSON under every bundled model (named by their bundled specs, in bundle
    order), from the cache or computed (``compute``); None when not cached and not computed."""
    from engine.analysis.findings_run import cached_findings, find_in_dataset

    entries = {}
    for m in models_meta:
        entry = cache.get("vectors", m["vectors_key"])
        if entry is None:
            return None
        entries[m["spec"]] = entry
    if len(entries) != len(models_meta):  # one model twice (two modalities): not a model list
        return None
    if compute:
        found = find_in_dataset(dataset, entries, cache, progress=progress)
    else:
        found = cached_findings(dataset, entries, cache)
    if found is None:
        return None
    data = found.to_json()
    data.pop("dataset", None)  # the bundle's own spec replaces it when it is opened
    data.pop("key", None)
    return data


# -- writing ---------------------------------------------------------------------------------
@dataclass
class BundleResult:
    path: Path
    n: int
    models: list[str]
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "n": self.n,
            "models": self.models,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 2),
        }


def write_bundle(
    dataset: Any,
    model_specs: list[Any],
    out: str | Path,
    *,
    methods: tuple[str, ...] = ("umap", "pca"),
    include_vectors: bool = True,
    findings: bool | None = None,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> BundleResult:
    """Embed (cached), project (cached) and pack ``dataset`` x models into one file.

    ``model_specs`` are spec strings (or already loaded models, which tests use).
    ``findings``: None packs the findings under every model (default settings) when they are
    cached, True computes them when they are not, False leaves them out. A view-only
    deployment shows packed findings without computing anything.
    """
    import pandas as pd

    from engine.embed.local import embed_dataset
    from engine.maps.knn import self_knn
    from engine.maps.project import project
    from engine.store.chunks import row_chunks

    t0 = time.perf_counter()
    cache = cache or Cache()
    from engine.data import as_dataset

    dataset = as_dataset(dataset, cache.root)
    if not model_specs:
        raise ParallaxError("a bundle needs at least one --model")
    n = len(dataset)
    members: dict[str, bytes] = {}
    models_meta: list[dict[str, Any]] = []
    projections: list[dict[str, Any]] = []
    for i, spec in enumerate(model_specs):
        res = embed_dataset(dataset, spec, cache=cache, progress=progress)
        entry = cache.get("vectors", res.key)
        assert entry is not None
        # Memory-mapped, read a block at a time (engine.store.chunks): no float32 copy of N x D.
        vectors = entry.load()
        vec_name = f"vectors/{i}.npy"
        if include_vectors:
            half = np.empty(vectors.shape, dtype=np.float16)
            for start, block in row_chunks(vectors):
                half[start : start + len(block)] = block
            members[vec_name] = npy_bytes(half)
            del half
        nbr, _ = self_knn(vectors, min(NEIGHBOURS_K, max(1, n - 1)))
        members[f"neighbors/{i}.npy"] = npy_bytes(nbr.astype(np.int32))
        models_meta.append(
            {
                "spec": res.model,
                "modality": res.modality,
                "dim": res.dim,
                "vectors_key": res.key,
                "vectors": vec_name if include_vectors else None,
                "vectors_manifest": {
                    k: v for k, v in entry.manifest.items() if k not in ("shape", "dtype")
                },
                "neighbors": f"neighbors/{i}.npy",
            }
        )
        for method in methods:
            proj = project(entry, method, cache=cache, progress=progress)
            coords = proj.coords()
            name = f"coords/{i}-{method}.npy"
            members[name] = npy_bytes(coords.astype(np.float32))
            projections.append(
                {
                    "model": i,
                    "method": method,
                    "path": name,
                    "key": proj.key,
                    "params": proj.params,
                    "quality": _quality_or_none(vectors, coords),
                }
            )

    findings_meta = None
    if findings is not False:
        found = _findings(dataset, models_meta, cache, compute=bool(findings), progress=progress)
        if found is not None:
            members["findings.json"] = json.dumps(found, separators=(",", ":")).encode()
            findings_meta = {"path": "findings.json", "models": list(range(len(models_meta)))}

    meta = dataset.metadata()
    items = pd.DataFrame(
        {
            "id": dataset.ids,
            "label": dataset.labels,
            "text": dataset.texts if dataset.texts is not None else [None] * n,
        }
    )
    for col in meta.columns:
        if col not in items.columns:
            items[col] = meta[col].to_numpy()
    buf = io.BytesIO()
    items.to_parquet(buf, index=False)
    members["items.parquet"] = buf.getvalue()

    if dataset.has_images:
        tracker = ProgressTracker("bundle thumbnails", n, progress)
        thumbs: list[bytes | None] = []
        for i in range(n):
            try:
                thumbs.append(_thumbnail_bytes(dataset.load_image(i)))
            except ItemError:
                thumbs.append(None)
            if (i + 1) % 256 == 0 or i + 1 == n:
                tracker.advance((i % 256) + 1)
        buf = io.BytesIO()
        pd.DataFrame({"id": dataset.ids, "thumb": thumbs}).to_parquet(buf, index=False)
        members["thumbs.parquet"] = buf.getvalue()

    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": {
            "spec": dataset.spec,
            "name": dataset.name,
            "n": n,
            "has_images": bool(dataset.has_images),
            "has_texts": dataset.texts is not None,
            "fingerprint": dataset.fingerprint(),
            "skipped": [{"source": s.source, "reason": s.reason} for s in dataset.skipped],
        },
        "models": models_meta,
        "projections": projections,
        "thumbs": "thumbs.parquet" if dataset.has_images else None,
        "findings": findings_meta,
        "files": {name: member_digest(data) for name, data in members.items()},
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
        for name, data in members.items():
            zf.writestr(name, data)
    out = Path(out)
    atomic_write_bytes(out, buf.getvalue())
    return BundleResult(
        out, n, [m["spec"] for m in models_meta], out.stat().st_size, time.perf_counter() - t0
    )
