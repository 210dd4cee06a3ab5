"""Benchmark 6: nearest-neighbour search over 1M x 512 vectors, IVF index vs brute force.

The index is faiss ``IndexIVFFlat`` (inner product): it builds in one k-means pass, needs no
extra memory beyond the vectors, and its recall/speed trade-off is one knob (``nprobe``).
HNSW would query faster but takes far longer to build on two cores and doubles memory.
Brute force is a NumPy matrix-vector product + argpartition, as code without an index does.

    python benchmarks/bench_search.py [--quick] [--json]
"""

from __future__ import annotations

import time

import numpy as np
from common import Reporter, clustered_vectors, parser

from engine.maps.knn import IVFIndex


def brute_force(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = x @ q
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("nn_search", args)
    n, n_queries, k = (50_000, 50, 10) if args.quick else (1_000_000, 100, 10)
    # noise as large as the cluster spread: neighbourhoods overlap, as in real embeddings
    x = clustered_vectors(n, 512, clusters=2000 if not args.quick else 100, noise=0.8)
    rng = np.random.default_rng(7)
    queries = x[rng.choice(n, size=n_queries, replace=False)]
    noise = rng.normal(size=queries.shape) * (0.05 / np.sqrt(512))
    queries = queries + noise.astype(np.float32)
    # float32 throughout: a float64 query would make NumPy upcast all 1M vectors per query
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)

    t = time.perf_counter()
    truth = [brute_force(x, q, k) for q in queries]
    brute_ms = (time.perf_counter() - t) / n_queries * 1000
    rep.log(f"brute force: {brute_ms:.1f} ms/query")

    t = time.perf_counter()
    index = IVFIndex.build(x, nprobe=16)
    build_s = time.perf_counter() - t
    rep.log(f"IVF build: {build_s:.1f}s")

    latencies = []
    found = []
    for q in queries:  # one query at a time: the latency a user's click sees
        t = time.perf_counter()
        idx, _ = index.search(q[None, :], k)
        latencies.append((time.perf_counter() - t) * 1000)
        found.append(idx[0])
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth, strict=True)]))
    p50, p95 = np.percentile(latencies, [50, 95])
    rep.log(f"IVF query p50 {p50:.2f} ms, p95 {p95:.2f} ms, recall@{k} {recall:.3f}")
    rep.done(
        {
            "n": n,
            "dim": 512,
            "queries": n_queries,
            "build_s": round(build_s, 1),
            "query_p50_ms": round(float(p50), 3),
            "query_p95_ms": round(float(p95), 3),
            "brute_ms_per_query": round(brute_ms, 2),
            "speedup_vs_brute": round(brute_ms / float(p50), 1),
            "recall_at_10": round(recall, 4),
            "nprobe": index.nprobe,
            "targets": {"query_ms": 50, "speedup": 20, "recall_at_10": 0.9},
        }
    )


if __name__ == "__main__":
    main()
