"""``manifest:PATH``: a CSV / Parquet / JSON-lines table of images (paths or URLs) and/or texts.

Recognised columns (case-insensitive, first match wins): an image column, a text column, a label
column and an ``id`` column; every other column is kept as metadata with its own dtype.

Image paths are untrusted input: they are relative to the manifest's folder and must stay
inside it after resolving ``..`` and symlinks; anything else is skipped without being opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import settings
from engine.data.base import (
    ContentHasher,
    DatasetBase,
    SkippedItem,
    decode_budget,
    item_limit,
)
from engine.data.folder import is_within, verdict_cache_file
from engine.data.images import (
    ImageCheck,
    check_file_size,
    check_image_bytes,
    check_image_files,
    open_image_safely,
)
from engine.errors import CacheError, DatasetError, ItemError
from engine.store.atomic import atomic_write_bytes
from engine.store.cache import Cache
from engine.store.progress import ProgressCallback
from engine.store.space import SpaceBudget, touch

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

IMAGE_COLUMNS = ("image", "image_path", "path", "filepath", "file", "url", "image_url")
TEXT_COLUMNS = ("text", "caption", "sentence")
LABEL_COLUMNS = ("label", "class", "category")
ID_COLUMNS = ("id",)
MANIFEST_SUFFIXES = frozenset({".csv", ".parquet", ".jsonl", ".ndjson", ".json"})

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]|^[A-Za-z]:$")
# Kept as module names for callers and tests; the values come from engine.settings (environment).
DOWNLOAD_TIMEOUT_S = settings.DOWNLOAD_TIMEOUT_S  # connect, and each read
DOWNLOAD_DEADLINE_S = settings.DOWNLOAD_DEADLINE_S  # a whole download, enforced by a watchdog


# -- reading the table ------------------------------------------------------------------------
def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM) if it decodes, else Latin-1, which never fails."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def find_column(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` present in ``columns``, matched case-insensitively."""
    by_lower: dict[str, str] = {}
    for c in columns:
        # An exact lower-case name beats e.g. "Text" when both are present.
        if str(c).lower() not in by_lower or str(c) == str(c).lower():
            by_lower[str(c).lower()] = c
    for cand in candidates:
        if cand in by_lower:
            return by_lower[cand]
    return None


# No single CSV / JSONL cell may be longer than this while it is read (texts are cut to
# MAX_TEXT_CHARS afterwards; a few MB still load and are cut): a 1 GB cell is refused before
# it costs gigabytes.
MAX_CELL_CHARS = max(settings.MAX_TEXT_CHARS * 50, 8_000_000)


def _check_line_lengths(path: Path) -> None:
    """Refuse a physical line longer than any sane row before a text reader holds it whole
    (reads at most ``4 * MAX_CELL_CHARS`` bytes at a time)."""
    limit = 4 * MAX_CELL_CHARS  # bytes: a cell of MAX_CELL_CHARS characters in UTF-8, at worst
    with open(path, "rb") as f:
        while line := f.readline(limit + 1):
            if len(line) > limit:
                raise DatasetError(
                    f"manifest {path.name} has a line longer than {limit:,} bytes (a cell "
                    f"may hold at most {MAX_CELL_CHARS:,} characters)"
                )


def _scan_csv(path: Path, encoding: str) -> int:
    """Stream the file once through the csv module: refuse a cell longer than
    ``MAX_CELL_CHARS`` before pandas holds it (memory stays one row). Returns the row count."""
    import csv

    old = csv.field_size_limit()
    csv.field_size_limit(MAX_CELL_CHARS)
    try:
        with open(path, encoding=encoding, newline="") as f:
            return sum(1 for _ in csv.reader(f))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise DatasetError(
                f"manifest {path.name} has a cell longer than {MAX_CELL_CHARS:,} characters"
            ) from None
        raise DatasetError(f"cannot read manifest {path.name}: {exc}") from None
    finally:
        csv.field_size_limit(old)


CSV_CHUNK_ROWS = 50_000


def _read_csv(path: Path) -> pd.DataFrame:
    """The CSV read in chunks of rows straight from the file (no whole-file copy), refused in
    one line once the rows held pass ``PARALLAX_DECODE_BYTES``."""
    import pandas as pd

    _check_line_lengths(path)
    encoding = "utf-8-sig"
    try:
        rows = _scan_csv(path, encoding)
    except UnicodeDecodeError:
        encoding = "latin-1"
        rows = _scan_csv(path, encoding)
    if rows == 0:
        raise DatasetError(f"manifest {path.name} is empty")
    header = pd.read_csv(path, nrows=0, encoding=encoding).columns.tolist()
    # Key columns stay strings: an id like "007" or a file called "1.png" must not become a number.
    keys = [
        find_column(header, names)
        for names in (IMAGE_COLUMNS, TEXT_COLUMNS, LABEL_COLUMNS, ID_COLUMNS)
    ]
    dtype = {k: str for k in keys if k is not None}
    budget = settings.DECODE_BYTES
    chunks, used = [], 0
    reader = pd.read_csv(path, dtype=dtype, encoding=encoding, chunksize=CSV_CHUNK_ROWS)
    with reader:
        for chunk in reader:
            used += int(chunk.memory_usage(deep=True).sum())
            if used > budget:
                raise _budget_line(f"manifest {path.name}", used, budget)
            chunks.append(chunk)
    return pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]


def expanded_nbytes(array: Any) -> int:
    """Bytes ``array`` (a pyarrow Array or ChunkedArray) takes once every dictionary is
    expanded, computed from the dictionary's value lengths and the indices alone: a 213 kB
    Parquet whose one long value repeats for every row is measured, not materialised."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        return sum(expanded_nbytes(chunk) for chunk in array.chunks)
    t = array.type
    if pa.types.is_dictionary(t):
        values = array.dictionary
        if (
            pa.types.is_binary(values.type)
            or pa.types.is_string(values.type)
            or (pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type))
        ):
            lengths = pc.binary_length(values)
        else:  # fixed-width values (or nested): each row costs the average value
            per = values.nbytes / max(len(values), 1)
            return int(per * len(array)) + 8 * len(array)
        picked = pc.sum(pc.take(lengths, array.indices)).as_py() or 0
        return int(picked) + 8 * len(array)  # + offsets and validity, generously
    if pa.types.is_struct(t):
        return sum(expanded_nbytes(field) for field in array.flatten()) + len(array)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t):
        return expanded_nbytes(array.flatten()) + 8 * len(array)
    return int(array.nbytes)


def _byte_array_paths(parquet_schema: Any) -> list[str]:
    """Paths of every string / binary leaf at any depth (in lists and structs too): read as
    dictionaries, so a value repeated in a dictionary page is held once until measured."""
    return [
        parquet_schema.column(i).path
        for i in range(len(parquet_schema))
        if parquet_schema.column(i).physical_type == "BYTE_ARRAY"
    ]


def _budget_error(line: str) -> DatasetError:
    from engine.errors import BudgetError

    return BudgetError(line)


def _budget_line(
    what: str, nbytes: float, budget: int, setting: str = "PARALLAX_DECODE_BYTES"
) -> DatasetError:
    from engine.errors import BudgetError

    return BudgetError(
        f"{what} decodes to more than {budget / 1024**2:,.0f} MB ({nbytes / 1024**2:,.0f} MB "
        f"so far), over this deployment's budget for one table ({setting}): refused"
    )


def _cut_texts(column: Any) -> Any:
    """Text cells cut to MAX_TEXT_CHARS (dictionary columns in their dictionary)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = column.type
    if pa.types.is_dictionary(t) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    ):
        cut = pc.utf8_slice_codeunits(column.dictionary, 0, settings.MAX_TEXT_CHARS)
        return pa.DictionaryArray.from_arrays(column.indices, cut)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pc.utf8_slice_codeunits(column, 0, settings.MAX_TEXT_CHARS)
    return column


def _undict(t: Any) -> Any:
    """``t`` with every dictionary type replaced by its value type, at any depth."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _undict(t.value_type)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_undict(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_undict(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_undict(t.value_type)))
    return t


def _plain(column: Any) -> Any:
    """A column with its dictionaries expanded (after it was measured)."""
    target = _undict(column.type)
    return column if target == column.type else column.cast(target)


def read_parquet_capped(
    source: Any,
    budget: int | None = None,
    *,
    as_arrow: bool = False,
    limit: tuple[int, str] | None = None,
    budget_setting: str = "PARALLAX_DECODE_BYTES",
) -> Any:
    """A Parquet table read row group by row group, under a decoded-size budget.

    Before a row group is decoded, its row count (``limit``: the most rows and the setting
    that says so, default ``MAX_ITEMS``, for the whole file) and its
    uncompressed page bytes (what plain-encoded columns decode to) are checked from the footer;
    string and binary columns are then read as dictionaries, their text cells cut to
    ``MAX_TEXT_CHARS`` in the dictionary, and their expanded size computed from the value
    lengths (``expanded_nbytes``) before anything is expanded. Past ``budget`` bytes (default
    ``PARALLAX_DECODE_BYTES``) the table is refused in one line, with at most one row group's
    dictionaries held. Returns a DataFrame (a pyarrow Table with ``as_arrow``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    budget = settings.DECODE_BYTES if budget is None else budget
    label = Path(source).name if isinstance(source, str | Path) else getattr(source, "name", "")
    what = f"the table {label}".rstrip()
    pf = pq.ParquetFile(source)
    meta = pf.metadata
    most, setting = limit or (settings.MAX_ITEMS, "PARALLAX_MAX_ITEMS")
    if meta.num_rows > most:
        raise DatasetError(
            f"{what} has {meta.num_rows:,} rows, over the limit of {most:,} "
            f"(raise {setting} to allow more)"
        )
    schema = pf.schema_arrow
    paths = _byte_array_paths(pf.schema)
    if paths:
        pf = pq.ParquetFile(source, read_dictionary=paths)
    used = 0
    groups = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        pages = sum(group.column(c).total_uncompressed_size for c in range(group.num_columns))
        if used + pages > budget:  # plain pages decode to at least their uncompressed size
            raise _budget_line(what, used + pages, budget, budget_setting)
        table = pf.read_row_group(g)
        columns = [[_cut_texts(chunk) for chunk in col.chunks] for col in table.columns]
        used += sum(expanded_nbytes(chunk) for col in columns for chunk in col)
        if used > budget:
            raise _budget_line(what, used, budget, budget_setting)
        plain = [
            pa.chunked_array([_plain(chunk) for chunk in col]) if col else original
            for col, original in zip(columns, table.columns, strict=True)
        ]
        groups.append(pa.Table.from_arrays(plain, names=table.column_names))
    if groups:
        table = pa.concat_tables(groups, promote_options="default")
        table = table.replace_schema_metadata(schema.metadata)  # e.g. Hugging Face features
    else:
        table = schema.empty_table()
    return table if as_arrow else table.to_pandas()


def _json_lines(path: Path, skipped: list[SkippedItem]) -> list[dict]:
    records = []
    # Parsed objects take several times their JSON text: hold at most a quarter of the budget
    # in text, read line by line.
    budget = settings.DECODE_BYTES // 4
    used = 0
    with open(path, "rb") as f:
        number = 0
        while True:
            line = f.readline(MAX_CELL_CHARS + 1)
            if not line:
                break
            number += 1
            used += len(line)
            if used > budget:
                raise _budget_line(f"manifest {path.name}", used * 4, budget * 4)
            if len(line) > MAX_CELL_CHARS and not line.endswith(b"\n"):
                raise DatasetError(
                    f"manifest {path.name} line {number} is longer than {MAX_CELL_CHARS:,} bytes"
                )
            if not line.strip():
                continue
            try:
                record = json.loads(_decode(line))
            except ValueError:
                skipped.append(SkippedItem(f"{path.name} line {number}", "invalid JSON"))
                continue
            if not isinstance(record, dict):
                skipped.append(SkippedItem(f"{path.name} line {number}", "not a JSON object"))
                continue
            records.append(record)
    return records


def _read_json_records(path: Path, skipped: list[SkippedItem]) -> pd.DataFrame:
    import pandas as pd

    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):  # a plain JSON array of objects: one document, read whole
        size = path.stat().st_size
        if size > settings.DECODE_BYTES // 8:
            raise _budget_error(
                f"manifest {path.name} is a {size / 1024**2:,.0f} MB JSON array, over "
                f"{settings.DECODE_BYTES // 8 / 1024**2:,.0f} MB (PARALLAX_DECODE_BYTES / 8): "
                "write it as JSON lines, one object per line"
            )
        text = _decode(path.read_bytes())
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"cannot read manifest {path.name}: invalid JSON ({exc})") from exc
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise DatasetError(f"cannot read manifest {path.name}: expected a list of objects")
        return pd.DataFrame.from_records(records)
    return pd.DataFrame.from_records(_json_lines(path, skipped))


def read_table(path: Path, skipped: list[SkippedItem], *, arrow: bool = False) -> Any:
    """Read a manifest into a DataFrame (bad JSON lines are appended to ``skipped``); with
    ``arrow`` a Parquet manifest stays a pyarrow Table (its columns are used as arrays)."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"cannot read manifest {path.name}: {exc.strerror or exc}") from exc
    if size > settings.MAX_MANIFEST_BYTES:
        raise DatasetError(
            f"manifest {path.name} is {size / 1024**2:.0f} MB, over the limit of "
            f"{settings.MAX_MANIFEST_BYTES / 1024**2:.0f} MB (raise PARALLAX_MAX_MANIFEST_BYTES)"
        )
    if suffix in (".csv", ".jsonl", ".ndjson", ".json") and size > settings.DECODE_BYTES:
        raise _budget_error(
            f"manifest {path.name} is {size / 1024**2:,.0f} MB of text, over this deployment's "
            f"budget of {settings.DECODE_BYTES / 1024**2:,.0f} MB for one table "
            "(PARALLAX_DECODE_BYTES; Parquet is read by row group and may be larger)"
        )
    try:
        if suffix == ".csv":
            table = _read_csv(path)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            names = pq.read_schema(path).names  # the footer: which limit applies
            columnar = find_column(names, IMAGE_COLUMNS) is None
            budget, setting = decode_budget(columnar)
            table = read_parquet_capped(
                path, budget, as_arrow=arrow, limit=item_limit(columnar), budget_setting=setting
            )
        elif suffix in (".jsonl", ".ndjson", ".json"):
            table = _read_json_records(path, skipped)
        else:
            kinds = ", ".join(sorted(MANIFEST_SUFFIXES))
            raise DatasetError(
                f"unsupported manifest type {suffix!r} for {path.name} (use {kinds})"
            )
    except DatasetError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"manifest {path.name} is empty") from exc
    except MemoryError as exc:
        raise DatasetError(f"manifest {path.name} is too large to read in memory") from exc
    except Exception as exc:  # parser errors of three libraries: one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DatasetError(f"cannot read manifest {path.name}: {first}") from exc
    if _num_rows(table) == 0:
        raise DatasetError(f"manifest {path.name} has no rows (a header alone, or an empty file)")
    return table


def _num_rows(table: Any) -> int:
    """Rows of a DataFrame or a pyarrow Table."""
    rows = getattr(table, "num_rows", None)
    return int(rows) if rows is not None else len(table)


# -- cleaning values --------------------------------------------------------------------------
def _missing(value: Any) -> bool:
    import pandas as pd

    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, arrays, dicts: present
        return False


def _as_key(value: Any) -> str | None:
    """Ids and labels as strings: ``3.0`` (an int column with gaps) reads as ``"3"``."""
    import numpy as np

    if _missing(value):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        value = _decode(value)
    text = str(value).strip()
    return text or None


def clean_text(value: Any) -> str | None:
    """A usable text or ``None``: bytes decoded safely, ends stripped, length capped."""
    if _missing(value):
        return None
    text = _decode(value) if isinstance(value, bytes) else str(value)
    # Lone surrogates (a JSON "\\ud800" escape) are not text: every encoder downstream would fail.
    text = text.encode("utf-8", "replace").decode("utf-8") if _HAS_SURROGATE(text) else text
    text = text.replace("\x00", "").strip()
    return text[: settings.MAX_TEXT_CHARS] or None


_HAS_SURROGATE = re.compile(r"[\ud800-\udfff]").search


# -- cleaning whole columns ---------------------------------------------------------------------
# A large manifest is cleaned as Arrow arrays, not cell by cell: the rules are ``_as_key`` and
# ``clean_text`` exactly, for the types where Arrow computes the same strings (text, integers,
# integral floats); any other column (bytes, dates, mixed objects, lone surrogates) goes through
# the per-cell functions above, as before.

# Every character ``str.isspace()`` accepts: what ``str.strip()`` removes (a test checks it).
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_EXACT_INT = 2**53  # a float64 holds every integer up to here


def _arrow_column(table: Any, name: str) -> Any:
    """Column ``name`` of a pyarrow Table or a DataFrame as a ChunkedArray, or None when Arrow
    cannot hold its Python values (mixed types, lone surrogates)."""
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table.column(name)
    try:
        return pa.chunked_array([pa.array(table[name], from_pandas=True)])
    except (pa.ArrowException, TypeError, ValueError, UnicodeError, OverflowError):
        return None


def _cells(table: Any, name: str) -> list[Any]:
    """Column ``name`` as the Python values the per-cell rules take (a Parquet column through
    pandas, as the table was read before it stayed in Arrow)."""
    import pyarrow as pa

    if isinstance(table, pa.Table):
        return table.select([name]).to_pandas()[name].tolist()
    return table[name].tolist()


def _plain_strings(arr: Any) -> Any:
    """``arr`` as an Arrow (large) string array, or None when its type is not text."""
    import pyarrow as pa

    t = arr.type
    if pa.types.is_dictionary(t):
        return _plain_strings(arr.cast(t.value_type))
    if pa.types.is_null(t):
        return arr.cast(pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return arr
    if getattr(pa.types, "is_string_view", lambda _: False)(t):
        return arr.cast(pa.large_string())
    return None


def _blank_to_null(arr: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    blank = pc.equal(pc.binary_length(arr), 0)
    if not pc.any(blank).as_py():
        return arr
    return pc.if_else(blank, pa.scalar(None, arr.type), arr)


def _strip(arr: Any) -> Any:
    """``str.strip()`` of every cell; the column itself (no copy) when no cell starts or ends
    with whitespace, as in a clean table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    spaces = pa.array(list(PY_WHITESPACE))
    for end in (pc.utf8_slice_codeunits(arr, 0, 1), pc.utf8_slice_codeunits(arr, -1, 2**31 - 1)):
        if pc.any(pc.is_in(end, spaces)).as_py():
            return pc.utf8_trim(arr, characters=PY_WHITESPACE)
    return arr


def _integral(arr: Any) -> Any:
    """A float column as int64 when every present value is an integer ``_as_key`` writes
    without a fraction (``3.0`` -> ``"3"``), else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = arr.drop_null()
    if len(present) == 0:
        return arr.cast(pa.int64())
    if not pc.all(pc.is_finite(present)).as_py():
        return None  # NaN (a missing cell in pandas) or inf: the per-cell rule decides
    exact = pc.and_(pc.equal(pc.floor(present), present), pc.less_equal(pc.abs(present), 2**53))
    return arr.cast(pa.int64()) if pc.all(exact).as_py() else None


def key_column(table: Any, name: str) -> Any:
    """``_as_key`` of every cell of column ``name``: an Arrow string array (null for no key)
    computed column-wise where that is exact, else a list from the per-cell rule."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _arrow_column(table, name)
    try:
        if arr is not None:
            text = _plain_strings(arr)
            if text is not None:
                return _blank_to_null(_strip(text))
            t = arr.type
            if pa.types.is_integer(t):
                # Read through pandas, an integer column with gaps was floats: past 2**53 the
                # per-cell rule saw rounded values, so only that case stays per cell.
                ends = pc.min_max(arr)
                low, high = ends["min"].as_py() or 0, ends["max"].as_py() or 0
                if arr.null_count == 0 or max(-low, high) <= _EXACT_INT:
                    return arr.cast(pa.string())
            elif pa.types.is_floating(t):
                whole = _integral(arr)
                if whole is not None:
                    return whole.cast(pa.string())
    except (pa.ArrowException, NotImplementedError):
        pass
    return _arrow_or_list([_as_key(v) for v in _cells(table, name)])


def text_column(table: Any, name: str) -> Any:
    """``clean_text`` of every cell of column ``name`` (Arrow strings, null for no text), or a
    list from the per-cell rule for a column that is not text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _arrow_column(table, name)
    try:
        text = None if arr is None else _plain_strings(arr)
        if text is not None:
            # Each step copies the column only when some cell needs it.
            if pc.any(pc.match_substring(text, "\x00")).as_py():
                text = pc.replace_substring(text, "\x00", "")
            text = _strip(text)
            if (pc.max(pc.utf8_length(text)).as_py() or 0) > settings.MAX_TEXT_CHARS:
                text = pc.utf8_slice_codeunits(text, 0, settings.MAX_TEXT_CHARS)  # code points
            return _blank_to_null(text)
    except (pa.ArrowException, NotImplementedError):
        pass
    return _arrow_or_list([clean_text(v) for v in _cells(table, name)])


def _arrow_or_list(values: list[str | None]) -> Any:
    """Cleaned values as an Arrow string array; kept as a list when Arrow cannot hold them (a
    lone surrogate from a JSON escape): then that dataset is fingerprinted row by row."""
    import pyarrow as pa

    try:
        return pa.chunked_array([pa.array(values, type=pa.large_string())])
    except (pa.ArrowException, UnicodeError):
        return values


def _is_arrow(values: Any) -> bool:
    return values is not None and not isinstance(values, list)


def _valid_mask(values: Any, n: int) -> Any:
    """Which of ``n`` cells hold a value (a NumPy bool array)."""
    import numpy as np
    import pyarrow.compute as pc

    if values is None:
        return np.zeros(n, dtype=bool)
    if isinstance(values, list):
        return np.fromiter((v is not None for v in values), dtype=bool, count=n)
    return pc.is_valid(values).to_numpy(zero_copy_only=False)


def _take(values: Any, rows: Any, everything: bool) -> Any:
    """``values`` (Arrow or list) at table ``rows`` (sorted, NumPy)."""
    if values is None or everything:
        return values
    if isinstance(values, list):
        return [values[i] for i in rows]
    return values.take(rows)


def _encoded_field(values: Any) -> Any:
    """Each cell as ``ContentHasher.add`` encodes a string: ``S<bytes>:<utf-8>``, ``N;`` for
    none (an Arrow array, or one scalar for a column that is absent)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    big = pa.large_string()  # one string type for every part (the join wants them alike)
    if values is None:
        return pa.scalar("N;", big)
    size = pc.binary_length(values).cast(big)
    parts = (pa.scalar("S", big), size, pa.scalar(":", big), values.cast(big))
    joined = pc.binary_join_element_wise(*parts, pa.scalar("", big))
    return pc.fill_null(joined, pa.scalar("N;", big))


def _unique_keys(values: Any, n: int) -> bool:
    """Whether ``n`` cleaned keys are all present and distinct (usable as ids)."""
    import pyarrow.compute as pc

    if isinstance(values, list):
        return all(k is not None for k in values) and len(set(values)) == n
    return values.null_count == 0 and pc.count_distinct(values).as_py() == n


def _cell(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) else values[i].as_py()


def _as_list(values: Any) -> list[Any]:
    return values if isinstance(values, list) else values.to_pylist()


FINGERPRINT_ROWS = 1_000_000  # rows encoded at a time (a few tens of MB)


def hash_rows(h: ContentHasher, fields: list[Any], n: int) -> None:
    """Feed ``n`` rows of ``fields`` (Arrow string arrays or None, each of ``n`` cells) into
    ``h`` exactly as ``h.add_row(*row)`` would, a block of rows at a time, with no Python per
    row: the rows are encoded by Arrow and their bytes hashed as they lie in memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for start in range(0, n, FINGERPRINT_ROWS):
        stop = min(n, start + FINGERPRINT_ROWS)
        parts = [
            _encoded_field(None if f is None else f.slice(start, stop - start)) for f in fields
        ]
        big = pa.large_string()
        rows = pc.binary_join_element_wise(*parts, pa.scalar("|", big), pa.scalar("", big))
        if isinstance(rows, pa.Scalar):  # every field absent: cannot happen (ids are a column)
            raise ValueError("no column to fingerprint")
        chunks = rows.chunks if isinstance(rows, pa.ChunkedArray) else [rows]
        for chunk in chunks:
            if len(chunk) == 0:
                continue
            large = pa.types.is_large_string(chunk.type)
            _, offsets, data = chunk.buffers()
            at = np.frombuffer(offsets, dtype=np.int64 if large else np.int32)
            lo, hi = int(at[chunk.offset]), int(at[chunk.offset + len(chunk)])
            h.add_encoded(memoryview(data)[lo:hi])


# -- image references -------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageRef:
    """Where a row's image comes from; exactly one of the fields is set."""

    path: Path | None = None  # resolved, already checked to lie inside ``root``
    root: Path | None = None  # the folder ``path`` must stay in (re-checked at read time)
    url: str | None = None
    data: bytes | None = None  # inline bytes (Parquet image structs)
    error: str | None = None


def resolve_image_ref(value: Any, base: Path) -> ImageRef | None:
    """Interpret one image cell; ``None`` if the cell is empty. Never touches a file outside
    ``base`` (the resolved manifest folder)."""
    if _missing(value):
        return None
    if isinstance(value, dict):  # Hugging Face style {"bytes": ..., "path": ...}
        if isinstance(value.get("bytes"), bytes | bytearray) and value["bytes"]:
            return ImageRef(data=bytes(value["bytes"]))
        value = value.get("path")
        if _missing(value):
            return None
    if isinstance(value, bytes | bytearray):
        return ImageRef(data=bytes(value))
    text = str(value).strip()
    if not text:
        return None
    scheme = _SCHEME.match(text)
    if scheme and not _DRIVE.match(text):
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            return ImageRef(url=text)
        if "://" in text or name in ("data", "file", "javascript"):
            return ImageRef(error=f"unsupported URL scheme {name!r} (only http and https)")
    relative = text.replace("\\", "/")  # manifests written on Windows
    if relative.startswith("/") or _DRIVE.match(relative):
        return ImageRef(error="absolute path not allowed (paths are relative to the manifest)")
    try:
        resolved = (base / relative).resolve()
    except (OSError, ValueError, RuntimeError):
        return ImageRef(error="invalid path")
    if not is_within(resolved, base):
        return ImageRef(error="path points outside the manifest's folder")
    if not resolved.is_file():
        return ImageRef(error="file not found")
    return ImageRef(path=resolved, root=base)


# -- downloads --------------------------------------------------------------------------------
class Unreachable(ItemError):
    """The server could not be reached at all (as opposed to answering with an error)."""


class BlockedAddress(ItemError):
    """The URL's host resolves to an address this deployment does not fetch from."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def blocked_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` is not a public internet address (``None`` when it is one).

    IPv6 forms that carry an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64) are judged by the
    address they carry, so they cannot smuggle a private target past the check.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return blocked_reason(inner)
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


def resolve_public(host: str, port: int) -> list[tuple]:
    """``getaddrinfo`` for ``host``, refusing it if *any* address is not public (unless
    ``PARALLAX_ALLOW_PRIVATE_URLS`` is set). Raises ``Unreachable`` / ``BlockedAddress``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise Unreachable(f"could not download URL: cannot resolve {host} ({why})") from exc
    if not settings.allow_private_urls():
        for *_, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            why = blocked_reason(ip)
            if why is not None:
                raise BlockedAddress(
                    f"URL refused: {host} is a {why} address ({ip}); set "
                    "PARALLAX_ALLOW_PRIVATE_URLS=1 to allow local and private hosts"
                )
    return infos


def _connect_checked(address: tuple[str, int], timeout: float | None = None, source=None):
    """Stands in for ``socket.create_connection``: resolves once, checks every address, then
    connects to the checked address itself (a second DNS answer cannot swap it: no rebinding)."""
    host, port = address
    last: OSError | None = None
    for family, socktype, proto, _, sockaddr in resolve_public(host, port):
        sock = socket.socket(family, socktype, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source:
                sock.bind(source)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    raise last or OSError(f"no address for {host}")


class _Watchdog:
    """A hard deadline for one whole download (connect, headers and body): when it passes,
    every socket the download opened is shut down, which wakes a read blocked on a server that
    trickles bytes forever. Sockets are watched from the moment they connect, because urllib
    detaches the socket from its connection once the headers are read."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def check(self) -> None:
        if self.expired:  # a redirect after the deadline: never even connect
            raise ItemError("could not download URL: took too long")

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_RDWR)


class _GuardedHandlerMixin:
    """Every connection (the first and each redirect's) is watched by the watchdog from the
    moment it connects and, when the request goes straight to the server, connects only to
    checked addresses."""

    watchdog: _Watchdog

    def do_open(self, http_class, req, **http_conn_args):  # type: ignore[override]
        target = urllib.parse.urlsplit(req.full_url).hostname or ""
        direct = (urllib.parse.urlsplit("//" + req.host).hostname or "") == target
        if not direct:  # through an operator-configured proxy: check the target's name at least
            resolve_public(target, 443)
        watchdog = self.watchdog

        def make(host, **kwargs):
            watchdog.check()
            conn = http_class(host, **kwargs)
            if direct:
                conn._create_connection = _connect_checked
            connect = conn.connect

            def connect_watched() -> None:
                connect()
                watchdog.watch(conn.sock)

            conn.connect = connect_watched
            return conn

        return super().do_open(make, req, **http_conn_args)  # type: ignore[misc]


class _GuardedHTTPHandler(_GuardedHandlerMixin, urllib.request.HTTPHandler):
    pass


class _GuardedHTTPSHandler(_GuardedHandlerMixin, urllib.request.HTTPSHandler):
    pass


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): never to ftp:// or file://."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.URLError("redirect to a non-HTTP URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    http_handler, https_handler = _GuardedHTTPHandler(), _GuardedHTTPSHandler()
    http_handler.watchdog = https_handler.watchdog = watchdog
    # build_opener replaces its default HTTP(S) handlers by these subclasses.
    return urllib.request.build_opener(http_handler, https_handler, _HttpOnlyRedirects)


def _blocked_cause(exc: BaseException) -> BlockedAddress | None:
    """The ``BlockedAddress`` raised inside urllib (it wraps connect errors in URLError)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, BlockedAddress):
            return exc
        reason = getattr(exc, "reason", None)  # URLError.reason may be a plain string
        exc = reason if isinstance(reason, BaseException) else (exc.__cause__ or exc.__context__)
        seen += 1
    return None


def download_url(
    url: str, folder: Path, timeout_s: float | None = None, budget: SpaceBudget | None = None
) -> Path:
    """Fetch ``url`` (http/https) into ``folder/<sha256(url)>`` once; later calls reuse it.

    ``folder`` is one entry of the ``downloads`` namespace; ``budget`` (its quota) is charged
    before a new file is stored. Raises ``ItemError("could not download URL: ...")`` quickly
    when offline, refuses hosts that resolve to loopback / private / link-local addresses
    unless ``PARALLAX_ALLOW_PRIVATE_URLS`` is set (also after a redirect), refuses bodies over
    ``settings.MAX_IMAGE_FILE_BYTES`` without reading past the limit, and gives up after
    ``DOWNLOAD_DEADLINE_S`` in total (connect, headers and body) however slowly the server
    sends; ``QuotaError`` when the downloads quota is full of entries in use.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ItemError("unsupported URL scheme (only http and https)")
    dest = folder / hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
    if dest.is_file() and dest.stat().st_size > 0:
        touch(folder)  # the entry (this manifest's downloads) was used
        return dest
    limit = settings.MAX_IMAGE_FILE_BYTES
    timeout = DOWNLOAD_TIMEOUT_S if timeout_s is None else timeout_s
    watchdog = _Watchdog(DOWNLOAD_DEADLINE_S)
    too_slow = f"could not download URL: took longer than {DOWNLOAD_DEADLINE_S:g} s"
    request = urllib.request.Request(url, headers={"User-Agent": "parallax"})
    try:
        with _opener(watchdog).open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit():
                check_file_size(int(declared))
            chunks, size = [], 0
            while chunk := response.read1(256 * 1024):  # read1: returns what has arrived
                size += len(chunk)
                if size > limit:
                    check_file_size(size)
                if watchdog.expired:
                    raise ItemError(too_slow)
                chunks.append(chunk)
            if watchdog.expired:  # the watchdog's shutdown can look like a clean end of body
                raise ItemError(too_slow)
    except ItemError:
        raise
    except urllib.error.HTTPError as exc:
        raise ItemError(f"could not download URL: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        blocked = _blocked_cause(exc)
        if blocked is not None:
            raise BlockedAddress(str(blocked)) from exc
        if watchdog.expired:
            raise ItemError(too_slow) from exc
        if isinstance(exc, ValueError):
            raise ItemError(f"could not download URL: {exc}") from exc
        if isinstance(exc, urllib.error.URLError):
            reason = exc.reason
            if isinstance(reason, Unreachable):
                raise Unreachable(str(reason)) from exc
            raise Unreachable(f"could not download URL: {reason}") from exc
        raise Unreachable(f"could not download URL: {exc}") from exc
    finally:
        watchdog.cancel()
    data = b"".join(chunks)
    check_file_size(len(data))
    if budget is not None:
        budget.charge(len(data), f"downloading {parts.netloc}{parts.path[:60]}")
    try:  # atomic: a reader never sees half a file under the final name
        atomic_write_bytes(dest, data)
    except CacheError as exc:
        cause = exc.__cause__
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
        raise ItemError(f"could not store download: {why}") from exc
    return dest


# -- the dataset ------------------------------------------------------------------------------
class ManifestDataset(DatasetBase):
    """Rows of a manifest that have a usable image or a text (or both).

    Ids, labels and texts are held as Arrow string arrays and become the protocol's Python
    lists only when first asked for (``ids``, ``labels``, ``texts``): opening, fingerprinting
    and embedding a dataset's own vectors (``column:NAME``) of a 10M-row manifest never builds
    a Python object per row. Image manifests still resolve and check each image (per row)."""

    def __init__(
        self,
        path: Path,
        *,
        spec: str | None = None,
        name: str | None = None,
        cache_root: Path,
        progress: ProgressCallback | None = None,
        skipped: list[SkippedItem] | None = None,
        table: pd.DataFrame | None = None,
    ) -> None:
        """``table`` given: rows already read by another source (``hfds:``), whose image paths
        are relative to the folder ``path``; otherwise ``path`` is the manifest file."""
        import numpy as np
        import pyarrow as pa

        path = Path(path).expanduser()
        if not path.exists():
            raise DatasetError(f"manifest not found: {path}")
        if table is None and not path.is_file():
            raise DatasetError(f"not a manifest file: {path}")
        self.path = path.resolve()
        self.base = self.path if table is not None else self.path.parent
        self.spec = spec or f"manifest:{path}"
        self.name = name or self.path.stem
        self.skipped = list(skipped or [])

        source: Any = (
            table if table is not None else read_table(self.path, self.skipped, arrow=True)
        )
        if isinstance(source, pa.Table):
            # A pandas index written into the Parquet file was never a column of the table.
            pandas_meta = source.schema.pandas_metadata or {}
            index = {c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)}
            columns = [c for c in source.column_names if c not in index]
        else:
            columns = [str(c) for c in source.columns]
            source.columns = columns
        image_col = find_column(columns, IMAGE_COLUMNS)
        text_col = find_column(columns, TEXT_COLUMNS)
        label_col = find_column(columns, LABEL_COLUMNS)
        id_col = find_column(columns, ID_COLUMNS)
        n = _num_rows(source)
        most, setting = item_limit(columnar=image_col is None)
        if n > most:
            raise DatasetError(
                f"{self.path.name} has {n:,} rows, over the limit of {most:,} "
                f"(raise {setting} to allow more)"
            )
        if image_col is None and text_col is None:
            raise DatasetError(
                f"{self.path.name} has no image column ({', '.join(IMAGE_COLUMNS)}) and no "
                f"text column ({', '.join(TEXT_COLUMNS)}); it has: {', '.join(columns[:12])}"
            )

        # Each key column cleaned whole (``key_column``, ``text_column``): n cells each.
        row_ids = key_column(source, id_col) if id_col is not None else None
        # Whether the ids are usable (all present, all distinct) takes a hash of every key: it
        # runs on a second thread (Arrow releases the GIL) while the rest is cleaned and the
        # items fingerprinted as if the ids were used (the common case), again if not.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest-ids") as pool:
            distinct = pool.submit(_unique_keys, row_ids, n) if row_ids is not None else None
            labels = key_column(source, label_col) if label_col else None
            texts = text_column(source, text_col) if text_col else None
            refs: list[ImageRef | None] = (
                [resolve_image_ref(v, self.base) for v in _cells(source, image_col)]
                if image_col
                else []
            )
            checks = self._check_images(refs, cache_root, progress) if image_col else []
            image_ok = (
                np.fromiter((c is not None and c.ok for c in checks), dtype=bool, count=n)
                if image_col
                else np.zeros(n, dtype=bool)
            )
            keep_mask = image_ok | _valid_mask(texts, n)
            everything = bool(keep_mask.all())
            keep = np.flatnonzero(keep_mask)
            self._n = len(keep)
            self.table_rows = n  # rows of the table, before unusable ones were skipped
            # Table row of each item (side files are indexed by table row): sorted, unique.
            self.source_rows: range | np.ndarray = range(n) if everything else keep
            self._id_values = _take(row_ids, keep, everything)  # None: the row numbers
            self._label_values = _take(labels, keep, everything)
            self._text_values = _take(texts, keep, everything)
            self._has_text = text_col is not None
            self._lists: dict[str, list[Any]] = {}  # the protocol's lists, made when asked

            self.image_errors: dict[int, str] = {}  # kept rows (text only) whose image failed
            self._refs: list[ImageRef | None] | None = None
            self._digests: list[str | None] | None = None
            if image_col:
                self._refs = [refs[i] if image_ok[i] else None for i in keep.tolist()]
                self._digests = [
                    checks[i].sha256 if image_ok[i] and checks[i] else None  # type: ignore[union-attr]
                    for i in keep.tolist()
                ]
                for j in np.flatnonzero(~image_ok[keep]).tolist():
                    i = int(keep[j])
                    ref, check = refs[i], checks[i]
                    why = "no image" if ref is None else (ref.error or (check and check.error))
                    self.image_errors[j] = str(why or "unusable image")
            self.has_images = self._digests is not None and any(
                d is not None for d in self._digests
            )
            self._fingerprint = self._content_hash() if len(keep) else ""
            id_col_used = distinct is not None and bool(distinct.result())
        if row_ids is not None and not id_col_used:
            # Not a usable id: the row number, and the column stays metadata.
            self._id_values = None
            self._fingerprint = self._content_hash() if len(keep) else ""

        for i in np.flatnonzero(~keep_mask).tolist():
            ref, check = (refs[i], checks[i]) if image_col else (None, None)
            if ref is None:
                why = "no image and no text" if text_col else "no image"
            else:
                why = ref.error or (check.error if check else None) or "unusable image"
            where = f"row {i}" + (f" ({_cell(row_ids, i)})" if id_col_used else "")
            self.skipped.append(SkippedItem(where, why))
        if len(keep) == 0:
            detail = f" (e.g. {self.skipped[-1].source}: {self.skipped[-1].reason})"
            raise DatasetError(
                f"no usable rows in {self.path.name}" + (detail if self.skipped else "")
            )

        used = {c for c in (image_col, text_col, label_col) if c}
        if id_col_used and id_col:
            used.add(id_col)
        others = [c for c in columns if c not in used]
        self._meta: pd.DataFrame | None = None
        self._meta_table: Any = None
        if isinstance(source, pa.Table):
            # Converted when first asked for, the whole table then its rows (as before).
            self._meta_table = source.select(others)
        else:
            self._meta = source.iloc[keep][others]
        # Arrow's allocator keeps what the cleaning freed (a 10M-row table: ~0.9 GB of hash
        # tables and copies) for reuse; hand it back before the vectors and the map need it.
        pa.default_memory_pool().release_unused()

    # -- the protocol's columns, as Python lists when asked for ---------------------------------
    def _list(self, name: str, make: Callable[[], list[Any]]) -> list[Any]:
        if name not in self._lists:
            self._lists[name] = make()
        return self._lists[name]

    @property
    def ids(self) -> list[str]:  # type: ignore[override]
        values = self._id_values
        if values is None:
            return self._list("ids", lambda: [str(i) for i in self.source_rows])
        return self._list("ids", lambda: _as_list(values))

    @ids.setter
    def ids(self, value: list[str]) -> None:
        self._lists["ids"] = value

    @property
    def labels(self) -> list[str | None]:  # type: ignore[override]
        values = self._label_values
        return self._list(
            "labels", lambda: [None] * self._n if values is None else _as_list(values)
        )

    @labels.setter
    def labels(self, value: list[str | None]) -> None:
        self._lists["labels"] = value

    @property
    def texts(self) -> list[str | None] | None:  # type: ignore[override]
        if not self._has_text and "texts" not in self._lists:
            return None
        return self._list("texts", lambda: _as_list(self._text_values))

    @texts.setter
    def texts(self, value: list[str | None] | None) -> None:
        self._lists["texts"] = value  # type: ignore[assignment]
        self._has_text = value is not None

    def __len__(self) -> int:
        return self._n

    def held_nbytes(self) -> int:
        """Bytes held for the columns (Arrow buffers, lists made so far, the metadata)."""
        import numpy as np

        total = sum(
            int(v.nbytes)
            for v in (self._id_values, self._label_values, self._text_values, self._meta_table)
            if v is not None and not isinstance(v, list)
        )
        for values in self._lists.values():
            total += sum(56 + len(v) for v in values or () if isinstance(v, str)) + 8 * len(values)
        if isinstance(self.source_rows, np.ndarray):
            total += int(self.source_rows.nbytes)
        if self._meta is not None:
            total += int(self._meta.memory_usage(deep=True).sum())
        return total

    def _content_hash(self) -> str:
        """``manifest-v1``: per item its id, label, text and image digest, as
        ``ContentHasher.add_row`` lays them out (the same value row by row or column-wise)."""
        import numpy as np
        import pyarrow as pa

        h = ContentHasher("manifest-v1")
        columns = (self._id_values, self._label_values, self._text_values)
        if any(isinstance(c, list) for c in columns):  # a value Arrow cannot hold: row by row
            for row in zip(
                self.ids,
                self.labels,
                self.texts or [None] * self._n,
                self._digests or [None] * self._n,
                strict=True,
            ):
                h.add_row(*row)
            return h.hexdigest()
        ids = self._id_values
        if ids is None:
            ids = pa.chunked_array([pa.array(np.asarray(self.source_rows, dtype=np.int64))])
            ids = ids.cast(pa.string())
        digests = None
        if self._digests is not None and self.has_images:
            digests = pa.chunked_array([pa.array(self._digests, type=pa.string())])
        hash_rows(h, [ids, self._label_values, self._text_values, digests], self._n)
        return h.hexdigest()

    def _check_images(
        self,
        refs: list[ImageRef | None],
        cache_root: Path,
        progress: ProgressCallback | None,
    ) -> list[ImageCheck | None]:
        """Download URLs, then fully decode and digest every distinct image once."""
        urls = sorted({r.url for r in refs if r is not None and r.url})
        downloads: dict[str, Path | str] = {}
        if urls:
            # This manifest's downloads are one entry of the downloads namespace, held (leased)
            # while the dataset is open: neither prune nor the quota removes them under it.
            cache = Cache(cache_root)
            group = hashlib.sha256(str(self.path).encode("utf-8", "surrogatepass")).hexdigest()
            cache.lease("downloads", group[:32]).bind(self)
            fetch = self._fetch(
                cache.path("downloads", group[:32]),
                cache.budget(
                    "downloads", settings.QUOTA_DOWNLOADS, setting="PARALLAX_QUOTA_DOWNLOADS"
                ),
            )
            with ThreadPoolExecutor(max_workers=4, thread_name_prefix="download") as pool:
                for url, got in zip(urls, pool.map(fetch, urls), strict=True):
                    downloads[url] = got
        for i, r in enumerate(refs):  # swap each URL for its downloaded file (or its error)
            if r is not None and r.url:
                got = downloads[r.url]
                refs[i] = (
                    ImageRef(path=got, root=got.parent)
                    if isinstance(got, Path)
                    else ImageRef(error=got)
                )

        paths = sorted({r.path for r in refs if r is not None and r.path is not None})
        verdicts = check_image_files(
            paths, cache_file=verdict_cache_file(cache_root, self.path), progress=progress
        )
        by_path = dict(zip(paths, verdicts, strict=True))
        out: list[ImageCheck | None] = []
        for r in refs:
            if r is None:
                out.append(None)
            elif r.path is not None:
                out.append(by_path[r.path])
            elif r.data is not None:
                out.append(check_image_bytes(r.data, name="inline image"))
            else:
                out.append(ImageCheck(None, error=r.error))
        return out

    @staticmethod
    def _fetch(downloads: Path, budget: SpaceBudget) -> Callable[[str], Path | str]:
        # Once a host proved unreachable (offline, refused), its other URLs fail at once
        # instead of each waiting for its own timeout.
        dead_hosts: dict[str, str] = {}

        def fetch(url: str) -> Path | str:
            host = urllib.parse.urlsplit(url).netloc.lower()
            if host in dead_hosts:
                return dead_hosts[host]
            try:
                return download_url(url, downloads, budget=budget)
            except (Unreachable, BlockedAddress) as exc:
                dead_hosts[host] = str(exc)
                return str(exc)
            except ItemError as exc:
                return str(exc)

        return fetch

    def load_image(self, index: int) -> Image.Image:
        self._check_index(index)
        if index in self.image_errors:
            raise ItemError(self.image_errors[index])
        ref = self._refs[index] if self._refs is not None else None
        if ref is None:
            raise ItemError("no image")
        if ref.data is not None:
            return open_image_safely(ref.data, name=self.ids[index])
        assert ref.path is not None and ref.root is not None
        # Re-check at read time: a file could have been swapped for an escaping symlink.
        if not is_within(ref.path.resolve(), ref.root):
            raise ItemError("path points outside the manifest's folder")
        return open_image_safely(ref.path, name=self.ids[index])

    def _metadata_frame(self) -> pd.DataFrame:
        if self._meta is None:
            frame = self._meta_table.to_pandas()
            if not isinstance(self.source_rows, range):
                frame = frame.iloc[self.source_rows]
            self._meta, self._meta_table = frame, None
        return self._meta

    def fingerprint(self) -> str:
        return self._fingerprint
