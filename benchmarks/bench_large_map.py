"""Benchmark 5: a map of 1M x 512 vectors by sample-fit + placement, on this machine's cores.

UMAP is fitted on a seeded 50k sample (``engine.maps.umap_layout``); the other points are placed
from
their nearest sample points (``engine.maps.project.compute_projection``). Quality is the
trustworthiness of the result on a seeded 2k-point sample, next to that of a full UMAP fit of a
50k subset (the best a 50k fit gives). Memory: peak resident set of this process, before and
after the map (the 1M x 512 float32 input alone is 2.0 GB).

    python benchmarks/bench_large_map.py [--quick] [--json]
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
from common import Reporter, clustered_vectors, parser

from engine.maps.project import compute_projection, map_quality, warm_up


def write_mixture(
    path: str | os.PathLike[str],
    n: int,
    dim: int = 128,
    clusters: int = 50,
    seed: int = 0,
    chunk: int = 250_000,
) -> None:
    """Write an ``n x dim`` float32 ``.npy`` of a Gaussian mixture in chunks (never whole in
    memory): ``clusters`` centres, each with its own 8-dimensional spread plus a little isotropic
    noise, so the points have neighbourhoods to keep (uniform noise has none)."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(clusters, dim)).astype(np.float32)
    bases = rng.normal(size=(clusters, 8, dim)).astype(np.float32) / np.sqrt(8)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    with open(path, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(f, header)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            lab = rng.choice(clusters, size=m, p=weights)
            z = rng.normal(size=(m, 8)).astype(np.float32)
            x = centres[lab] + np.einsum("mk,mkd->md", z, bases[lab])
            x += 0.3 * rng.normal(size=(m, dim)).astype(np.float32)
            f.write(np.ascontiguousarray(x, dtype="<f4").tobytes())


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("large_map_sample_fit", args)
    n, sample = (60_000, 10_000) if args.quick else (1_000_000, 50_000)
    x = clustered_vectors(n, 512, clusters=200)
    warm_up()  # imports done: measure the map, not module loading
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_before = os.getloadavg()[0]

    t, cpu = time.perf_counter(), time.process_time()
    coords = compute_projection(x, "umap", fit_sample=sample)
    total_s = time.perf_counter() - t
    cpu_s = time.process_time() - cpu  # all threads: what the map costs, however busy the box
    rss_after_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rep.log(f"{n} points mapped in {total_s:.1f}s (UMAP fit on {sample}, rest placed)")
    q_all = map_quality(x, coords, k=10, sample=2000)

    rng = np.random.default_rng(1)
    subset = np.sort(rng.choice(n, size=sample, replace=False))
    t = time.perf_counter()
    sub_coords = compute_projection(x[subset], "umap", fit_sample=sample)
    subset_fit_s = time.perf_counter() - t
    q_subset = map_quality(x[subset], sub_coords, k=10, sample=2000)
    rep.log(
        f"trustworthiness: sample-fit map {q_all['trustworthiness']:.3f}, "
        f"full fit of a {sample} subset {q_subset['trustworthiness']:.3f}"
    )
    rep.done(
        {
            "n": n,
            "fit_sample": sample,
            "total_s": round(total_s, 1),
            "cpu_s": round(cpu_s, 1),
            "target_s": 30,
            "peak_rss_before_map_mb": round(rss_before_mb),
            "peak_rss_after_map_mb": round(rss_after_mb),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "trustworthiness": round(q_all["trustworthiness"], 4),
            "knn_recall": round(q_all["knn_recall"], 4),
            "subset_fit_s": round(subset_fit_s, 1),
            "subset_trustworthiness": round(q_subset["trustworthiness"], 4),
            "subset_knn_recall": round(q_subset["knn_recall"], 4),
        }
    )


if __name__ == "__main__":
    main()
