"""Benchmark 4: reopening a cached 100k-point map (vectors + projection) vs computing it.

python benchmarks/bench_cached_map.py [--quick] [--json]
"""

from __future__ import annotations

import tempfile
import time

from common import Reporter, clustered_vectors, parser

from engine.maps.project import project
from engine.store.cache import Cache


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("cached_map_reopen", args)
    n = 5_000 if args.quick else 100_000
    x = clustered_vectors(n, 512, clusters=100)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        t = time.perf_counter()
        key = cache.put("vectors", "bench" * 12 + "abcd", x, {"n": n, "dim": 512}).key
        entry = cache.get("vectors", key)
        computed = project(entry, "umap", cache=cache)
        compute_s = time.perf_counter() - t
        rep.log(f"computed {n}-point UMAP map in {compute_s:.1f}s")

        def reopen() -> float:
            t = time.perf_counter()
            e = Cache(tmp).get("vectors", key)
            vectors = e.load()  # memory-mapped
            coords = project(e, "umap", cache=Cache(tmp)).coords()
            assert coords.shape == (n, 2) and vectors.shape == (n, 512)
            return time.perf_counter() - t

        reopen_s = min(reopen() for _ in range(5))
        assert not computed.cached
        rep.log(f"reopened the cached map in {reopen_s * 1000:.1f} ms")
    rep.done(
        {
            "n": n,
            "compute_s": round(compute_s, 2),
            "reopen_s": round(reopen_s, 4),
            "speedup": round(compute_s / reopen_s, 1),
            "target_speedup": 100,
        }
    )


if __name__ == "__main__":
    main()
