"""Benchmark 10: a fully cached ``embed`` / ``project`` in a fresh process, with and without the
model's recorded identity (``engine.models.identity``).

Both sides run the real CLI (``python -m engine ...``) in a new process over the same cache,
whose vectors are already there. The baseline deletes the identity record first, so the engine
builds the model to learn its identity, as every cached run did before; the measured side finds
the vectors from the hash of the model's files alone. Also reports whether torch was imported.

    python benchmarks/bench_cached_cli.py [--quick] [--json]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Reporter, parser

PROBE = (
    "import json, runpy, sys\n"
    "sys.argv = ['engine', *sys.argv[1:]]\n"
    "code = 0\n"
    "try:\n"
    "    runpy.run_module('engine', run_name='__main__')\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def run_cli(args: list[str], cache: Path) -> tuple[float, bool]:
    """Wall seconds of one fresh ``python -m engine`` process, and whether it imported torch."""
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "--json", "--quiet", "--cache-dir", str(cache)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr[-2000:]}")
    torch = json.loads(done.stderr.strip().splitlines()[-1])["torch"]
    return seconds, torch


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("cached_cli_without_model", args)
    data = "demo:shapes?n=100&seed=0" if args.quick else "demo:shapes"
    model = "demo:shapes-clip"
    repeats = 1 if args.quick else 3
    embed = ["embed", "--dataset", data, "--model", model]
    project = ["project", "--dataset", data, "--model", model, "--method", "pca"]
    figures: dict[str, float | bool | int] = {"repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        first_s, _ = run_cli(embed, cache)  # computes the vectors (and records the identity)
        run_cli(project, cache)  # computes the map
        rep.log(f"first embed (computes) {first_s:.1f}s")
        for name, cmd in (("embed", embed), ("project", project)):
            built, recalled, torch_built, torch_recalled = [], [], False, False
            for _ in range(repeats):
                shutil.rmtree(cache / "identities", ignore_errors=True)
                s, torch_built = run_cli(cmd, cache)  # identity unknown: the model is built
                built.append(s)
                s, torch_recalled = run_cli(cmd, cache)  # identity recalled from the files
                recalled.append(s)
            rep.log(
                f"cached {name}: model built {min(built):.2f}s (torch {torch_built}), "
                f"identity recalled {min(recalled):.2f}s (torch {torch_recalled})"
            )
            figures |= {
                f"{name}_model_built_s": round(min(built), 2),
                f"{name}_identity_recalled_s": round(min(recalled), 2),
                f"{name}_speedup": round(min(built) / min(recalled), 1),
                f"{name}_recalled_imports_torch": torch_recalled,
            }
    rep.done(figures)


if __name__ == "__main__":
    main()
