"""Take maps elsewhere: one Parquet file with every item and every model's map.

Columns, one row per item in dataset order:

    id, label, [text], <metadata columns...>,
    <model>_x, <model>_y           one pair per model (float32, the engine's cached map)
    <model>_vector                 optional: the model's vectors (fixed-size list of float32)
    <model>_neighbors              optional: row numbers of the k nearest items (list of int32)
    image                          optional: a small PNG thumbnail per item (bytes)

``<model>`` is a column-safe slug of the model spec (``demo:shapes-clip`` -> ``demo_shapes_clip``);
the file's schema metadata (key ``parallax``) maps each slug back to its spec, the dataset spec
and fingerprint, and the projection parameters. Embedding Atlas opens the file as is
(``embedding-atlas FILE.parquet --x MODEL_x --y MODEL_y``), and pandas, Polars and DuckDB read it.
Vectors and maps come from the cache (computed and cached first when missing).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ParallaxError
from engine.params import PROJECTION
from engine.store.progress import ProgressCallback

if TYPE_CHECKING:
    import pyarrow as pa

    from engine.data import Dataset
    from engine.store.cache import Cache, Entry

log = logging.getLogger(__name__)

RESERVED = ("id", "label", "text", "image")
NEIGHBOURS_DEFAULT = 10
THUMBNAIL_PX = 64


def model_slug(spec: str) -> str:
    """A column-safe name for a model spec: lower-case letters, digits and underscores."""
    slug = re.sub(r"[^a-z0-9]+", "_", spec.lower()).strip("_")
    return slug or "model"


def unique_slugs(specs: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        base = model_slug(spec)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


@dataclass
class ExportResult:
    path: Path
    rows: int
    columns: list[str]
    models: dict[str, str]  # slug -> spec
    bytes: int
    map_columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # spec -> (x, y)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "rows": self.rows,
            "columns": self.columns,
            "models": self.models,
            "map_columns": {k: list(v) for k, v in self.map_columns.items()},
            "bytes": self.bytes,
        }


@dataclass
class ModelMap:
    """One model's map of the dataset, as it goes into the file."""

    spec: str
    coords: np.ndarray  # N x 2
    vectors: Entry | None = None  # the cached vectors (for --vectors / --neighbours)
    modality: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # keys and map parameters, for metadata


def _thumbnail_png(dataset: Dataset, index: int) -> bytes | None:
    from engine.data import dataset_thumbnail
    from engine.errors import ItemError

    try:
        image = dataset_thumbnail(dataset, index, THUMBNAIL_PX)
    except (ItemError, OSError):
        return None
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _metadata_columns(dataset: Dataset) -> dict[str, Any]:
    meta = dataset.metadata()
    out: dict[str, Any] = {}
    for name in meta.columns:
        key = str(name)
        if key in RESERVED or key.endswith(("_x", "_y", "_vector", "_neighbors")):
            key = f"meta_{key}"
        out[key] = meta[name].tolist()
    return out


def build_table(
    dataset: Dataset,
    maps: Sequence[ModelMap],
    *,
    vectors: bool = False,
    neighbours: int = 0,
    thumbnails: bool = False,
) -> pa.Table:
    """The export as an Arrow table (the file's schema metadata included)."""
    import pyarrow as pa

    if not maps:
        raise ParallaxError("export needs at least one model")
    if neighbours < 0:
        raise ParallaxError("--neighbours must be 0 or more")
    n = len(dataset)
    columns: dict[str, Any] = {
        "id": pa.array(dataset.ids, pa.string()),
        "label": pa.array(dataset.labels, pa.string()),
    }
    if dataset.texts is not None:
        columns["text"] = pa.array(dataset.texts, pa.string())
    for key, values in _metadata_columns(dataset).items():
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them readable as text
            columns[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    slugs = unique_slugs([m.spec for m in maps])
    info_models: dict[str, Any] = {}
    for m, slug in zip(maps, slugs, strict=True):
        xy = np.asarray(m.coords, dtype=np.float32)
        if xy.shape != (n, 2):
            raise ParallaxError(f"{m.spec}: a map of {xy.shape[0]} points for {n} items")
        columns[f"{slug}_x"] = pa.array(xy[:, 0])
        columns[f"{slug}_y"] = pa.array(xy[:, 1])
        if (vectors or neighbours) and m.vectors is None:
            raise ParallaxError(f"{m.spec}: no cached vectors to export")
        if vectors or neighbours:
            # Memory-mapped and read a block at a time: Arrow's copy (and the k-NN index) are
            # the only N x D in memory, never the file's pages or a float32 copy on top.
            array = m.vectors.load()  # type: ignore[union-attr]
            if vectors:
                from engine.store.chunks import row_chunks

                columns[f"{slug}_vector"] = pa.chunked_array(
                    [
                        pa.FixedSizeListArray.from_arrays(
                            pa.array(block.reshape(-1)), array.shape[1]
                        )
                        for _, block in row_chunks(array)
                    ]
                )
            if neighbours:
                from engine.maps.knn import self_knn

                idx, _ = self_knn(array, min(neighbours, max(n - 1, 1)), normalise=True)
                columns[f"{slug}_neighbors"] = pa.array(list(idx.astype(np.int32)))
        info_models[slug] = {"spec": m.spec, "modality": m.modality, **m.info}
    if thumbnails and dataset.has_images:
        columns["image"] = pa.array([_thumbnail_png(dataset, i) for i in range(n)], pa.binary())
    table = pa.table(columns)
    info = {"dataset": dataset.spec, "fingerprint": dataset.fingerprint(), "models": info_models}
    return table.replace_schema_metadata({"parallax": json.dumps(info)})


def parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue().to_pybytes()


def export_parquet(
    dataset: Dataset,
    model_specs: Sequence[str],
    out: str | Path,
    *,
    method: str = PROJECTION.method,
    vectors: bool = False,
    neighbours: int = 0,
    thumbnails: bool = False,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write ``dataset`` with one x/y pair per model (and optionally vectors, k-NN row lists and
    thumbnails) to ``out`` as Parquet, atomically. Vectors and maps come from the cache
    (embedded and projected first when missing)."""
    from engine.embed.local import embed_dataset
    from engine.maps.project import project
    from engine.store.atomic import atomic_write_bytes
    from engine.store.cache import Cache

    if not model_specs:
        raise ParallaxError("export needs at least one --model")
    cache = cache or Cache()
    maps = []
    for spec in model_specs:
        embedded = embed_dataset(dataset, spec, cache=cache, progress=progress)
        coords = project(embedded.path, method, cache=cache, progress=progress)
        maps.append(
            ModelMap(
                spec,
                coords.coords(),
                cache.get("vectors", embedded.key),
                embedded.modality,
                {
                    "vectors_key": embedded.key,
                    "map_key": coords.key,
                    "map": {"method": method, **coords.params},
                },
            )
        )
    table = build_table(
        dataset, maps, vectors=vectors, neighbours=neighbours, thumbnails=thumbnails
    )
    data = parquet_bytes(table)
    path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParallaxError(f"cannot write {path}: {exc.strerror or exc}") from exc
    atomic_write_bytes(path, data)
    log.info("exported %d rows x %d columns to %s", len(dataset), len(table.columns), path)
    slugs = unique_slugs(list(model_specs))
    return ExportResult(
        path=path,
        rows=len(dataset),
        columns=list(table.column_names),
        models=dict(zip(slugs, model_specs, strict=True)),
        bytes=len(data),
        map_columns={s: (f"{g}_x", f"{g}_y") for s, g in zip(model_specs, slugs, strict=True)},
    )
