"""Peak memory of opening small hostile inputs (issue 21), each in a fresh child process.

    python benchmarks/hostile_memory.py [--repo PATH] [--only NAME ...]

Each case is generated once under ``--work`` (default: a temp folder), then opened by a child
Python whose ``PYTHONPATH`` is ``--repo`` (default: this checkout), so the same inputs can be
measured against another checkout (e.g. the code before the fix). The child reports its peak
RSS (``ru_maxrss``) after opening, and the peak of a child that only imports the same modules;
the difference is what the input cost. Cases are scaled down from the issue's (noted below) so
that the unfixed code does not take the shared machine down.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, resource, sys, time
from pathlib import Path
arg = {arg!r}
import pandas, pyarrow.parquet, PIL.Image  # loaded lazily by the code: not the input's cost
def peak():  # VmHWM: ru_maxrss survives exec, so it would report the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
{imports}
base = peak()
outcome = "opened"
t0 = time.perf_counter()
if {run!r}:
    try:
{body}
    except Exception as exc:
        outcome = type(exc).__name__ + ": " + str(exc).splitlines()[0][:90]
print(json.dumps({{"peak_mb": peak(), "base_mb": base, "outcome": outcome,
                  "s": time.perf_counter() - t0}}))
"""

CASES = {
    # issue: 8000x8000 16-bit PNG (128 KB) -> 2.3 GB
    "png16_8000x8000": (
        "from engine.datasets.images import open_image_safely",
        "        open_image_safely(Path(arg), name='big.png')",
    ),
    # issue: 213 KB Parquet of repeated texts -> 4.4 GB; here 4,000 x 100,000-char texts
    "parquet_repeated_texts": (
        "from engine.datasets import open_dataset",
        "        open_dataset('manifest:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
    # issue: 29 KB bundle whose items table claims millions of rows -> 6.1 GB; here 1,000,000
    # rows of one repeated 1,000-character text
    "bundle_claims_1M_rows": (
        "from engine.datasets.bundle import open_bundle\nfrom engine.cache import Cache",
        "        open_bundle(arg, cache=Cache(Path(arg).parent / 'c'))",
    ),
    # issue: manifest.json inflating to 1.5 GB accepted; here 150 MB
    "bundle_manifest_150MB": (
        "from engine.datasets.bundle import open_bundle\nfrom engine.cache import Cache",
        "        open_bundle(arg, cache=Cache(Path(arg).parent / 'c'))",
    ),
    # issue: 1 GB text cell -> 8 GB; here a 200 MB cell in a CSV manifest
    "csv_200MB_text_cell": (
        "from engine.datasets import open_dataset",
        "        open_dataset('manifest:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
}


def make_inputs(work: Path) -> dict[str, Path]:
    import pandas as pd
    from PIL import Image

    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    png = work / "big16.png"
    if not png.exists():
        Image.fromarray(np.zeros((8000, 8000), dtype=np.uint16)).save(png)
    out["png16_8000x8000"] = png
    pq_path = work / "repeated.parquet"
    if not pq_path.exists():
        text = "lorem ipsum " * (100_000 // 12)
        pd.DataFrame({"text": [text] * 4000}).to_parquet(pq_path)
    out["parquet_repeated_texts"] = pq_path
    demo = REPO / "bundles" / "demo-shapes.parallax.zip"
    rows = work / "rows.parallax.zip"
    if not rows.exists():
        n = 1_000_000
        text = "z" * 1000  # one long caption, repeated: Parquet stores it once
        items = pd.DataFrame({"id": ["x"] * n, "label": ["y"] * n, "text": [text] * n})
        buf = io.BytesIO()
        items.to_parquet(buf, index=False)

        def claim(members: dict, manifest: dict) -> None:
            members["items.parquet"] = buf.getvalue()
            manifest["dataset"]["n"] = n
            manifest["dataset"]["has_texts"] = True
            manifest["thumbs"] = None
            members.pop("thumbs.parquet", None)

        _rebundle(demo, rows, claim)
    out["bundle_claims_1M_rows"] = rows
    big_manifest = work / "manifest150.parallax.zip"
    if not big_manifest.exists():

        def pad(members: dict, manifest: dict) -> None:
            manifest["padding"] = " " * (150 * 1024**2)

        _rebundle(demo, big_manifest, pad)
    out["bundle_manifest_150MB"] = big_manifest
    cell = work / "cell.csv"
    if not cell.exists():
        with open(cell, "w") as f:
            f.write("text\n")
            f.write("a" * (200 * 1024**2) + "\n")
            f.write("short\n")
    out["csv_200MB_text_cell"] = cell
    return out


def _rebundle(source: Path, out: Path, edit) -> None:
    with zipfile.ZipFile(source) as zin:
        members = {i.filename: zin.read(i) for i in zin.infolist()}
    manifest = json.loads(members.pop("manifest.json"))
    edit(members, manifest)
    manifest["files"] = {k: hashlib.sha256(v).hexdigest() for k, v in members.items()}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        zout.writestr("manifest.json", json.dumps(manifest))
        for k, v in members.items():
            zout.writestr(k, v)


def measure(repo: Path, name: str, path: Path, run: bool) -> dict:
    imports, body = CASES[name]
    code = CHILD.format(arg=str(path), imports=imports, body=body, run=run)
    env = {**os.environ, "PYTHONPATH": str(repo), "PARALLAX_CACHE": str(path.parent / "c")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo
    )
    if done.returncode != 0:
        return {"peak_mb": float("nan"), "outcome": f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "parallax-hostile")
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    inputs = make_inputs(args.work)
    print(f"repo {args.repo}")
    print(f"{'case':26} {'file':>9} {'input cost':>11} {'peak':>8}  outcome")
    for name, path in inputs.items():
        if args.only and name not in args.only:
            continue
        base = measure(args.repo, name, path, run=False)
        got = measure(args.repo, name, path, run=True)
        cost = got["peak_mb"] - base["peak_mb"]
        size = path.stat().st_size / 1024
        print(f"{name:26} {size:>7.0f}kB {cost:>9.0f}MB {got['peak_mb']:>6.0f}MB  {got['outcome']}")


if __name__ == "__main__":
    main()
