"""Nearest neighbours over L2-normalised vectors (cosine similarity = inner product).

faiss is used because it does the two jobs this project has with one well-kept library: exact
k-NN graphs for maps and metrics (BLAS matrix products with a fused top-k, no N x N matrix in
memory), and an inverted-file index for 1M-vector search where brute force is too slow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def exact_knn(
    vectors: np.ndarray, k: int, queries: np.ndarray | None = None, exclude_self: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product: ``(indices int64 [n, k], similarities float32 [n, k])``.

    With ``queries`` None the vectors are queried against themselves and, if ``exclude_self``,
    each point's own row is dropped from its list.
    """
    import faiss

    base = _as_f32(vectors)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    if queries is None:
        extra = 1 if exclude_self else 0
        kk = min(k + extra, len(base))
        sims, idx = index.search(base, kk)
        if exclude_self:
            idx, sims = drop_self(idx, sims)
        return idx[:, :k], sims[:, :k]
    sims, idx = index.search(_as_f32(queries), min(k, len(base)))
    return idx, sims


def drop_self(idx: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (ties can put it anywhere in the list, not only first)."""
    n, kk = idx.shape
    own = idx == np.arange(n)[:, None]
    # Rows where self was not returned (duplicates crowding it out) drop their last column.
    missing = ~own.any(axis=1)
    own[missing, kk - 1] = True
    keep = ~own
    return idx[keep].reshape(n, kk - 1), sims[keep].reshape(n, kk - 1)


@dataclass
class IVFIndex:
    """An inverted-file index (faiss ``IndexIVFFlat``) for fast approximate search at scale."""

    index: object
    nprobe: int

    @classmethod
    def build(
        cls, vectors: np.ndarray, nlist: int | None = None, nprobe: int = 16, seed: int = 0
    ) -> IVFIndex:
        import faiss

        base = _as_f32(vectors)
        n, d = base.shape
        nlist = nlist or max(1, min(4096, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = base[rng.choice(n, size=min(n, nlist * 40), replace=False)]
        index.cp.seed = seed
        index.train(train)
        index.add(base)
        index.nprobe = nprobe
        return cls(index=index, nprobe=nprobe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, idx = self.index.search(_as_f32(queries), k)  # type: ignore[attr-defined]
        return idx, sims
