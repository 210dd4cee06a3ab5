"""Peak memory of opening small hostile inputs (issue 21), each in a fresh child process.

    python benchmarks/hostile_memory.py [--repo PATH] [--only NAME ...] [--upload-mb N]

Each case is generated once under ``--work`` (default: a temp folder), then opened by a child
Python whose ``PYTHONPATH`` is ``--repo`` (default: this checkout), so the same inputs can be
measured against another checkout (e.g. the code before the fix). The child reports its peak
RSS (``ru_maxrss``) after opening, and the peak of a child that only imports the same modules;
the difference is what the input cost. Cases are scaled down from the issue's (noted below) so
that the unfixed code does not take the shared machine down.

``upload_at_size_limit`` stages a zip of JPEGs of ``--upload-mb`` MiB (default 120: under the
dashboard's ``server.maxUploadSize`` and the engine's ``PARALLAX_MAX_UPLOAD_BYTES`` of 128 MiB,
sized for a 1 GiB deployment) the way the Data page does, and reports the
peak while staging and opening it and the memory still held (``VmRSS``) once the upload's
bytes are dropped and a second, small upload has been opened through the same registry.
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
        "from engine.data.images import open_image_safely",
        "        open_image_safely(Path(arg), name='big.png')",
    ),
    # issue: 213 KB Parquet of repeated texts -> 4.4 GB; here 4,000 x 100,000-char texts
    "parquet_repeated_texts": (
        "from engine.data import open_dataset",
        "        open_dataset('manifest:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
    # issue: 29 KB bundle whose items table claims millions of rows -> 6.1 GB; here 1,000,000
    # rows of one repeated 1,000-character text
    "bundle_claims_1M_rows": (
        "from engine.data.bundle import open_bundle\nfrom engine.store.cache import Cache",
        "        open_bundle(arg, cache=Cache(Path(arg).parent / 'c'))",
    ),
    # issue: manifest.json inflating to 1.5 GB accepted; here 150 MB
    "bundle_manifest_150MB": (
        "from engine.data.bundle import open_bundle\nfrom engine.store.cache import Cache",
        "        open_bundle(arg, cache=Cache(Path(arg).parent / 'c'))",
    ),
    # issue: 1 GB text cell -> 8 GB; here a 200 MB cell in a CSV manifest
    "csv_200MB_text_cell": (
        "from engine.data import open_dataset",
        "        open_dataset('manifest:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
    # issue 27: 213 KB dictionary-encoded Parquet -> 4.7 GB (SIGKILL at 2.7 GB in 1 GiB);
    # here one 20,000-character text x 235,000 rows (~1 kB file, 4.7 GB decoded)
    "parquet_dict_bomb": (
        "from engine.data import open_dataset",
        "        open_dataset('manifest:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
    # issue 27: a 470 MiB CSV at the old upload limit (SIGKILL in 12.5 s)
    "csv_470MiB": (
        "from engine.data import open_dataset",
        "        open_dataset('manifest:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
    # issue 27: a 311 MB zip of 72 noise PNGs (SIGKILL of the 1 GiB view-only server in 8 s)
    "zip_noise_pngs_311MB": (
        "from engine.data import open_dataset",
        "        open_dataset('zip:' + arg, cache_root=Path(arg).parent / 'c')",
    ),
}


# The upload at the size limit, staged and opened the way the Data page does it, in whichever
# checkout is on PYTHONPATH: ``engine.store.uploads.stage_upload`` + ``dashboard.resources``'s
# registry, or (before either existed, e.g. 1e7a72d) ``pages/data.py``'s ``save_upload`` for a
# zip, replicated line for line (a page script runs Streamlit on import), + ``dashboard.state``'s
# ``DatasetRegistry``. Streamlit hands a page the upload's bytes in memory (``UploadedFile`` is
# a ``BytesIO``; the page passes ``getbuffer()``).
CHILD_UPLOAD = """
import ctypes, gc, hashlib, io, json, sys, time, zipfile
from pathlib import Path
big, small, root = (Path(p) for p in {args!r})
import pandas, pyarrow.parquet, PIL.Image  # loaded lazily by the code: not the input's cost
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
def rss():  # what is still referenced: freed heap handed back first, in both checkouts
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return status("VmRSS")
try:  # the one door: the Workspace stages and opens, its holder keeps the datasets
    from engine.workspace import Workspace

    def stage(name, buf, root):
        return Workspace(root).stage_upload([(name, buf)], "visitor")

    class DatasetRegistry:  # a fresh registry = the shared holders emptied
        roots = set()

        def __init__(self):
            for root in self.roots:
                Workspace(root).release()

        def get(self, spec, root):
            self.roots.add(root)
            return Workspace(root).visitor("visitor").open(spec)
except ImportError:
  try:
    from engine.store.uploads import UploadFile, stage_upload
    from engine.store.cache import Cache
    from dashboard.resources import DatasetRegistry

    def stage(name, buf, root):
        return stage_upload([UploadFile(name, buf)], owner="visitor", cache=Cache(root))
  except ImportError:  # before engine.store.uploads: pages/data.py save_upload, kind "zip"
      from dashboard import viewonly
      from dashboard.state import DatasetRegistry, safe_filename
      from engine.errors import DatasetError

      def stage(name, buf, root):
          digest = hashlib.sha256()
          digest.update(name.encode() + b"\\0")
          digest.update(buf)
          folder = root / "uploads" / "visitor" / f"upload-{{digest.hexdigest()[:16]}}"
          folder.mkdir(parents=True, exist_ok=True)
          path = folder / safe_filename(name, "upload.zip")
          with open(path, "wb") as out:
              out.write(buf)
          if viewonly.looks_like_bundle(path, name):
              return viewonly.bundle_spec(path)
          if not zipfile.is_zipfile(path):
              raise DatasetError(f"{{name}} is not a zip archive")
          return f"zip:{{path}}"
def warm_up():  # the modules that opening imports lazily: not the input's cost either
    buf = io.BytesIO(small.read_bytes())
    DatasetRegistry().get(stage(small.name, buf.getbuffer(), root / "w"), root / "w")
warm_up()
registry = DatasetRegistry()
base_rss = rss()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
base_peak = status("VmHWM")
t0 = time.perf_counter()
upload = io.BytesIO(big.read_bytes())  # as Streamlit holds it
ds = registry.get(stage(big.name, upload.getbuffer(), root), root)
n = len(ds)
peak = status("VmHWM")
del ds, upload  # the page's references end with its run; the visitor's file is gone
second = io.BytesIO(small.read_bytes())
registry.get(stage(small.name, second.getbuffer(), root), root)
del second
held = rss() - base_rss
registry = DatasetRegistry()  # what stays is not the registry's (e.g. the allocator's)
print(json.dumps({{"peak_mb": peak - base_peak, "held_mb": held, "items": n,
                  "held_without_registry_mb": rss() - base_rss,
                  "base_mb": base_peak, "s": time.perf_counter() - t0}}))
"""


def make_upload_zips(work: Path, megabytes: int, distinct: int = 0) -> tuple[Path, Path]:
    """A zip of noise JPEGs (~3.7 MB each, stored: JPEGs do not deflate) of about ``megabytes``
    MiB, and a small one (8 images) to open after it. ``distinct``: encode only that many
    different images and repeat them (quicker to make; 0 = every image different)."""
    from PIL import Image

    work.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, (1536, 2048, 3), dtype=np.uint8)

    encoded: dict[int, bytes] = {}

    def jpeg(k: int) -> bytes:
        k = k % distinct if distinct else k
        if k not in encoded:
            buf = io.BytesIO()
            Image.fromarray(np.roll(noise, 7 * k, axis=1)).save(buf, "JPEG", quality=95)
            encoded[k] = buf.getvalue()
        return encoded[k]

    def write(path: Path, limit: int, count: int | None = None) -> Path:
        if path.exists():
            return path
        part = path.with_suffix(".part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
            k, total = 0, 0
            while (count is None or k < count) and total < limit:
                data = jpeg(k)
                if count is None and total + len(data) > limit:
                    break
                zf.writestr(f"photos/img{k:04d}.jpg", data)
                total += len(data)
                k += 1
        part.rename(path)
        return path

    big = write(work / f"upload-{megabytes}MiB.zip", megabytes * 1024**2 - 64 * 1024)
    small = write(work / "upload-small.zip", 10**9, count=8)
    return big, small


def measure_upload(repo: Path, big: Path, small: Path, work: Path) -> dict:
    """Stage and open ``big`` then ``small`` in a fresh child with a fresh cache root."""
    import shutil

    root = Path(tempfile.mkdtemp(prefix="upload-cache-", dir=work))
    try:
        code = CHILD_UPLOAD.format(args=(str(big), str(small), str(root)))
        env = {**os.environ, "PYTHONPATH": str(repo), "PARALLAX_CACHE": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"peak_mb": float("nan"), "held_mb": float("nan"), "outcome": tail[0][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    out["parquet_dict_bomb"] = _parquet_dict_bomb(work / "dict-bomb.parquet")
    big_csv = work / "big470.csv"
    if not big_csv.exists():
        row = b"a caption of a few words for a picture,some label\n"
        with open(big_csv, "wb") as f:
            f.write(b"text,label\n")
            for _ in range(470):
                f.write(row * (1024**2 // len(row)))
    out["csv_470MiB"] = big_csv
    out["zip_noise_pngs_311MB"] = _noise_png_zip(work / "noise311.zip", 72)
    return out


def _parquet_dict_bomb(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        indices = pa.array(np.zeros(235_000, dtype=np.int32))
        column = pa.DictionaryArray.from_arrays(indices, pa.array(["x" * 20_000]))
        pq.write_table(pa.table({"text": column}), path, compression="zstd")
    return path


def _noise_png_zip(path: Path, count: int) -> Path:
    """``count`` noise PNGs of ~4.3 MB (1200 x 1200 RGB, incompressible), stored."""
    from PIL import Image

    if path.exists():
        return path
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    part = path.with_suffix(".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as zf:
        for k in range(count):
            buf = io.BytesIO()
            Image.fromarray(np.roll(noise, 7 * k, axis=1)).save(buf, "PNG", compress_level=1)
            zf.writestr(f"noise/{k:03d}.png", buf.getvalue())
    part.rename(path)
    return path


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
    ap.add_argument("--upload-mb", type=int, default=120)
    args = ap.parse_args()
    print(f"repo {args.repo}")
    if not args.only or "upload_at_size_limit" in args.only:
        big, small = make_upload_zips(args.work, args.upload_mb)
        got = measure_upload(args.repo, big, small, args.work)
        size = big.stat().st_size / 1024**2
        print(
            f"upload_at_size_limit: {size:.0f} MiB zip, {got.get('items', '?')} images; "
            f"peak staging+opening {got['peak_mb']:.0f} MB, held after a second dataset "
            f"{got['held_mb']:.0f} MB ({got.get('held_without_registry_mb', float('nan')):.0f} "
            f"MB once the registry is dropped) {got.get('outcome', '')}"
        )
        if args.only == ["upload_at_size_limit"]:
            return
    inputs = make_inputs(args.work)
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
