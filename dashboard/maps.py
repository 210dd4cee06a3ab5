"""The logic around the maps, as pure functions (no Streamlit): unit-testable.

Colourings (categories capped at ``MAX_CATEGORIES``, numeric scales), the selection table and its
CSV / Parquet export, agreement tables (text search is ``Workspace.search``'s). The maps are
drawn by ``dashboard.linked_maps`` (WebGL, every point); ``benchmarks/plotly_map.py`` keeps the
plotly figure the Map page used before, as the benchmark's baseline.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_CATEGORIES = 20  # more distinct values than this: the rest are grouped as "other"
OTHER = "other"
MISSING = "(none)"
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
    "#637939",
    "#8c6d31",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
)
OTHER_COLOUR = "#c7c7c7"


# --------------------------------------------------------------------------- colouring
@dataclass(frozen=True)
class Colouring:
    """How to colour N points: ``categorical`` (codes into ``categories``), ``numeric``
    (float values, NaN = missing) or ``none``."""

    kind: str
    title: str = ""
    codes: np.ndarray | None = None  # int32 [N], -1 = missing (categorical)
    categories: tuple[str, ...] = ()
    values: np.ndarray | None = None  # float32 [N] (numeric)
    colorscale: str = "Viridis"
    reverse: bool = False

    @staticmethod
    def none() -> Colouring:
        return Colouring("none")


# object columns whose values are all of one kind where equal values read alike (not floats:
# -0.0 == 0.0)
_ONE_KIND = frozenset({"string", "empty", "integer", "boolean", "bytes"})


def texts_follow_values(s: pd.Series) -> bool:
    """Whether values that compare equal also read the same (so a column can be counted by value
    and turned into text afterwards): not for mixed object columns, where True == 1 and
    2 == 2.0 hash alike but read "True" / "1" and "2" / "2.0", nor for floats."""
    if s.dtype == object:
        return pd.api.types.infer_dtype(s, skipna=True) in _ONE_KIND
    # integers, booleans and text; floats, dates and categories are made text first
    return (
        pd.api.types.is_integer_dtype(s)
        or pd.api.types.is_bool_dtype(s)
        or isinstance(s.dtype, pd.StringDtype)
    )


def categorical(values: Sequence[Any] | pd.Series | np.ndarray, title: str) -> Colouring:
    """Categorical colouring; the ``MAX_CATEGORIES - 1`` most frequent values keep their own
    colour and the rest become ``other``. Missing values (None/NaN) are ``(none)``.

    Vectorised (10M labels in well under a second): the values are factorised once, only the
    distinct values are turned into strings (values with the same text merge, as ``1`` and
    ``"1"`` do), and counts and codes come from array look-ups, never a Python loop a row."""
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if not texts_follow_values(s):
        s = s.astype("string")  # rows become text first (the slow way, mixed columns only)
    raw, uniques = pd.factorize(s.to_numpy(), use_na_sentinel=True)  # -1: missing
    texts = pd.Series(uniques, dtype=object).astype("string").fillna(MISSING)
    names = np.array([*texts.to_numpy(dtype=object), MISSING], dtype=object)
    merged, labels = pd.factorize(names)  # distinct texts, in order of first appearance
    codes = merged[raw]  # raw == -1 picks the MISSING entry appended last
    counts = np.bincount(codes, minlength=len(labels))
    seen = np.flatnonzero(counts)
    if len(seen) > MAX_CATEGORIES:
        # the most frequent keep their colour; a tie at the cut goes to the value seen first
        first = np.full(len(labels), len(codes), dtype=np.int64)
        np.minimum.at(first, codes, np.arange(len(codes)))
        order = seen[np.lexsort((first[seen], -counts[seen]))]
        keep = list(labels[order[: MAX_CATEGORIES - 1]])
        cats = [*sorted(keep, key=_natural_key), OTHER]
    else:
        cats = sorted(labels[seen], key=_natural_key)
    lookup = {c: i for i, c in enumerate(cats)}
    other = lookup.get(OTHER, -1)
    per_label = np.array([lookup.get(c, other) for c in labels], dtype=np.int32)
    return Colouring("categorical", title, codes=per_label[codes], categories=tuple(cats))


def numeric(values: Sequence[float] | np.ndarray, title: str, **kw: Any) -> Colouring:
    return Colouring("numeric", title, values=np.asarray(values, dtype=np.float32), **kw)


def colouring_for_column(series: pd.Series, title: str | None = None) -> Colouring:
    """Numeric columns with many distinct values get a colour scale, anything else categories."""
    title = title or str(series.name)
    if pd.api.types.is_bool_dtype(series):
        return categorical(series, title)
    if pd.api.types.is_numeric_dtype(series):
        distinct = series.nunique(dropna=True)
        if distinct > MAX_CATEGORIES or pd.api.types.is_float_dtype(series):
            return numeric(series.to_numpy(dtype=np.float64, na_value=np.nan), title)
    return categorical(series, title)


def _natural_key(value: str) -> tuple[int, float | str]:
    if value in (OTHER, MISSING):
        return (2, value)
    try:
        return (0, float(value))
    except ValueError:
        return (1, value.lower())


# --------------------------------------------------------------------------- tables and export
def selection_frame(
    rows: np.ndarray | Sequence[int],
    *,
    ids: Sequence[str],
    labels: Sequence[str | None],
    metadata: pd.DataFrame | None = None,
    coords: Mapping[str, np.ndarray] | None = None,
    texts: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """One row per selected item: row, id, label, text, metadata columns, and ``<stem>_x`` /
    ``<stem>_y`` per map (``coords`` is keyed by the column stem: the same names as the maps'
    Parquet export, ``Workspace.export_columns``)."""
    r = np.asarray(rows, dtype=np.int64)
    df = pd.DataFrame(
        {
            "row": r,
            "id": [ids[i] for i in r],
            "label": pd.array([labels[i] for i in r], dtype="string"),
        }
    )
    if texts is not None:
        df["text"] = pd.array([texts[i] for i in r], dtype="string")
    if metadata is not None and len(metadata.columns):
        meta = metadata.iloc[r].reset_index(drop=True)
        for col in meta.columns:
            name = str(col) if str(col) not in df.columns else f"meta_{col}"
            df[name] = meta[col].to_numpy()
    for model, xy in (coords or {}).items():
        xy = np.asarray(xy, dtype=np.float32)
        df[f"{model}_x"] = xy[r, 0]
        df[f"{model}_y"] = xy[r, 1]
    return df


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    out = df.copy()
    for col in out.columns:  # metadata may hold mixed objects: keep them readable as strings
        if out[col].dtype == object:
            out[col] = out[col].astype("string")
    out.to_parquet(buf, index=False)
    return buf.getvalue()


def agreement_frame(
    overlap: np.ndarray, ids: Sequence[str], labels: Sequence[str | None]
) -> pd.DataFrame:
    """Sortable table of per-point neighbourhood agreement, least agreement first."""
    ov = np.asarray(overlap, dtype=np.float32)
    df = pd.DataFrame(
        {
            "row": np.arange(len(ov), dtype=np.int64),
            "id": list(ids),
            "label": pd.array(list(labels), dtype="string"),
            "overlap": ov,
        }
    )
    return df.sort_values(["overlap", "row"], kind="stable").reset_index(drop=True)
