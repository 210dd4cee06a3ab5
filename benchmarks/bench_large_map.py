"""Benchmark 5: a map of N vectors (default 10M x 128) in a fresh process, out of core.

``python -m engine project --vectors X.npy --method umap`` runs in a child process on a
memory-mapped ``.npy`` (written here first, in chunks: a 50-cluster Gaussian mixture, each
cluster with its own 8-dimensional spread). UMAP is fitted on a seeded 50k sample
(``engine.maps.umap_layout``) and every other row is read a block at a time and placed from its
nearest sample points (``engine.maps.project.compute_projection``). Figures: wall time and peak
resident set of the child (``RUSAGE_CHILDREN``: the largest child's peak), the load average
around it, and the map's quality on a seeded 2k-point sample (trustworthiness, 10-NN recall)
next to that of a full umap-learn fit of a seeded 50k subset. ``--column`` also maps the same
vectors through ``--dataset manifest:... --model column:vec`` (a Parquet manifest of ids and
texts whose vectors are a ``.npy`` side file, opened under the operator's default limits) and
says what that path adds to the ``--vectors`` run.

    python benchmarks/bench_large_map.py --n 10000000 [--column] [--vectors X.npy] [--json]
    python benchmarks/bench_large_map.py --quick   # tiny, no umap-learn: checks it runs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, Reporter, parser

from engine.maps.project import map_quality


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


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _fresh(args: list[str], cache: Path, env: dict[str, str] | None = None) -> dict:
    """``python -m engine ARGS --json`` in a child process: its JSON, wall time, and the child's
    own peak resident set (``wait4``'s rusage: what ``/usr/bin/time -v`` reports)."""
    load = _load()
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "engine", *args, "--cache-dir", str(cache), "--json", "--quiet"],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if child.returncode != 0:
            raise SystemExit(f"python -m engine {' '.join(args)} failed ({child.returncode})")
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    return {
        "result": result,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average": [load, _load()],
    }


def _umap_learn_subset(x: np.ndarray, size: int, seed: int = 1) -> tuple[dict, float]:
    """Quality of a full umap-learn fit (its defaults, seeded, cosine) of a seeded subset."""
    import umap

    rows = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    sub = np.asarray(x[rows], dtype=np.float32)
    t = time.perf_counter()
    coords = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=0)
    emb = coords.fit_transform(sub)
    return map_quality(sub, emb, k=10, sample=2000), time.perf_counter() - t


def _manifest(vectors: Path, n: int, folder: Path) -> str:
    """A Parquet manifest of ``n`` rows (id, text) whose vectors are ``vectors`` (side file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    ids = pa.array(np.arange(n).astype(str))
    pq.write_table(pa.table({"id": ids, "text": ids}), folder / "items.parquet")
    os.link(vectors, folder / "vec.npy") if not (folder / "vec.npy").exists() else None
    (folder / "items.vectors.json").write_text(json.dumps({"vec": "vec.npy"}))
    return f"manifest:{folder / 'items.parquet'}"


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=10_000_000, help="rows (default 10M)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--vectors", help="an existing N x D float32 .npy (else one is written)")
    p.add_argument("--column", action="store_true", help="also through column:NAME")
    args = p.parse_args()
    rep = Reporter("large_map_out_of_core", args)
    n, dim, fit = (8_000, 16, 2_000) if args.quick else (args.n, args.dim, 50_000)
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="parallax-large-map-") as tmp:
        work = Path(tmp)
        path = Path(args.vectors) if args.vectors else work / "x.npy"
        if not args.vectors:
            t = time.perf_counter()
            write_mixture(path, n, dim)
            rep.log(f"wrote {n} x {dim} float32 in {time.perf_counter() - t:.0f}s: {path}")
        x = np.load(path, mmap_mode="r")
        n = len(x)
        figures: dict = {
            "n": n,
            "dim": int(x.shape[1]),
            "fit_sample": fit,
            "file_gb": round(path.stat().st_size / 1e9, 2),
        }
        run = _fresh(
            ["project", "--vectors", str(path), "--method", "umap", "--fit-sample", str(fit)],
            work / "cache",
        )
        rep.log(
            f"--vectors: {run['wall_s']} s, peak {run['peak_rss_mb']} MB, {run['load_average']}"
        )
        coords = np.load(run["result"]["path"])
        assert len(coords) == n and np.isfinite(coords).all(), "every row placed"
        quality = map_quality(x, coords, k=10, sample=2000)
        figures["vectors_path"] = {
            k: run[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "load_average")
        } | {
            "trustworthiness": round(quality["trustworthiness"], 4),
            "knn_recall": round(quality["knn_recall"], 4),
        }
        if args.column:
            spec = _manifest(path, n, work / "manifest")
            col = _fresh(
                [
                    "project",
                    "--dataset",
                    spec,
                    "--model",
                    "column:vec",
                    "--method",
                    "umap",
                    "--fit-sample",
                    str(fit),
                ],
                work / "cache-column",  # the operator's defaults: no limit raised
            )
            same = np.array_equal(np.load(col["result"]["path"]), coords)
            rep.log(f"column: {col['wall_s']} s, peak {col['peak_rss_mb']} MB, same map {same}")
            figures["column_path"] = {
                k: col[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "load_average")
            } | {
                "same_map": bool(same),
                # What the column path adds to the same map (open the manifest, check, hash
                # and cache the side file): against the --vectors run of this benchmark.
                "added_wall_s": round(col["wall_s"] - run["wall_s"], 1),
                "added_cpu_s": round(col["cpu_s"] - run["cpu_s"], 1),
            }
        if not args.quick:  # umap-learn compiles for ~40 s: not for --quick
            ref, ref_s = _umap_learn_subset(x, min(50_000, n))
            figures["umap_learn_50k"] = {
                "fit_s": round(ref_s, 1),
                "trustworthiness": round(ref["trustworthiness"], 4),
                "knn_recall": round(ref["knn_recall"], 4),
            }
            rep.log(f"umap-learn on a 50k subset: {figures['umap_learn_50k']}")
        figures["targets"] = {"wall_s": 120, "peak_rss_mb": 3000}
        rep.done(figures)


if __name__ == "__main__":
    main()
