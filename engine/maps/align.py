"""Align 2-D maps of the same items made by different models, so the eye can compare them.

Each map is centred, scaled to unit RMS radius and rotated (or reflected) onto a reference map by
an orthogonal Procrustes fit on the rows both maps have (``scipy.linalg.orthogonal_procrustes``).
The fit never changes a map's shape: only where it sits, its size and its orientation, so the
same items land in the same region of every map while each model's own arrangement stays intact.

``alignment_gap`` measures it: the mean distance of the same item across two maps, both put in
the reference's unit-RMS frame, before (centred and scaled only) and after the rotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_FIT_ROWS = 200_000  # a seeded subset fits the rotation as well as every row does


@dataclass(frozen=True)
class Alignment:
    """``aligned = (xy - centre) / rms @ rotation * ref_rms + ref_centre``."""

    centre: np.ndarray  # (2,)
    rms: float
    rotation: np.ndarray  # (2, 2), orthogonal
    ref_centre: np.ndarray
    ref_rms: float

    def apply(self, xy: np.ndarray) -> np.ndarray:
        a = (np.asarray(xy, dtype=np.float64) - self.centre) / self.rms
        return (a @ self.rotation * self.ref_rms + self.ref_centre).astype(np.float32)


def _normalise(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    centre = xy.mean(axis=0)
    rms = float(np.sqrt(((xy - centre) ** 2).sum(axis=1).mean())) or 1.0
    return (xy - centre) / rms, centre, rms


def _fit_rows(n: int, shared: np.ndarray | None, seed: int = 0) -> np.ndarray:
    rows = np.arange(n) if shared is None else np.asarray(shared, dtype=np.int64)
    if len(rows) > MAX_FIT_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_FIT_ROWS, replace=False))
    return rows


def fit_alignment(
    reference: np.ndarray, other: np.ndarray, shared_rows: np.ndarray | None = None
) -> Alignment:
    """The similarity transform (no shear) that best puts ``other`` onto ``reference``.

    ``shared_rows``: the rows both maps hold the same item in (default: all; both maps must then
    have the same length). Non-finite rows are left out of the fit.
    """
    from scipy.linalg import orthogonal_procrustes

    ref = np.asarray(reference, dtype=np.float64)
    oth = np.asarray(other, dtype=np.float64)
    if shared_rows is None and len(ref) != len(oth):
        raise ValueError(f"maps of {len(ref)} and {len(oth)} rows need shared_rows to align")
    rows = _fit_rows(len(ref), shared_rows)
    ok = np.isfinite(ref[rows]).all(axis=1) & np.isfinite(oth[rows]).all(axis=1)
    rows = rows[ok]
    if len(rows) < 3:
        raise ValueError("at least 3 shared rows are needed to align two maps")
    r, ref_centre, ref_rms = _normalise(ref[rows])
    o, centre, rms = _normalise(oth[rows])
    rotation, _ = orthogonal_procrustes(o, r)
    return Alignment(centre, rms, rotation, ref_centre, ref_rms)


def align_maps(maps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every map aligned onto the first (which is returned unchanged, as float32)."""
    if not maps:
        return []
    first = np.asarray(maps[0], dtype=np.float32)
    return [first, *(fit_alignment(first, m).apply(m) for m in maps[1:])]


def displacement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-item distance between two aligned maps, in units of ``a``'s RMS radius (float32)."""
    a64 = np.asarray(a, dtype=np.float64)
    _, _, rms = _normalise(a64[np.isfinite(a64).all(axis=1)])
    d = np.linalg.norm(a64 - np.asarray(b, dtype=np.float64), axis=1) / rms
    return d.astype(np.float32)


def alignment_gap(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Mean distance of the same item across the two maps (reference RMS radius = 1), with
    ``other`` only centred and scaled onto the reference (``before``) and also rotated
    (``after``)."""
    ref = np.asarray(reference, dtype=np.float64)
    r, _, _ = _normalise(ref)
    o, _, _ = _normalise(np.asarray(other, dtype=np.float64))
    aligned = fit_alignment(ref, other).apply(other)
    after = displacement(ref, aligned)
    return {
        "before": float(np.linalg.norm(r - o, axis=1).mean()),
        "after": float(after.mean()),
        "n": float(len(ref)),
    }
