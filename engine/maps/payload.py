"""Binary map payloads for the browser: what the WebGL map component receives, point by point.

A map is sent as two flat little-endian buffers, row ``i`` of each being dataset row ``i`` (row
ids are implicit):

* positions: float32 ``x, y`` interleaved, already scaled to the component's [-1, 1] frame
  (8 bytes a point); keyed by the projection and the frame, so a rerun that only recolours or
  reselects never sends them again;
* colours: one uint8 code a point, an index into a palette of at most 256 colours (categories,
  or a numeric value quantised to ``LEVELS`` steps); ``MISSING_CODE`` marks missing values.

That is ``BYTES_PER_POINT`` = 9 bytes a point, against ~16 for plotly's base64 typed arrays and
~40 for JSON numbers. Selections come back from the browser as a row list or a bitmask
(``decode_rows``), whichever is smaller.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BYTES_PER_POINT = 9
LEVELS = 250  # numeric colour steps (codes 0..LEVELS-1)
MISSING_CODE = 255
MAX_PALETTE = 255  # codes 0..254 carry colours; 255 is "missing"
FRAME_MARGIN = 0.95  # the data fills 95% of [-1, 1]: points on the edge stay clickable


@dataclass(frozen=True)
class Frame:
    """The affine map ``(xy - centre) * scale`` from map coordinates to the [-1, 1] frame.

    Maps shown side by side share one frame, so linked zoom shows the same region of aligned maps.
    """

    cx: float
    cy: float
    scale: float

    def apply(self, xy: np.ndarray) -> np.ndarray:
        out = np.asarray(xy, dtype=np.float64) - (self.cx, self.cy)
        return (out * self.scale).astype(np.float32)

    def token(self) -> str:
        return f"{self.cx:.9g},{self.cy:.9g},{self.scale:.9g}"


def shared_frame(maps: Sequence[np.ndarray]) -> Frame:
    """One frame that fits every map (finite points only), centred on their joint bounding box."""
    lo = np.array([np.inf, np.inf])
    hi = -lo
    for xy in maps:
        a = np.asarray(xy, dtype=np.float64)
        a = a[np.isfinite(a).all(axis=1)]
        if len(a):
            lo = np.minimum(lo, a.min(axis=0))
            hi = np.maximum(hi, a.max(axis=0))
    if not np.isfinite(lo).all():
        return Frame(0.0, 0.0, 1.0)
    centre = (lo + hi) / 2
    half = float(max(hi[0] - lo[0], hi[1] - lo[1])) / 2
    return Frame(float(centre[0]), float(centre[1]), FRAME_MARGIN / half if half > 0 else 1.0)


def position_bytes(xy: np.ndarray, frame: Frame) -> bytes:
    """Float32 ``x, y`` pairs in the frame; non-finite points are parked far outside the view."""
    out = frame.apply(xy)
    out[~np.isfinite(out).all(axis=1)] = 1e6
    return np.ascontiguousarray(out, dtype="<f4").tobytes()


def category_codes(codes: np.ndarray) -> bytes:
    """uint8 codes from category indices (negative = missing); at most ``MAX_PALETTE`` colours."""
    c = np.asarray(codes, dtype=np.int64)
    if len(c) and int(c.max(initial=-1)) >= MAX_PALETTE:
        raise ValueError(f"at most {MAX_PALETTE} colour categories, got {int(c.max()) + 1}")
    return np.where(c < 0, MISSING_CODE, c).astype(np.uint8).tobytes()


def quantise(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> bytes:
    """uint8 codes ``0..LEVELS-1`` for numeric values between ``lo`` and ``hi`` (default: their
    finite range); NaN and infinities become ``MISSING_CODE``."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if lo is None or hi is None:
        finite = v[ok]
        lo = float(finite.min()) if len(finite) else 0.0
        hi = float(finite.max()) if len(finite) else 1.0
    span = hi - lo if hi > lo else 1.0
    q = np.clip(np.floor((v - lo) / span * LEVELS), 0, LEVELS - 1)
    return np.where(ok, q, MISSING_CODE).astype(np.uint8).tobytes()


def content_key(*parts: bytes | str) -> str:
    """A short content hash naming a payload (the browser keeps payloads by this key)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- selections
def encode_rows(rows: np.ndarray | Sequence[int]) -> bytes:
    """Sorted unique rows as little-endian uint32 (how a large selection goes to the browser)."""
    return np.unique(np.asarray(rows, dtype=np.int64)).astype("<u4").tobytes()


def decode_rows(payload: Mapping[str, Any] | None, n: int) -> np.ndarray:
    """Dataset rows from the component's ``selection`` state: ``{"rows": [..]}``,
    ``{"rows_b64": base64 uint32}`` or ``{"mask_b64": base64 bitmask, little bit order}``.
    Rows outside ``0..n-1`` are dropped; the result is sorted and unique (int64)."""
    if not isinstance(payload, Mapping):
        return np.zeros(0, np.int64)
    if payload.get("mask_b64") is not None:
        bits = np.frombuffer(base64.b64decode(str(payload["mask_b64"])), dtype=np.uint8)
        mask = np.unpackbits(bits, bitorder="little")[:n].astype(bool)
        rows = np.flatnonzero(mask)
    elif payload.get("rows_b64") is not None:
        raw = base64.b64decode(str(payload["rows_b64"]))
        rows = np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype="<u4").astype(np.int64)
    else:
        listed = payload.get("rows") or []
        rows = np.asarray([int(r) for r in listed if isinstance(r, int | float)], dtype=np.int64)
    rows = rows[(rows >= 0) & (rows < n)]
    return np.unique(rows).astype(np.int64)


# --------------------------------------------------------------------------- parts
# A map past a few hundred thousand points is sent in interleaved parts: part ``j`` of ``P``
# holds rows ``j, j + P, j + 2P, ...`` of a per-point buffer (positions or colour codes). Each
# part is an even subsample of the whole map, so the first part to arrive already draws its
# overall shape; row ids stay implicit (part ``j``'s ``k``-th point is row ``j + k * P``), so
# the parts together are still ``BYTES_PER_POINT`` bytes a point, with no id bytes added.
PART_POINTS = 500_000  # points in one part: a first picture after ~4.5 MB has arrived


def part_count(n: int, part_points: int = PART_POINTS) -> int:
    """How many parts a map of ``n`` points is sent in (1 up to ``part_points`` points)."""
    return max(1, -(-int(n) // max(1, part_points)))


def split_parts(values: np.ndarray, parts: int) -> list[bytes]:
    """The interleaved parts of a per-point array (N rows: float32 x, y or uint8 codes)."""
    a = np.asarray(values)
    return [np.ascontiguousarray(a[j::parts]).tobytes() for j in range(parts)]


def part_rows(part: int, parts: int, n: int) -> np.ndarray:
    """The dataset rows of part ``part`` of ``parts`` (what the browser computes from the part's
    index: no row ids are sent)."""
    return np.arange(part, n, parts, dtype=np.int64)


def join_parts(data: Sequence[bytes | None], n: int, dtype: str, width: int = 1) -> np.ndarray:
    """The inverse of ``split_parts`` (how the browser assembles the parts, in NumPy): an
    ``n x width`` array of ``dtype``; the rows of a part not yet arrived (None) stay NaN /
    ``MISSING_CODE``, never another row's point."""
    fill = np.nan if np.dtype(dtype).kind == "f" else MISSING_CODE
    out = np.full((n, width), fill, dtype=dtype)
    parts = len(data)
    for j, blob in enumerate(data):
        if blob is not None:
            out[j::parts] = np.frombuffer(blob, dtype=dtype).reshape(-1, width)
    return out if width > 1 else out[:, 0]
