"""Shareable links: the view (dataset, models, colour, projection, small selection) as query
parameters, and back. Pure functions, no Streamlit: ``dashboard.state`` reads and writes
``st.query_params`` with them.

    ?ds=demo:digits&m=baseline:pixels&m=fake:meancolour/1&colour=label&proj=pca&sel=3-7_12

``sel`` lists dataset rows as sorted runs: ``a`` or ``a-b`` (inclusive), joined by ``_`` (all
URL-safe, nothing to escape). A selection whose encoding is longer than ``MAX_SELECTION_CHARS``
is left out of the link (the rest of the view still is), so a link stays a link.

Decoding never trusts the URL: unknown keys are ignored, strings are length-capped, a malformed
selection is dropped, and ranges cannot expand past ``MAX_ROWS`` rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

K_DATASET = "ds"
K_MODELS = "m"
K_COLOUR = "colour"
K_METHOD = "proj"
K_SELECTION = "sel"

METHODS = {"umap": "UMAP", "pca": "PCA"}
MAX_MODELS = 4
MAX_TEXT = 1_000  # characters of one spec / label / colour name
MAX_SELECTION_CHARS = 1_500
MAX_ROWS = 2_000_000  # never expand a selection past this many rows
_RUN = re.compile(r"^(\d{1,9})(?:-(\d{1,9}))?$")


@dataclass
class View:
    """What a link restores. ``None`` / empty = not part of the link."""

    dataset: str | None = None
    models: list[str] = field(default_factory=list)
    colour: str | None = None
    method: str | None = None  # "UMAP" or "PCA"
    selection: np.ndarray | None = None  # sorted unique int64 rows

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, View):
            return NotImplemented
        a, b = self.selection, other.selection
        same_sel = (a is None and b is None) or (
            a is not None and b is not None and np.array_equal(a, b)
        )
        return same_sel and (self.dataset, self.models, self.colour, self.method) == (
            other.dataset,
            other.models,
            other.colour,
            other.method,
        )


# -- selection ------------------------------------------------------------------------------
def encode_rows(rows: Iterable[int] | np.ndarray) -> str | None:
    """``[0, 1, 2, 5, 9, 10]`` -> ``"0-2_5_9-10"``; ``""`` for no rows; None if too long."""
    arr = np.unique(np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows))
    arr = arr.astype(np.int64)
    if arr.size == 0:
        return ""
    if arr[0] < 0:
        raise ValueError("rows must be non-negative")
    breaks = np.flatnonzero(np.diff(arr) != 1)
    starts = np.concatenate([[arr[0]], arr[breaks + 1]])
    ends = np.concatenate([arr[breaks], [arr[-1]]])
    if len(starts) * 2 > MAX_SELECTION_CHARS:  # cannot fit: skip building a huge string
        return None
    text = "_".join(f"{s}" if s == e else f"{s}-{e}" for s, e in zip(starts, ends, strict=True))
    return text if len(text) <= MAX_SELECTION_CHARS else None


def decode_rows(text: str, n: int | None = None) -> np.ndarray:
    """Inverse of ``encode_rows``; rows ``>= n`` (when given) are dropped. Raises ``ValueError``
    for a malformed string or one that expands past ``MAX_ROWS``."""
    text = (text or "").strip()
    if not text:
        return np.zeros(0, np.int64)
    if len(text) > MAX_SELECTION_CHARS:
        raise ValueError("selection too long")
    limit = MAX_ROWS if n is None else min(n, MAX_ROWS)
    parts: list[np.ndarray] = []
    total = 0
    for token in text.split("_"):
        m = _RUN.match(token)
        if m is None:
            raise ValueError(f"bad selection run {token[:20]!r}")
        start = int(m.group(1))
        stop = int(m.group(2)) if m.group(2) is not None else start
        if stop < start:
            raise ValueError(f"bad selection run {token!r}")
        stop = min(stop, limit - 1)
        if start > stop:
            continue
        total += stop - start + 1
        if total > MAX_ROWS:
            raise ValueError("selection too large")
        parts.append(np.arange(start, stop + 1, dtype=np.int64))
    if not parts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(parts))


# -- the whole view --------------------------------------------------------------------------
def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    if not value or len(value) > MAX_TEXT or "\x00" in value:
        return None
    return value


def _last(params: Mapping[str, Sequence[str] | str], key: str) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value[-1] if len(value) else None


def _all(params: Mapping[str, Sequence[str] | str], key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def encode_view(view: View) -> dict[str, str | list[str]]:
    """Query parameters for ``view`` (``st.query_params.from_dict`` takes this as is)."""
    out: dict[str, str | list[str]] = {}
    if view.dataset:
        out[K_DATASET] = view.dataset
    if view.models:
        models = list(dict.fromkeys(view.models))[:MAX_MODELS]
        out[K_MODELS] = models if len(models) > 1 else models[0]
    if view.colour:
        out[K_COLOUR] = view.colour
    if view.method:
        out[K_METHOD] = view.method.lower()
    if view.selection is not None and len(view.selection):
        encoded = encode_rows(view.selection)
        if encoded:
            out[K_SELECTION] = encoded
    return out


def decode_view(params: Mapping[str, Sequence[str] | str]) -> View:
    """The view a link describes; anything unusable is left out (never raises)."""
    view = View()
    view.dataset = _clean(_last(params, K_DATASET))
    models = [m for m in (_clean(x) for x in _all(params, K_MODELS)) if m]
    view.models = list(dict.fromkeys(models))[:MAX_MODELS]
    view.colour = _clean(_last(params, K_COLOUR))
    method = (_clean(_last(params, K_METHOD)) or "").lower()
    view.method = METHODS.get(method)
    sel = _last(params, K_SELECTION)
    if sel:
        try:
            view.selection = decode_rows(sel)
        except ValueError:
            view.selection = None
    return view
