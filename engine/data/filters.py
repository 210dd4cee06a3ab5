"""Filter a dataset's rows by label and metadata: a filter spec in, a row mask out.

A spec is a list of clauses, all of which must hold (AND):

    {"column": "label", "op": "in", "values": ["cat", "dog"]}
    {"column": "width", "op": "range", "min": 32, "max": 128}      # either bound may be absent
    {"column": "text", "op": "contains", "text": "red"}            # case-insensitive

``column`` is ``label``, ``text``, ``id`` or a metadata column. The spec is plain JSON, so it
travels in a link and in a saved subset; every page and the CLI filter through ``row_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import ParallaxError

OPS = ("in", "range", "contains")
BUILT_IN = ("label", "text", "id")
MAX_CLAUSES = 32
MAX_VALUES = 1_000


@dataclass(frozen=True)
class Clause:
    column: str
    op: str
    values: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column, "op": self.op}
        if self.op == "in":
            out["values"] = list(self.values)
        elif self.op == "range":
            out.update({k: v for k, v in (("min", self.low), ("max", self.high)) if v is not None})
        else:
            out["text"] = self.text
        return out

    def describe(self) -> str:
        if self.op == "in":
            shown = ", ".join(self.values[:5]) + (" …" if len(self.values) > 5 else "")
            return f"{self.column} in {{{shown}}}"
        if self.op == "range":
            lo = "-∞" if self.low is None else f"{self.low:g}"
            hi = "∞" if self.high is None else f"{self.high:g}"
            return f"{lo} ≤ {self.column} ≤ {hi}"
        return f"{self.column} contains {self.text!r}"


def _number(value: Any, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParallaxError(f"filter: {what} must be a number, got {value!r}") from None
    if not np.isfinite(x):
        raise ParallaxError(f"filter: {what} must be finite")
    return x


def parse_clause(raw: Mapping[str, Any]) -> Clause:
    """One clause from its JSON form (one-line ``ParallaxError`` when malformed)."""
    if not isinstance(raw, Mapping):
        raise ParallaxError("filter: each clause is an object with column and op")
    column, op = str(raw.get("column", "")).strip(), str(raw.get("op", "")).strip()
    if not column:
        raise ParallaxError("filter: a clause names no column")
    if op not in OPS:
        raise ParallaxError(f"filter: unknown op {op!r} for {column} (one of {', '.join(OPS)})")
    if op == "in":
        values = raw.get("values")
        if not isinstance(values, list | tuple) or len(values) > MAX_VALUES:
            raise ParallaxError(f"filter: {column} in needs a list of at most {MAX_VALUES} values")
        return Clause(column, op, values=tuple(str(v) for v in values))
    if op == "range":
        low = _number(raw.get("min"), f"{column} min")
        high = _number(raw.get("max"), f"{column} max")
        if low is not None and high is not None and low > high:
            raise ParallaxError(f"filter: {column} min {low:g} is above max {high:g}")
        return Clause(column, op, low=low, high=high)
    return Clause(column, op, text=str(raw.get("text", "")))


def parse_filter(raw: Sequence[Mapping[str, Any]] | None) -> list[Clause]:
    """A whole filter spec (None or [] : no filter)."""
    if not raw:
        return []
    if not isinstance(raw, list | tuple) or len(raw) > MAX_CLAUSES:
        raise ParallaxError(f"filter: a list of at most {MAX_CLAUSES} clauses")
    return [parse_clause(c) for c in raw]


def filter_json(clauses: Sequence[Clause]) -> list[dict[str, Any]]:
    return [c.to_json() for c in clauses]


def _column(dataset: Any, name: str, meta: pd.DataFrame) -> pd.Series:
    if name == "label":
        return pd.Series(list(dataset.labels), dtype=object)
    if name == "id":
        return pd.Series([str(x) for x in dataset.ids], dtype=object)
    if name == "text":
        if dataset.texts is None:
            raise ParallaxError("filter: this dataset has no texts")
        return pd.Series(list(dataset.texts), dtype=object)
    if name not in meta.columns:
        known = ", ".join([*BUILT_IN, *map(str, meta.columns)][:12])
        raise ParallaxError(f"filter: no column {name!r} (columns: {known})")
    return meta[name].reset_index(drop=True)


def _clause_mask(values: pd.Series, clause: Clause) -> np.ndarray:
    if clause.op == "in":
        wanted = set(clause.values)
        return np.fromiter(
            (v is not None and not _missing(v) and str(v) in wanted for v in values),
            dtype=bool,
            count=len(values),
        )
    if clause.op == "range":
        nums = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        mask = ~np.isnan(nums)
        if clause.low is not None:
            mask &= nums >= clause.low
        if clause.high is not None:
            mask &= nums <= clause.high
        return mask
    needle = clause.text.casefold()
    return np.fromiter(
        (v is not None and not _missing(v) and needle in str(v).casefold() for v in values),
        dtype=bool,
        count=len(values),
    )


def _missing(v: Any) -> bool:
    return isinstance(v, float) and np.isnan(v)


def row_mask(dataset: Any, clauses: Sequence[Clause] | Sequence[Mapping[str, Any]]) -> np.ndarray:
    """A boolean mask over the dataset's rows: True where every clause holds (all True for no
    clause). Clauses may be given parsed or in their JSON form."""
    parsed = [c if isinstance(c, Clause) else parse_clause(c) for c in clauses]
    n = len(dataset)
    mask = np.ones(n, dtype=bool)
    meta = dataset.metadata() if any(c.column not in BUILT_IN for c in parsed) else pd.DataFrame()
    for clause in parsed:
        values = _column(dataset, clause.column, meta)
        if len(values) != n:
            raise ParallaxError(f"filter: column {clause.column} has {len(values)} rows, not {n}")
        mask &= _clause_mask(values, clause)
    return mask


def column_kinds(dataset: Any) -> dict[str, str]:
    """What each filterable column holds: ``"number"`` (a range) or ``"values"`` / ``"text"``;
    for building filter controls."""
    out = {"label": "values"}
    if dataset.texts is not None:
        out["text"] = "text"
    meta = dataset.metadata()
    for name in meta.columns:
        col = meta[name]
        if pd.api.types.is_bool_dtype(col):
            out[str(name)] = "values"
        elif pd.api.types.is_numeric_dtype(col):
            out[str(name)] = "number"
        elif col.nunique(dropna=True) <= 50:
            out[str(name)] = "values"
        else:
            out[str(name)] = "text"
    return out
