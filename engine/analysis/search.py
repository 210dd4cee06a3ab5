"""Search an embedded dataset: the items nearest to a query vector.

Vectors are L2-normalised so the score is the cosine similarity. Below ``SearchParams.ivf_above``
items the search is exact (faiss flat inner product); above it an inverted-file index answers in
about a millisecond at a million items (BENCHMARKS.md row 6) with recall close to 1. Built indexes
are kept per vectors key (a finished cache entry never changes), a few at a time, so repeated
queries pay only the search.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ParallaxError
from engine.params import SEARCH, SearchParams

_MAX_INDEXES = 4


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class SearchIndex:
    """Exact or IVF search over one set of vectors (row ``i`` = item ``i``)."""

    kind: str  # "exact" or "ivf"
    n: int
    dim: int
    _index: Any

    @classmethod
    def build(cls, vectors: np.ndarray, params: SearchParams = SEARCH) -> SearchIndex:
        unit = normalise(vectors)
        n, dim = unit.shape
        if n > params.ivf_above:
            from engine.maps.knn import IVFIndex

            return cls("ivf", n, dim, IVFIndex.build(unit, nprobe=params.nprobe))
        import faiss

        flat = faiss.IndexFlatIP(dim)
        flat.add(unit)
        return cls("exact", n, dim, flat)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, cosine scores) of the ``k`` nearest items, best first, per query row.
        IVF may return fewer than ``k`` hits (-1 rows are dropped by the caller)."""
        q = normalise(query)
        if q.shape[1] != self.dim:
            raise ParallaxError(f"query has {q.shape[1]} dimensions, the vectors {self.dim}")
        k = max(1, min(int(k), self.n))
        if self.kind == "ivf":
            return self._index.search(q, k)
        sims, idx = self._index.search(q, k)
        return idx, sims


_lock = threading.Lock()
_indexes: OrderedDict[str, SearchIndex] = OrderedDict()


def index_for(key: str, load_vectors: Any, params: SearchParams = SEARCH) -> SearchIndex:
    """The index of the vectors cached under ``key`` (built once, kept for the next query).
    ``load_vectors()`` returns the array when the index must be built."""
    with _lock:
        hit = _indexes.get(key)
        if hit is not None:
            _indexes.move_to_end(key)
            return hit
    index = SearchIndex.build(load_vectors(), params)
    with _lock:
        _indexes[key] = index
        while len(_indexes) > _MAX_INDEXES:
            _indexes.popitem(last=False)
    return index
