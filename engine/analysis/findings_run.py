"""Findings on a dataset: gather each model's vectors, labels, split and content hashes,
compute (``engine.analysis.findings``) and cache the result (``findings/<key>.json``).

The key holds everything that changes the answer: the dataset's fingerprint, every model's
vectors key (in the order given), the label and split columns' names and values, and
``FindingsParams.key_material``. One writer per key (a lock); the JSON is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.analysis.findings import Findings, compute_findings
from engine.errors import NotFound, ParallaxError
from engine.params import FINDINGS, FindingsParams
from engine.store.cache import make_key

if TYPE_CHECKING:
    from engine.data.base import Dataset
    from engine.store.cache import Cache, Entry
    from engine.store.progress import ProgressCallback

log = logging.getLogger(__name__)

SPLIT_COLUMN = "split"  # used when present and no split column is named


class NotComputed(NotFound):
    """No cached findings for this dataset, these models and settings (and none computed)."""

    code = "not_computed"


def _digest(values: Sequence[Any] | None) -> str | None:
    if values is None:
        return None
    blob = json.dumps([None if v is None else str(v) for v in values]).encode()
    return hashlib.sha256(blob).hexdigest()


def _column(dataset: Dataset, name: str, role: str) -> list[Any]:
    meta = dataset.metadata()
    if name not in meta.columns:
        have = ", ".join(map(str, meta.columns)) or "none"
        raise ParallaxError(
            f"{dataset.spec} has no column {name!r} for the {role} (columns: {have})"
        )
    out = []
    for v in meta[name].tolist():
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        out.append(
            None
            if missing
            else (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
        )
    return out


def labels_and_splits(
    dataset: Dataset, label_column: str | None, split_column: str | None
) -> tuple[list[str | None] | None, list[Any] | None, str | None]:
    """The labels (the dataset's own, or a metadata column), the split values and the split
    column used (``split`` when the dataset has one and none is named)."""
    if label_column is None:
        labels = list(dataset.labels) if any(x is not None for x in dataset.labels) else None
    else:
        labels = _column(dataset, label_column, "labels")
    if split_column is None and SPLIT_COLUMN in dataset.metadata().columns:
        split_column = SPLIT_COLUMN
    splits = None if split_column is None else _column(dataset, split_column, "split")
    return labels, splits, split_column


_SPACE = re.compile(r"\s+")


class ContentHashes:
    """Content hashes of rows, computed on demand: decoded pixels and/or normalised texts
    (the modalities the models embedded)."""

    def __init__(self, dataset: Dataset, modalities: set[str]) -> None:
        self.dataset = dataset
        self.images = "image" in modalities and dataset.has_images
        self.texts = dataset.texts if "text" in modalities else None

    def __call__(self, rows: np.ndarray) -> list[str | None]:
        out: list[str | None] = []
        for r in rows.tolist():
            h = hashlib.blake2b(digest_size=20)
            if self.images:
                try:
                    a = np.asarray(self.dataset.load_image(int(r)).convert("RGB"))
                except Exception:  # an unreadable item has no known content
                    out.append(None)
                    continue
                h.update(repr(a.shape).encode() + a.tobytes())
            if self.texts is not None:
                t = self.texts[int(r)]
                h.update(b"T" + _SPACE.sub(" ", (t or "").strip().lower()).encode())
            out.append(h.hexdigest())
        return out


def findings_key(
    dataset: Dataset,
    vectors_keys: Sequence[str],
    labels: Sequence[Any] | None,
    splits: Sequence[Any] | None,
    columns: Mapping[str, str | None],
    params: FindingsParams | Mapping[str, Any],
) -> str:
    """The cache key of findings; ``params`` may be ``key_material()`` itself (a bundle's)."""
    material = params.key_material() if isinstance(params, FindingsParams) else dict(params)
    return make_key(
        kind="findings",
        dataset=dataset.fingerprint(),
        # Sorted: the same vectors are the same findings whatever order the models come in
        # (``Findings.for_models`` puts a cached answer in the order asked).
        vectors=sorted(vectors_keys),
        labels=_digest(labels),
        splits=_digest(splits),
        columns=dict(columns),
        params=material,
    )


def _key_and_columns(
    dataset: Dataset,
    entries: Mapping[str, Entry],
    label_column: str | None,
    split_column: str | None,
    params: FindingsParams,
) -> tuple[str, dict[str, str | None], list[str | None] | None, list[Any] | None]:
    labels, splits, split_column = labels_and_splits(dataset, label_column, split_column)
    columns = {"label_column": label_column, "split_column": split_column}
    key = findings_key(dataset, [entries[m].key for m in entries], labels, splits, columns, params)
    return key, columns, labels, splits


def _read_entry(cache: Cache, key: str, entries: Mapping[str, Entry]) -> Findings | None:
    path = cache.path("findings", key)
    if not path.is_file():
        return None
    try:
        found = Findings.from_json(json.loads(path.read_text()), cached=True)
        found = found.for_models(list(entries), [e.key for e in entries.values()])
    except (OSError, ValueError, KeyError, TypeError, ParallaxError):
        return None  # a corrupt entry is recomputed and overwritten
    cache.touch(path)
    return found


def cached_findings(
    dataset: Dataset, entries: Mapping[str, Entry], cache: Cache, **options: Any
) -> Findings | None:
    """The cached findings under every model of ``entries`` (in that order), or None: reads
    only, computes nothing (export, bundles, view-only deployments). ``options``: those of
    ``find_in_dataset`` (label and split columns, params)."""
    try:
        return find_in_dataset(dataset, entries, cache, compute=False, **options)
    except NotComputed:
        return None


def find_in_dataset(
    dataset: Dataset,
    entries: Mapping[str, Entry],
    cache: Cache,
    *,
    label_column: str | None = None,
    split_column: str | None = None,
    params: FindingsParams = FINDINGS,
    progress: ProgressCallback | None = None,
    compute: bool = True,
) -> Findings:
    """Findings under every model of ``entries`` (model spec -> finished vectors), cached.
    ``compute`` False: the cached entry or ``NotComputed``."""
    from engine.store.cache import atomic_write_json, locked

    t0 = time.perf_counter()
    key, columns, labels, splits = _key_and_columns(
        dataset, entries, label_column, split_column, params
    )
    names = list(entries)

    def read_cached() -> Findings | None:
        found = _read_entry(cache, key, entries)
        if found is not None:
            found.seconds = time.perf_counter() - t0
        return found

    found = read_cached()
    if found is not None:
        return found
    if not compute:
        raise NotComputed(
            f"no findings are cached for {dataset.spec} under {', '.join(names)} "
            "(compute them with python -m engine findings)"
        )
    with locked(cache.root, key):
        found = read_cached()
        if found is not None:
            return found
        modalities = {m: str(entries[m].manifest.get("modality", "")) for m in names}
        vectors = {m: entries[m].load() for m in names}
        n = len(dataset)
        for m, v in vectors.items():
            if len(v) != n:
                raise ParallaxError(f"{m}: {len(v)} vectors for {n} items (embed again)")
        content = None
        if dataset.has_images or dataset.texts is not None:
            content = ContentHashes(dataset, set(modalities.values()))
        found = compute_findings(
            vectors,
            labels=labels,
            splits=splits,
            texts=dataset.texts,
            modalities=modalities,
            content_key=content,
            params=params,
            progress=progress,
        )
        found.info = {
            "dataset": dataset.spec,
            **columns,
            "key": key,
            "params": params.key_material(),
            "vectors": {m: entries[m].key for m in names},
        }
        atomic_write_json(cache.path("findings", key), found.to_json())
        found.seconds = time.perf_counter() - t0
    return found
