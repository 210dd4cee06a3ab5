"""Benchmark 14b: what float16 storage of vectors costs a map.

The same N x D vectors stored as float32 and as float16 (written here a block at a time), each
mapped by ``python -m engine project --vectors X.npy --method umap`` in a fresh process (wall
time, the child's peak resident set, load average), and the float32 vectors once more under
another seed (how far two maps of the same vectors differ anyway). Then, against the float32
vectors as the truth: each map's quality on a seeded 2k sample (``engine.maps.project.map_quality``:
trustworthiness, 10-NN recall), how far float16 moves cosine similarities (max / mean absolute
difference over random pairs and over near-neighbour pairs), how many of each sample point's
10 nearest neighbours in the full set are the same under both (every row searched, a block at a
time), how much the two maps agree (the sample's 10 nearest points in 2-D), and the files'
sizes.

    python benchmarks/bench_float16.py --source /tmp/big/x10m.npy --n 1000000 [--out DIR] [--json]
    python benchmarks/bench_float16.py --quick   # tiny, written here: checks it runs

``--source``: a float32 N x D ``.npy`` (read memory-mapped; its first ``--n`` rows are used and,
unless that is every row, copied to a float32 file first). Without it a Gaussian mixture is
written (``bench_large_map.write_mixture``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Reporter, parser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_large_map import _fresh, _load, write_mixture

from engine.maps.project import map_quality
from engine.store.chunks import gather_rows, row_chunks


def write_as(path: Path, x: np.ndarray, dtype: str) -> None:
    """``x`` (memory-mapped is fine) written to a ``.npy`` of ``dtype``, a block at a time (the
    header first, then each block's bytes: nothing N x D in memory, no mapping of the output)."""
    with open(path, "wb") as f:
        header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": x.shape}
        np.lib.format.write_array_header_1_0(f, header)
        for _, block in row_chunks(x):
            f.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


def _unit_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Unit float64 copies of ``x[rows]`` (any order), gathered a block of the file at a time
    (``gather_rows``: random rows of a mapped file would otherwise stay mapped)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), x.shape[1]), dtype=np.float64)
    out[order] = gather_rows(x, rows[order], dtype=np.float64)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def sample_knn(x: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest other rows (cosine) of each of ``rows`` among every row of ``x``,
    exact, the rows read a block at a time (``row_chunks``: a float16 file is cast to float32
    a block at a time) and the best ``k`` so far kept per query."""
    import faiss

    queries = np.ascontiguousarray(_unit_rows(x, rows), dtype=np.float32)
    best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(rows), k), -1, dtype=np.int64)
    for start, block in row_chunks(x):
        block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        s, i = faiss.knn(queries, block, min(k + 1, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        i = i + start
        s[i == rows[:, None]] = -np.inf  # a row is not its own neighbour
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, i], axis=1)
        top = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_i = np.take_along_axis(all_i, top, axis=1)
    return best_i


def cosine_error(x32: np.ndarray, x16: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """Max and mean |cos32 - cos16| over pairs ``(a[i], b[i])``, both in float64."""
    c32 = np.einsum("ij,ij->i", _unit_rows(x32, a), _unit_rows(x32, b))
    c16 = np.einsum("ij,ij->i", _unit_rows(x16, a), _unit_rows(x16, b))
    diff = np.abs(c32 - c16)
    return {"pairs": len(a), "max_abs": float(diff.max()), "mean_abs": float(diff.mean())}


def map_agreement(c32: np.ndarray, c16: np.ndarray, rows: np.ndarray, k: int = 10) -> float:
    """Mean share of each sample row's ``k`` nearest sample rows in 2-D that both maps agree on."""
    from sklearn.neighbors import NearestNeighbors

    def knn(xy: np.ndarray) -> np.ndarray:  # each row's k nearest others (itself dropped)
        idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy, return_distance=False)
        return idx[:, 1:]

    a = knn(np.asarray(c32[rows], dtype=np.float64))
    b = knn(np.asarray(c16[rows], dtype=np.float64))
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(a, b, strict=True)]))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--source", help="a float32 N x D .npy (default: a mixture written here)")
    p.add_argument("--n", type=int, default=1_000_000, help="rows used (default 1M)")
    p.add_argument("--dim", type=int, default=128, help="dimensions of a written mixture")
    p.add_argument("--sample", type=int, default=2000, help="rows for map quality")
    p.add_argument(
        "--nn-sample", type=int, help="query rows for the full-set 10-NN (default: --sample)"
    )
    p.add_argument("--out", help="folder for the files and caches (default: a temp folder)")
    args = p.parse_args()
    rep = Reporter("float16_map_cost", args)
    n = 8_000 if args.quick else args.n
    fit = 2_000 if args.quick else 50_000
    k = 10
    with tempfile.TemporaryDirectory(dir=args.out, prefix="parallax-f16-") as tmp:
        work = Path(tmp)
        if args.source and not args.quick:
            source = np.load(args.source, mmap_mode="r")
            if source.dtype != np.float32 or source.ndim != 2:
                raise SystemExit(f"{args.source}: need an N x D float32 .npy")
            n = min(n, len(source))
            x = source[:n]  # a memory-mapped slice
            if n == len(source):
                path32 = Path(args.source)  # every row: the file itself, no copy
            else:
                path32 = work / "x32.npy"
                write_as(path32, x, "<f4")
        else:
            path32 = work / "x32.npy"
            write_mixture(path32, n, 16 if args.quick else args.dim)
        x32 = np.load(path32, mmap_mode="r")
        t = time.perf_counter()
        path16 = work / "x16.npy"
        write_as(path16, x32, "<f2")
        rep.log(f"float16 copy written in {time.perf_counter() - t:.0f} s: {path16}")
        x16 = np.load(path16, mmap_mode="r")
        finite = all(np.isfinite(b).all() for _, b in row_chunks(x16))
        figures: dict[str, Any] = {
            "n": n,
            "dim": int(x32.shape[1]),
            "fit_sample": fit,
            "file_mb": {
                "float32": round(path32.stat().st_size / 2**20, 1),
                "float16": round(path16.stat().st_size / 2**20, 1),
            },
            "float16_all_finite": bool(finite),
            "max_abs_value": float(max(np.abs(b).max() for _, b in row_chunks(x32))),
        }
        # A small map first, in its own process: umap-learn's compiled kernels are cached on
        # disk, so neither timed run pays the compilation and the two compare fairly.
        write_mixture(work / "warm.npy", 8_000, int(x32.shape[1]))
        warm = ["project", "--vectors", str(work / "warm.npy"), "--method", "umap"]
        _fresh([*warm, "--fit-sample", "2000"], work / "cache-warm")
        coords = {}
        # A second float32 map under another seed: how far two maps of the same vectors differ
        # anyway, the yardstick for how far the float16 map differs from the float32 one.
        runs = (("float32", path32, 0), ("float16", path16, 0), ("float32_seed1", path32, 1))
        for name, path, seed in runs:
            command = ["project", "--vectors", str(path), "--method", "umap", "--seed", str(seed)]
            run = _fresh([*command, "--fit-sample", str(fit)], work / f"cache-{name}")
            coords[name] = np.load(run["result"]["path"])
            assert len(coords[name]) == n and np.isfinite(coords[name]).all(), "every row placed"
            figures[name] = {
                key: run[key] for key in ("wall_s", "cpu_s", "peak_rss_mb", "load_average")
            }
            figures[name]["key"] = run["result"]["key"]
            rep.log(f"{name}: {figures[name]}")
        figures["same_cache_key"] = figures["float32"]["key"] == figures["float16"]["key"]
        # Quality of both maps against the float32 vectors (the truth), same 2k sample.
        for name, _, _ in runs:
            q = map_quality(x32, coords[name], k=k, sample=args.sample)
            figures[name]["trustworthiness"] = round(q["trustworthiness"], 4)
            figures[name]["knn_recall"] = round(q["knn_recall"], 4)
        rng = np.random.default_rng(0)
        queries = args.nn_sample or args.sample
        rows = np.sort(rng.choice(n, size=min(n, queries), replace=False))
        t = time.perf_counter()
        nn32 = sample_knn(x32, rows, k)
        nn16 = sample_knn(x16, rows, k)
        figures["neighbours"] = {
            "sample": len(rows),
            "k": k,
            "overlap_10nn": round(
                float(np.mean([len(set(a) & set(b)) / k for a, b in zip(nn32, nn16, strict=True)])),
                4,
            ),
            "seconds": round(time.perf_counter() - t, 1),
        }
        pairs = min(n, 200_000)
        figures["cosine_random_pairs"] = cosine_error(
            x32, x16, rng.integers(0, n, pairs), rng.integers(0, n, pairs)
        )
        figures["cosine_neighbour_pairs"] = cosine_error(
            x32, x16, np.repeat(rows, k), nn32.reshape(-1)
        )
        figures["map_agreement_10nn_2d"] = {
            other: round(map_agreement(coords["float32"], coords[other], rows), 4)
            for other in ("float16", "float32_seed1")
        }
        figures["load_average_end"] = _load()
        rep.log(f"figures: {figures}")
        rep.done(figures)
        del x16, x32


if __name__ == "__main__":
    main()
