"""Take maps elsewhere: one Parquet file with every item and every model's map.

Columns, one row per item in dataset order:

    id, label, [text], <metadata columns...>,
    <model>_x, <model>_y           one pair per model (float32, the engine's cached map)
    <model>_vector                 optional: the model's vectors (fixed-size list of float32)
    <model>_neighbours             optional: each item's k nearest items under the model, as
                                   Embedding Atlas reads them: {"ids": [row, ...],
                                   "distances": [cosine distance, ...]}, nearest first
    image                          optional: a small PNG thumbnail per item (bytes)

and, when findings (``engine.analysis.findings``) are cached for the dataset under exactly the
exported models (in that order, default settings), the findings, null where a row has none:

    finding_label_error            the suggested label of a likely label error (string)
    finding_outlier_score          the combined outlier score of the ranked outliers (float)
    finding_duplicate_group        the row's duplicate group: its index in ``duplicates`` (int)
    finding_duplicate_exact        whether that group holds exact copies (bool)
    finding_leak_group             rows linked by leaks between splits share a number (int)
    <model>_cluster                the name of the row's cluster under the model (string)

One naming scheme for every file the engine or the dashboard writes: ``<model>_<field>``
(``column_name``; ``model_columns`` gives a list of models their columns). ``<model>`` is a
column-safe slug of the model spec (``demo:shapes-clip`` -> ``demo_shapes_clip``): plain SQL
identifiers, so DuckDB, pandas and Polars take them unquoted. The file's schema metadata (key
``parallax``) maps each slug back to its spec, the dataset spec and fingerprint, and the
projection parameters. Embedding Atlas opens the file as is (``embedding-atlas FILE.parquet --x
MODEL_x --y MODEL_y --neighbors MODEL_neighbours``). A metadata column whose name is taken is
written as ``meta_<name>``. Vectors and maps come from the cache (computed first when missing).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
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


FIELDS = ("x", "y", "vector", "neighbours", "cluster")
# The findings across the models: one column each, ``finding_<what>`` (``findings_columns``).
FINDING_COLUMNS = (
    "finding_label_error",
    "finding_outlier_score",
    "finding_duplicate_group",
    "finding_duplicate_exact",
    "finding_leak_group",
)


def column_name(slug: str, field: str) -> str:
    """The column of one model's ``field`` (one of ``FIELDS``): ``<slug>_<field>``."""
    if field not in FIELDS:
        raise ValueError(f"unknown export field {field!r}: one of {', '.join(FIELDS)}")
    return f"{slug}_{field}"


@dataclass(frozen=True)
class ModelColumns:
    """The column names of one model in an export (``model_columns``)."""

    spec: str
    slug: str

    def __getattr__(self, field: str) -> str:
        """``.x``, ``.y``, ``.vector``, ``.neighbours``, ``.cluster``: the column of that field
        (one table, ``FIELDS``, names them all)."""
        if field in FIELDS:
            return column_name(self.slug, field)
        raise AttributeError(field)


def model_columns(specs: Sequence[str]) -> list[ModelColumns]:
    """The columns of each of ``specs`` (labels or specs, in order; the same spec twice gets
    two sets: ``a_x`` then ``a_2_x``). Every table of maps the engine or a page writes names
    its columns through this."""
    return [ModelColumns(spec, slug) for spec, slug in zip(specs, unique_slugs(specs), strict=True)]


def neighbours_array(idx: np.ndarray, similarities: np.ndarray) -> pa.Array:
    """Embedding Atlas's neighbours form, one struct per row: ``{"ids": [row numbers],
    "distances": [1 - cosine]}`` (``ids`` are zero-based row indices, as Atlas reads them)."""
    import pyarrow as pa

    n, k = idx.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    ids = pa.ListArray.from_arrays(offsets, pa.array(idx.reshape(-1).astype(np.int32)))
    distances = (1.0 - np.asarray(similarities, dtype=np.float32)).reshape(-1)
    dist = pa.ListArray.from_arrays(offsets, pa.array(np.maximum(distances, 0.0)))
    return pa.StructArray.from_arrays([ids, dist], names=["ids", "distances"])


@dataclass
class ExportResult:
    path: Path
    rows: int
    columns: list[str]
    models: dict[str, str]  # slug -> spec
    bytes: int
    map_columns: dict[str, tuple[str, str]] = field(default_factory=dict)  # spec -> (x, y)
    neighbour_columns: dict[str, str] = field(default_factory=dict)  # spec -> column, if any
    finding_columns: list[str] = field(default_factory=list)  # when findings were cached

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "rows": self.rows,
            "columns": self.columns,
            "models": self.models,
            "map_columns": {k: list(v) for k, v in self.map_columns.items()},
            "neighbour_columns": dict(self.neighbour_columns),
            "finding_columns": list(self.finding_columns),
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


def findings_columns(
    found: Mapping[str, Any], n: int, clusters: Mapping[str, str]
) -> dict[str, pa.Array]:
    """The findings JSON (``Findings.to_json``) as per-row columns (``FINDING_COLUMNS``, then
    ``clusters[model]`` for each model's cluster names); null where a row has no finding."""
    import pyarrow as pa

    from engine.analysis.findings import UnionFind

    suggested: list[str | None] = [None] * n
    for e in found.get("label_errors", []):
        suggested[int(e["row"])] = str(e["suggested"])
    outlier = np.full(n, np.nan, dtype=np.float32)
    for o in found.get("outliers", []):
        outlier[int(o["row"])] = float(o["score"])
    group = np.full(n, -1, dtype=np.int32)
    exact = np.zeros(n, dtype=bool)
    for i, d in enumerate(found.get("duplicates", [])):
        rows = np.asarray(d["rows"], dtype=np.int64)
        group[rows] = i
        exact[rows] = bool(d["exact"])
    uf = UnionFind()
    for leak in found.get("leaks", []):
        a, b = (int(r) for r in leak["rows"][:2])
        uf.union(a, b)
    leak_group = np.full(n, -1, dtype=np.int32)
    for i, rows in enumerate(uf.groups()):
        leak_group[rows] = i
    out: dict[str, pa.Array] = {
        "finding_label_error": pa.array(suggested, pa.string()),
        "finding_outlier_score": pa.array(outlier, mask=np.isnan(outlier)),
        "finding_duplicate_group": pa.array(group, mask=group < 0),
        "finding_duplicate_exact": pa.array(exact, mask=group < 0),
        "finding_leak_group": pa.array(leak_group, mask=leak_group < 0),
    }
    for model, column in clusters.items():
        names: list[str | None] = [None] * n
        for c in found.get("clusters", {}).get(model, []):
            for r in c["rows"]:
                names[int(r)] = str(c["name"])
        out[column] = pa.array(names, pa.string())
    return out


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


def _metadata_columns(dataset: Dataset, taken: set[str]) -> dict[str, Any]:
    """The dataset's metadata columns; a name already ``taken`` (``id``, a model's column)
    becomes ``meta_<name>``."""
    meta = dataset.metadata()
    out: dict[str, Any] = {}
    for name in meta.columns:
        key = str(name)
        while key in taken or key in out:
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
    findings: Mapping[str, Any] | None = None,
) -> pa.Table:
    """The export as an Arrow table (the file's schema metadata included); ``findings``: a
    findings JSON of the same rows (``Findings.to_json``) for the ``finding_*`` and
    ``<model>_cluster`` columns."""
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
    names = model_columns([m.spec for m in maps])
    taken = set(RESERVED) | {column_name(c.slug, f) for c in names for f in FIELDS}
    if findings is not None:
        taken |= set(FINDING_COLUMNS)
    for key, values in _metadata_columns(dataset, taken).items():
        try:
            columns[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them readable as text
            columns[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    info_models: dict[str, Any] = {}
    for m, col in zip(maps, names, strict=True):
        xy = np.asarray(m.coords, dtype=np.float32)
        if xy.shape != (n, 2):
            raise ParallaxError(f"{m.spec}: a map of {xy.shape[0]} points for {n} items")
        columns[col.x] = pa.array(xy[:, 0])
        columns[col.y] = pa.array(xy[:, 1])
        if (vectors or neighbours) and m.vectors is None:
            raise ParallaxError(f"{m.spec}: no cached vectors to export")
        if vectors or neighbours:
            # Memory-mapped and read a block at a time: Arrow's copy (and the k-NN index) are
            # the only N x D in memory, never the file's pages or a float32 copy on top.
            array = m.vectors.load()  # type: ignore[union-attr]
            if vectors:
                from engine.store.chunks import row_chunks

                columns[col.vector] = pa.chunked_array(
                    [
                        pa.FixedSizeListArray.from_arrays(
                            pa.array(block.reshape(-1)), array.shape[1]
                        )
                        for _, block in row_chunks(array)
                    ]
                )
            if neighbours:
                from engine.maps.knn import self_knn

                idx, sims = self_knn(array, min(neighbours, max(n - 1, 1)), normalise=True)
                columns[col.neighbours] = neighbours_array(idx, sims)
        info_models[col.slug] = {"spec": m.spec, "modality": m.modality, **m.info}
    if thumbnails and dataset.has_images:
        columns["image"] = pa.array([_thumbnail_png(dataset, i) for i in range(n)], pa.binary())
    info: dict[str, Any] = {
        "dataset": dataset.spec,
        "fingerprint": dataset.fingerprint(),
        "models": info_models,
    }
    if findings is not None:
        if int(findings["n"]) != n:
            raise ParallaxError(f"findings of {findings['n']} items for {n} items")
        slugs = {c.spec: c.cluster for c in names if c.spec in findings.get("clusters", {})}
        columns.update(findings_columns(findings, n, slugs))
        info["findings"] = {
            "key": findings.get("key"),
            "models": list(findings["models"]),
            "label_column": findings.get("label_column"),
            "split_column": findings.get("split_column"),
            "columns": [*FINDING_COLUMNS, *slugs.values()],
        }
    table = pa.table(columns)
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
    findings: bool = True,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Write ``dataset`` with one x/y pair per model (and optionally vectors, k-NN row lists and
    thumbnails) to ``out`` as Parquet, atomically. Vectors and maps come from the cache
    (embedded and projected first when missing). ``findings``: add the findings' columns when
    they are cached for these models (never computed here)."""
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
    found = None
    if findings:
        from engine.analysis.findings_run import cached_findings

        entries = {m.spec: m.vectors for m in maps if m.vectors is not None}
        if len(entries) == len(maps):
            cached = cached_findings(dataset, entries, cache)
            found = cached.to_json() if cached is not None else None
    table = build_table(
        dataset,
        maps,
        vectors=vectors,
        neighbours=neighbours,
        thumbnails=thumbnails,
        findings=found,
    )
    data = parquet_bytes(table)
    path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParallaxError(f"cannot write {path}: {exc.strerror or exc}") from exc
    atomic_write_bytes(path, data)
    log.info("exported %d rows x %d columns to %s", len(dataset), len(table.columns), path)
    names = model_columns(list(model_specs))
    return ExportResult(
        path=path,
        rows=len(dataset),
        columns=list(table.column_names),
        models={c.slug: c.spec for c in names},
        bytes=len(data),
        map_columns={c.spec: (c.x, c.y) for c in names},
        neighbour_columns={c.spec: c.neighbours for c in names} if neighbours else {},
        finding_columns=[c for c in table.column_names if c in FINDING_COLUMNS]
        + [c.cluster for c in names if c.cluster in table.column_names],
    )
