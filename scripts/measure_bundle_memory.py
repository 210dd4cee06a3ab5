"""Peak memory of opening a large bundle in view-only mode (BENCHMARKS.md, "Bundle memory").

    python scripts/measure_bundle_memory.py build --n 100000 --out /tmp/shapes-100k.parallax.zip
    python scripts/measure_bundle_memory.py measure /tmp/shapes-100k.parallax.zip

``build`` embeds ``demo:shapes?n=N`` with ``baseline:pixels`` (768-d) and ``baseline:text``
(256-d), computes both maps and writes the bundle (minutes on 2 cores: UMAP, exact k-NN).

``measure`` starts a fresh child process in view-only mode (torch, transformers, open_clip and
umap made unimportable, ``PARALLAX_VIEW_ONLY=1``, an empty cache) that runs the app's Home page
and Map page through Streamlit's AppTest with ``PARALLAX_BUNDLE`` set to the bundle: the real
open path (``bundle:PATH`` -> ``open_bundle`` -> install into the cache), the cached UMAP maps,
the map figures and their serialisation. It prints the child's peak RSS
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``) and the heavy modules found in
``sys.modules`` (must be none).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {repo!r})
t0 = time.perf_counter()
from streamlit.testing.v1 import AppTest
out = {{}}
for page in ("pages/home.py", "pages/map.py"):
    at = AppTest.from_file(os.path.join({repo!r}, page), default_timeout=1200)
    if page.endswith("map.py"):
        at.session_state["map_method"] = "UMAP"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("plotly_chart")
    out[page] = {{"charts": len(charts), "json_bytes": sum(len(c.proto.spec) for c in charts),
                 "errors": [e.value for e in at.error]}}
import resource
out["seconds"] = round(time.perf_counter() - t0, 1)
out["self_maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
heavy = ("torch", "transformers", "open_clip", "umap", "sentence_transformers")
out["heavy_modules"] = sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
print(json.dumps(out))
"""


def build(n: int, out: Path, cache_dir: Path | None) -> None:
    from engine.outputs.bundle import write_bundle
    from engine.store.cache import Cache

    with tempfile.TemporaryDirectory(prefix="parallax-big-bundle-") as tmp:
        cache = Cache(cache_dir or tmp)
        result = write_bundle(
            f"demo:shapes?n={n}&seed=0",
            ["baseline:pixels", "baseline:text"],
            out,
            methods=("umap", "pca"),
            cache=cache,
        )
    print(json.dumps(result.to_json()))


def measure(bundle: Path) -> dict:
    from dashboard.viewonly import no_models_env

    with tempfile.TemporaryDirectory(prefix="parallax-measure-") as tmp:
        env = no_models_env(Path(tmp) / "block", view_only_flag=True)
        env |= {"PARALLAX_CACHE": str(Path(tmp) / "cache"), "PARALLAX_BUNDLE": str(bundle)}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD.format(repo=str(REPO))],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            cwd=REPO,
        )
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "bundle": str(bundle),
        "bundle_mb": round(bundle.stat().st_size / 1e6, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "wall_s": round(wall, 1),
        **child,
    }
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--n", type=int, default=100_000)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--cache-dir", type=Path)
    m = sub.add_parser("measure")
    m.add_argument("bundle", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "build":
        build(args.n, args.out, args.cache_dir)
    else:
        measure(args.bundle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
