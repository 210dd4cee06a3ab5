"""Vectors a dataset brings with it, usable as a model: ``column:NAME``.

Users arrive with embeddings they already computed. A manifest (Parquet, JSONL, CSV) or an
``hfds:`` dataset may hold vector columns: lists or fixed-size lists of numbers (Parquet, HF),
JSON lists (JSONL), or JSON lists written as text (CSV). A manifest may also name ``.npy`` files
in a side file ``<manifest stem>.vectors.json`` (``{"NAME": "relative/path.npy"}``), one row per
manifest row. ``column:NAME`` then behaves like any computed model: ``engine.embed.local`` caches
the
vectors under the usual key, with a content hash of the column as the model's identity, so maps,
comparisons, bundles and search see no difference.

Every value is checked before anything is written: ragged lengths, NaN / inf, values that are
not numbers and all-zero rows are refused with one line naming the column and the row.
"""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ParallaxError
from engine.store.chunks import gather_rows, row_blocks, row_chunks

if TYPE_CHECKING:
    from engine.data import Dataset

PREFIX = "column:"
SIDE_FILE_SUFFIX = ".vectors.json"
_PROBE_ROWS = 5  # rows looked at to decide whether a metadata column holds vectors


def is_column_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.strip().startswith(PREFIX)


def column_name(spec: str) -> str:
    name = spec.strip()[len(PREFIX) :].strip()
    if not name:
        raise ParallaxError("column: needs a column name, e.g. column:clip_b32")
    return name


def _side_file(dataset: Dataset) -> Path | None:
    path = getattr(dataset, "path", None)
    if not isinstance(path, Path) or not path.is_file():
        return None
    side = path.with_name(path.stem + SIDE_FILE_SUFFIX)
    return side if side.is_file() else None


def _side_entries(dataset: Dataset) -> dict[str, str]:
    side = _side_file(dataset)
    if side is None:
        return {}
    try:
        entries = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ParallaxError(f"cannot read {side.name}: {exc}") from exc
    if not isinstance(entries, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in entries.items()
    ):
        raise ParallaxError(f"{side.name} must map vector names to .npy paths")
    return entries


def _looks_like_vector(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip()
        return text.startswith("[") and text.endswith("]")
    if isinstance(value, list | tuple | np.ndarray):
        return len(value) > 0 and all(
            isinstance(v, int | float | np.number) and not isinstance(v, bool)
            for v in list(value[:4])
        )
    return False


def vector_columns(dataset: Dataset) -> list[str]:
    """``column:`` names this dataset offers: metadata columns whose first rows hold vectors,
    then the names in a ``.vectors.json`` side file."""
    meta = dataset.metadata()
    names = []
    for name in meta.columns:
        head = [v for v in meta[name].head(_PROBE_ROWS).tolist() if v is not None]
        if head and all(_looks_like_vector(v) for v in head):
            names.append(str(name))
    return names + [n for n in _side_entries(dataset) if n not in names]


def _row_name(dataset: Dataset, row: int) -> str:
    return f"row {row} (id {dataset.ids[row]!r})"


def _as_row(value: Any, column: str, where: str) -> np.ndarray:
    if isinstance(value, str):  # CSV: a JSON list written as text
        try:
            value = json.loads(value)
        except ValueError:
            raise ParallaxError(f"column:{column} {where}: not a list of numbers") from None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise ParallaxError(f"column:{column} {where}: no vector (empty cell)")
    if not isinstance(value, list | tuple | np.ndarray):
        raise ParallaxError(
            f"column:{column} {where}: not a list of numbers (a {type(value).__name__})"
        )
    try:
        row = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParallaxError(f"column:{column} {where}: not a list of numbers") from None
    if row.ndim != 1:
        raise ParallaxError(f"column:{column} {where}: a nested list, not a vector")
    return row


def _from_metadata(dataset: Dataset, name: str) -> np.ndarray | None:
    meta = dataset.metadata()
    if name not in meta.columns:
        return None
    values = meta[name].tolist()
    rows = []
    dim = None
    for i, value in enumerate(values):
        row = _as_row(value, name, _row_name(dataset, i))
        if dim is None:
            dim = len(row)
            if dim == 0:
                raise ParallaxError(f"column:{name} {_row_name(dataset, i)}: an empty vector")
        elif len(row) != dim:
            raise ParallaxError(
                f"column:{name} {_row_name(dataset, i)}: {len(row)} values, expected {dim} "
                "like the rows before (ragged vectors)"
            )
        rows.append(row)
    if not rows:
        raise ParallaxError(f"column:{name}: the dataset has no rows")
    return np.stack(rows)


@dataclass(frozen=True)
class SideFile:
    """A ``.npy`` side file whose bytes can be cached as they are (native float32, C order,
    one row per item): what was read, where the rows start, and its ``os.stat`` when read."""

    path: Path
    nbytes: int  # header and rows: the bytes to copy
    stamp: tuple[int, int, int, int]  # device, inode, size, mtime (ns)

    def changed(self) -> bool:
        """Whether the file is no longer the one that was read (another inode, size or
        modification time): a copy made after the hash must not be cached then."""
        try:
            return _stamp(self.path) != self.stamp
        except OSError:
            return True


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _from_side_file(dataset: Dataset, name: str) -> tuple[np.ndarray, SideFile | None] | None:
    entries = _side_entries(dataset)
    if name not in entries:
        return None
    side = _side_file(dataset)
    assert side is not None
    base = side.parent.resolve()
    path = (base / entries[name]).resolve()
    if not path.is_relative_to(base):
        raise ParallaxError(f"column:{name}: {entries[name]!r} points outside the manifest folder")
    try:
        stamp = _stamp(path)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ParallaxError(f"column:{name}: cannot read {path.name}: {exc}") from exc
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ParallaxError(f"column:{name}: {path.name} must be a 2-D numeric array")
    rows = getattr(dataset, "source_rows", None)
    total = getattr(dataset, "table_rows", len(dataset))
    if len(array) != total:
        raise ParallaxError(
            f"column:{name}: {path.name} has {len(array)} rows, the manifest {total}"
        )
    # Left memory-mapped when every row is an item (``read_column`` checks it a block at a
    # time); the items of a manifest that skipped rows are gathered block by block.
    if rows is None or len(rows) == len(array):  # rows: sorted, unique table rows
        offset = getattr(array, "offset", None)
        plain = array.dtype == np.float32 and array.flags.c_contiguous and isinstance(offset, int)
        side_file = SideFile(path, int(offset) + int(array.nbytes), stamp) if plain else None
        return array, side_file
    return gather_rows(array, np.asarray(rows, dtype=np.int64), dtype=array.dtype), None


@dataclass(frozen=True)
class ColumnVectors:
    """A dataset's own vectors, checked: float32 N x D (memory-mapped when the side file is
    float32), their identity (``column_identity``) and the side file whose bytes they are
    (None: a metadata column, converted or gathered rows)."""

    array: np.ndarray
    identity: str
    side_file: SideFile | None


def _identity_digest(shape: tuple[int, ...]) -> Any:
    digest = hashlib.sha256()
    digest.update(f"{shape[0]}x{shape[1]}:".encode())
    return digest


def locate_column(dataset: Dataset, spec: str) -> tuple[np.ndarray, SideFile | None]:
    """Where the vectors named by ``spec`` are (a metadata column, read; a side file, mapped),
    and the side file when its bytes are the vectors as they will be cached. Nothing is
    checked yet (``check_column``)."""
    name = column_name(spec)
    found = _from_metadata(dataset, name)
    if found is not None:
        return found, None
    side = _from_side_file(dataset, name)
    if side is not None:
        return side
    offered = vector_columns(dataset)
    hint = f"vector columns: {', '.join(offered)}" if offered else "it has no vector columns"
    raise ParallaxError(f"{dataset.spec} has no column {name!r} ({hint})")


def read_column(dataset: Dataset, spec: str) -> ColumnVectors:
    """The dataset's own vectors named by ``spec`` (``column:NAME``), checked and hashed in one
    pass, a block at a time (a memory-mapped side file is read once and never held whole).

    ``ParallaxError`` (one line naming the column and the first bad row) for anything that is
    not one finite, non-zero vector per item of the same length.
    """
    return check_column(dataset, spec, *locate_column(dataset, spec))


def check_column(
    dataset: Dataset, spec: str, array: np.ndarray, side_file: SideFile | None = None
) -> ColumnVectors:
    """``array`` (from ``locate_column``) checked and hashed in one pass: ``read_column``."""
    name = column_name(spec)
    # A float32 array is checked and hashed as it lies (views of the map, no copy); anything
    # else is converted to float32 block by block into memory, checked before and after.
    keep = array.dtype == np.float32
    out = array if keep else np.empty(array.shape, dtype=np.float32)
    digest = _identity_digest(array.shape)
    blocks = row_blocks(array) if keep and array.flags.c_contiguous else None
    if blocks is None:
        blocks = row_chunks(array, dtype=np.float32 if keep else np.float64)
    # A block's hash runs on a second thread while its checks run here (both release the
    # GIL and read the same pages): the pass costs about the slower of the two, not their sum.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="column-hash") as pool:
        for start, block in blocks:
            if keep:
                hashed = pool.submit(digest.update, block)
                try:
                    _check_block(dataset, name, start, block)
                finally:
                    hashed.result()  # before the view's pages are released
                continue
            _check_block(dataset, name, start, block)
            block32 = block.astype(np.float32)
            if not np.isfinite(block32).all():
                raise ParallaxError(f"column:{name}: values too large for float32")
            out[start : start + len(block32)] = block32
            digest.update(block32)
    identity = f"column:{column_name(spec)}@sha256:{digest.hexdigest()}"
    return ColumnVectors(out, identity, side_file)


def _check_block(dataset: Dataset, name: str, start: int, block: np.ndarray) -> None:
    """Every row of ``block`` (rows ``start``...) finite and not all zeros, or one line."""
    finite = np.isfinite(block)
    if not finite.all():
        row = start + int(np.flatnonzero(~finite.all(axis=1))[0])
        raise ParallaxError(f"column:{name} {_row_name(dataset, row)}: NaN or infinite value")
    del finite
    zero = ~np.any(block != 0, axis=1)
    if zero.any():
        row = start + int(np.flatnonzero(zero)[0])
        raise ParallaxError(
            f"column:{name} {_row_name(dataset, row)}: all zeros (a zero vector has no direction)"
        )


def read_column_vectors(dataset: Dataset, spec: str) -> np.ndarray:
    """The dataset's own vectors named by ``spec`` (``column:NAME``), checked, as float32 N x D
    (``read_column`` without the identity)."""
    return read_column(dataset, spec).array


def column_identity(spec: str, vectors: np.ndarray) -> str:
    """The "model identity" of a column: its name and a full content hash of its vectors
    (``read_column`` computes the same while it checks them)."""
    digest = _identity_digest(vectors.shape)
    for _, block in row_chunks(vectors):  # the same bytes, read a block at a time
        digest.update(block)
    return f"column:{column_name(spec)}@sha256:{digest.hexdigest()}"
