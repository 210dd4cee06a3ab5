"""The parallax of one item: its nearest neighbours under every embedded model, side by side.

Each model's cached vectors (N x D, unit rows: every adapter L2-normalises) give the item's k
nearest other rows by cosine; the overlap between two models is how many of those k rows they
share, and ``shared_by_all`` the rows every model puts in its top k. Nothing is loaded but the
vectors; a memory-mapped file is read once per model (one matrix-vector product).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from engine.errors import ParallaxError

DEFAULT_K = 8
MAX_K = 100
_CHUNK = 262_144  # rows per block of the product: bounds the temporary memory on 1M x 768


@dataclass
class ModelNeighbours:
    """One model's answer: neighbour ``rows`` best first and their ``cosines``."""

    model: str
    rows: list[int]
    cosines: list[float]


@dataclass
class ItemNeighbours:
    """Every model's neighbours of ``row`` and how much they agree."""

    row: int
    k: int
    models: list[ModelNeighbours] = field(default_factory=list)
    overlap: dict[tuple[str, str], int] = field(default_factory=dict)  # shared rows per pair
    shared_by_all: list[int] = field(default_factory=list)

    def overlap_matrix(self) -> tuple[list[str], np.ndarray]:
        """Model names and a symmetric matrix of shared neighbours (k on the diagonal)."""
        names = [m.model for m in self.models]
        out = np.diag(np.full(len(names), self.k, dtype=np.int64))
        for (a, b), n in self.overlap.items():
            i, j = names.index(a), names.index(b)
            out[i, j] = out[j, i] = n
        return names, out

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "k": self.k,
            "models": [
                {"model": m.model, "rows": m.rows, "cosines": [round(c, 6) for c in m.cosines]}
                for m in self.models
            ],
            "overlap": [{"a": a, "b": b, "shared": n} for (a, b), n in self.overlap.items()],
            "shared_by_all": self.shared_by_all,
        }


def nearest_rows(vectors: np.ndarray, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows nearest to ``row`` by cosine (itself excluded), best first, with their
    cosines; ties keep the lower row first (reproducible)."""
    n = len(vectors)
    if not 0 <= row < n:
        raise ParallaxError(f"row {row} is outside the dataset (0..{n - 1})")
    query = np.asarray(vectors[row], dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    scores = np.empty(n, dtype=np.float32)
    for start in range(0, n, _CHUNK):
        block = np.asarray(vectors[start : start + _CHUNK], dtype=np.float32)
        norms = np.maximum(np.linalg.norm(block, axis=1), 1e-12)
        scores[start : start + len(block)] = (block @ query) / norms
    scores[row] = -np.inf
    k = max(0, min(int(k), n - 1))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.lexsort((part, -scores[part]))]
    return order.astype(np.int64), scores[order]


def item_neighbours(
    vectors_by_model: Mapping[str, np.ndarray], row: int, k: int = DEFAULT_K
) -> ItemNeighbours:
    """``row``'s ``k`` nearest rows under each model (same dataset, same row order), and the
    neighbours each pair of models shares."""
    if not vectors_by_model:
        raise ParallaxError("nothing is embedded for this dataset yet: embed it with a model")
    k = int(k)
    if not 1 <= k <= MAX_K:
        raise ParallaxError(f"k must be between 1 and {MAX_K}")
    sizes = {len(v) for v in vectors_by_model.values()}
    if len(sizes) != 1:
        raise ParallaxError("the models' vectors have different row counts: not one dataset")
    out = ItemNeighbours(row=int(row), k=min(k, next(iter(sizes)) - 1))
    sets: dict[str, set[int]] = {}
    for name, vectors in vectors_by_model.items():
        rows, cos = nearest_rows(vectors, int(row), k)
        out.models.append(ModelNeighbours(name, rows.tolist(), cos.astype(float).tolist()))
        sets[name] = set(rows.tolist())
    for a, b in combinations(sets, 2):
        out.overlap[(a, b)] = len(sets[a] & sets[b])
    common = set.intersection(*sets.values())
    out.shared_by_all = [r for r in out.models[0].rows if r in common]
    return out
