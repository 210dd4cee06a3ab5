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


def self_knn(
    vectors: np.ndarray, k: int, normalise: bool = False, chunk_rows: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """``exact_knn(vectors, k)`` (each row's ``k`` nearest others, the same lists; similarities
    may differ in the last bit, BLAS blocking) for a memory-mapped array,
    read a block at a time: the index holds the one float32 copy of the rows, and the queries
    come from the file again in blocks (``engine.store.chunks``), so memory is the index plus
    one block and the results, not two or three N x D copies. ``normalise``: search the rows'
    L2-normalised directions (cosine), as a normalised copy would."""
    import faiss

    from engine.store.chunks import row_chunks

    n, d = vectors.shape
    # Whole faiss query blocks (4,096 rows) and no short tail: faiss scores a block of fewer
    # than 20 queries without BLAS, which could round differently from one whole search.
    step = max(4096, chunk_rows - chunk_rows % 4096)
    if 0 < n % step < 20:
        step += n % step

    def blocks():
        for start, block in row_chunks(vectors, rows=step):
            if normalise:
                block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            yield start, block

    index = faiss.IndexFlatIP(d)
    for _, block in blocks():
        index.add(block)
    kk = min(k + 1, n)
    idx = np.empty((n, kk - 1), dtype=np.int64)
    sims = np.empty((n, kk - 1), dtype=np.float32)
    for start, block in blocks():
        s, i = index.search(block, kk)
        own = np.arange(start, start + len(block))
        i, s = _drop_rows(i, s, own)
        idx[start : start + len(block)] = i
        sims[start : start + len(block)] = s
    return idx[:, :k], sims[:, :k]


def _drop_rows(idx: np.ndarray, sims: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``drop_self`` for a block of query rows whose own indices are ``own``."""
    n, kk = idx.shape
    mine = idx == own[:, None]
    mine[~mine.any(axis=1), kk - 1] = True
    keep = ~mine
    return idx[keep].reshape(n, kk - 1), sims[keep].reshape(n, kk - 1)
