"""Benchmark 3: the first 2-D map of 10k x 512 vectors in a fresh Python process.

Compares the dashboard's path (``engine.project``: faiss k-NN graph handed to umap-learn, numba
kernels loaded from the on-disk cache) with a plain cold ``umap.UMAP().fit_transform``. Every
figure is a whole fresh process, imports included, as a user starting the app pays it.

    python benchmarks/bench_first_map.py [--quick] [--json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, Reporter, clustered_vectors, parser

ENGINE_CHILD = """
import time, sys, json
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {repo!r})
from engine.project import compute_projection
x = np.load({path!r})
pca = compute_projection(x, "pca")
t_pca = time.perf_counter() - t0
coords = compute_projection(x, "umap")
print(json.dumps({{"pca_s": t_pca, "umap_s": time.perf_counter() - t0, "n": len(coords)}}))
"""

PLAIN_CHILD = """
import time, json
t0 = time.perf_counter()
import numpy as np
import umap
x = np.load({path!r})
coords = umap.UMAP().fit_transform(x)
print(json.dumps({{"umap_s": time.perf_counter() - t0, "n": len(coords)}}))
"""


def run_child(code: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("first_map_fresh_process", args)
    n = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "vectors.npy")
        import numpy as np

        np.save(path, clustered_vectors(n, 512, clusters=40))
        numba_dir = str(Path(tmp) / "numba")
        env = {**os.environ, "PARALLAX_CACHE": str(Path(tmp) / "cache")}
        env_engine = {**env, "NUMBA_CACHE_DIR": numba_dir}
        engine_code = ENGINE_CHILD.format(repo=str(REPO), path=path)

        rep.log(f"{n} x 512: engine path, empty numba disk cache (first process on a machine)")
        cold = run_child(engine_code, env_engine)
        rep.log(f"  PCA map after {cold['pca_s']:.1f}s, UMAP map after {cold['umap_s']:.1f}s")
        rep.log("engine path, a later fresh process (numba kernels loaded from disk)")
        warm = run_child(engine_code, env_engine)
        rep.log(f"  PCA map after {warm['pca_s']:.1f}s, UMAP map after {warm['umap_s']:.1f}s")
        rep.log("plain cold umap.UMAP().fit_transform in a fresh process")
        plain_env = {**env, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba-plain")}
        plain = run_child(PLAIN_CHILD.format(path=path), plain_env)
        rep.log(f"  UMAP map after {plain['umap_s']:.1f}s")
    rep.done(
        {
            "n": n,
            "dim": 512,
            "engine_first_process_pca_s": round(cold["pca_s"], 2),
            "engine_first_process_umap_s": round(cold["umap_s"], 2),
            "engine_fresh_process_pca_s": round(warm["pca_s"], 2),
            "engine_fresh_process_umap_s": round(warm["umap_s"], 2),
            "plain_umap_fresh_process_s": round(plain["umap_s"], 2),
            "speedup_vs_plain": round(plain["umap_s"] / warm["umap_s"], 2),
            "target_s": 10,
        }
    )


if __name__ == "__main__":
    main()
