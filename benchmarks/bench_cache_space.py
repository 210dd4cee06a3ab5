"""Benchmark 9: the cache's bookkeeping (issue 12 item 5, issue 21 item 4) against its floors.

* ``cache ls`` / ``cache prune`` over a cache of many files vs one bare ``os.walk`` of it (what
  sizing every entry cannot beat);
* a cached thumbnail sheet read (which records the use for LRU pruning) vs a bare file read;
* staging an upload of many small images, durably (fsyncs eight at a time) vs the same writes
  with one fsync after another;
* a URL whose server trickles the body one byte at a time: how long the download is held,
  vs how long the server would keep sending (the whole-download deadline).

python benchmarks/bench_cache_space.py [--quick] [--json]
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, Reporter, best_of, parser
from PIL import Image

import engine.data.manifest as manifest_mod
from engine.data import open_dataset
from engine.data.thumbnails import get_sheet, sheet_path
from engine.errors import ItemError
from engine.store.atomic import fsync_file
from engine.store.cache import Cache
from engine.store.uploads import UploadFile, stage_upload, unique_names


def fill(root: Path, files: int) -> None:
    """Half the files in one extracted archive, a fifth as thumbnail sheets, the rest as
    downloads: the three kinds that grow with what visitors bring."""
    ext = root / "extracted" / ("e" * 64)
    for i in range(files // 2):
        folder = ext / f"d{i // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(b"x" * 2000)
    (ext / ".complete").write_text("ok\n")
    for i in range(files // 5):
        folder = root / "thumbs" / f"{i // 100:064d}" / "64px-v1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"sheet-{i:06d}.webp").write_bytes(b"y" * 20000)
    for i in range(files - files // 2 - files // 5):
        folder = root / "downloads" / f"{i // 1000:032d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:064d}").write_bytes(b"z" * 5000)


def walk(root: Path) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, check=True,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - t


def sheet_reads(reads: int) -> tuple[float, float]:
    ds = open_dataset("demo:digits")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        get_sheet(ds, 0, cache)  # built once; the reads below find it cached
        path = sheet_path(ds, 0, cache)

        def engine() -> None:
            for _ in range(reads):
                get_sheet(ds, 0, cache)

        def bare() -> None:
            for _ in range(reads):
                path.read_bytes()

        return best_of(engine)[0] / reads, best_of(bare)[0] / reads


def uploads(n: int) -> tuple[float, float]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buf, format="PNG")
    files = [UploadFile(f"{i}.png", buf.getvalue() + i.to_bytes(4, "big")) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        stage_upload(files, "bench", cache=Cache(Path(tmp) / "cache"))
        engine_s = time.perf_counter() - t
        t = time.perf_counter()  # baseline: the same files, one fsync after another
        folder = Path(tmp) / "sequential"
        folder.mkdir()
        for f, name in zip(files, unique_names([f.name for f in files]), strict=True):
            (folder / name).write_bytes(f.data)
            fsync_file(folder / name)
        return engine_s, time.perf_counter() - t


def trickle(body_bytes: int, every_s: float, deadline_s: float) -> float:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(body_bytes))
            self.end_headers()
            try:
                for _ in range(body_bytes):
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(every_s)
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    os.environ["PARALLAX_ALLOW_PRIVATE_URLS"] = "1"
    manifest_mod.DOWNLOAD_DEADLINE_S = deadline_s
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/x"
            t = time.perf_counter()
            with contextlib.suppress(ItemError):  # "took longer than ..." is the expected end
                manifest_mod.download_url(url, Path(tmp))
            return time.perf_counter() - t
    finally:
        httpd.shutdown()
        httpd.server_close()


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("cache_space", args)
    files = 2_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        fill(root, files)
        walk_s, _ = best_of(lambda: walk(root))
        ls_s = min(cli("cache", "ls", "--json", "--cache-dir", str(root)) for _ in range(2))
        noop_s = min(cli("cache", "ls", "--json", "--cache-dir", tmp + "/empty") for _ in range(2))
        prune_s = cli("cache", "prune", "--max-bytes", "0", "--cache-dir", str(root))
    rep.log(f"{files} files: os.walk {walk_s:.2f}s; cache ls {ls_s:.2f}s (empty cache "
            f"{noop_s:.2f}s); prune to 0 {prune_s:.2f}s")  # fmt: skip

    reads = 200 if args.quick else 2000
    sheet_s, bare_s = sheet_reads(reads)
    rep.log(f"cached sheet read {sheet_s * 1e6:.0f} us vs bare read {bare_s * 1e6:.0f} us")

    n = 50 if args.quick else 500
    staged_s, sequential_s = uploads(n)
    rep.log(f"{n}-image upload staged durably in {staged_s:.2f}s; one fsync after another "
            f"{sequential_s:.2f}s")  # fmt: skip

    body, every, deadline = (60, 0.05, 0.5) if args.quick else (400, 0.05, 1.0)
    held_s = trickle(body, every, deadline)
    rep.log(f"trickling body ({body * every:.0f} s to send): download held {held_s:.2f}s, "
            f"deadline {deadline}s")  # fmt: skip

    rep.done(
        {
            "files": files,
            "walk_s": round(walk_s, 3),
            "ls_s": round(ls_s, 3),
            "ls_empty_cache_s": round(noop_s, 3),
            "ls_over_walk": round((ls_s - noop_s) / walk_s, 2),
            "prune_s": round(prune_s, 3),
            "sheet_read_us": round(sheet_s * 1e6, 1),
            "bare_read_us": round(bare_s * 1e6, 1),
            "sheet_read_over_bare": round(sheet_s / bare_s, 2),
            "upload_files": n,
            "upload_staged_s": round(staged_s, 3),
            "upload_sequential_fsync_s": round(sequential_s, 3),
            "upload_speedup": round(sequential_s / staged_s, 2),
            "trickle_body_s": body * every,
            "download_deadline_s": deadline,
            "download_held_s": round(held_s, 2),
        }
    )


if __name__ == "__main__":
    main()
