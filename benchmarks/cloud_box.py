"""The app on a Community-Cloud-sized box: 1 GiB of memory, one CPU, several visitors at once.

    python benchmarks/cloud_box.py [--repo PATH] [--mode full|viewonly] [--visitors 5]
                                   [--zip-mb 300] [--limit-mb 1024] [--json OUT]

Starts ``streamlit run dashboard/app.py`` from ``--repo`` (default: this checkout, so the same
run can be pointed at an older checkout for a before/after table) inside a cgroup-v1 memory
group limited to ``--limit-mb`` (memory and memory+swap) and pinned to one CPU with
``taskset``, with a private, empty cache. Then, from headless Chromium on 127.0.0.1:

1. one visitor opens Home and leaves: the server's resident memory afterwards (idle, warm: the
   page's modules are imported) is the baseline;
2. ``--visitors`` visitors open Home at once and wait for its maps to be drawn;
3. one more visitor uploads a zip of ``--zip-mb`` MB of noise PNGs on the Data page, then a
   213 KB dictionary-encoded Parquet that decodes to ~4.5 GB (the "Parquet bomb"), and reads
   what the page answers;
4. every first visitor reloads Home: it must be drawn again (the server survived for them);
5. everyone leaves; the server's memory is sampled until it settles or 120 s pass.

Prints one JSON object: peak memory of the group (``memory.max_usage_in_bytes``), times the
limit was hit (``failcnt``), whether the server survived, what each visitor saw, the idle,
loaded and after-leaving resident memory and their ratio. Needs root (cgroup) and Debian's
``chromium``. Sends traffic to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CGROUP = Path("/sys/fs/cgroup/memory")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 240_000
# What the Data page answered an upload with: its success line, or its first error line.
ANSWER_JS = """() => { const err = document.querySelector("[data-testid='stAlertContentError']");
  if (err) return 'error: ' + err.innerText;
  const up = document.querySelector("[data-testid='stFileUploader']");
  if (up && /or smaller|too large/i.test(up.innerText)) return 'refused by the uploader: ' +
    up.innerText.split('\\n').find(l => /or smaller|too large/i.test(l));
  const ok = Array.from(document.querySelectorAll('p')).find(
    p => p.innerText.includes('Opened the upload as'));
  return ok ? 'opened: ' + ok.innerText : null; }"""
MAPS_DRAWN_JS = """() => { const m = document.querySelectorAll('.parallax-scatter');
  return m.length > 0 && Array.from(m).every(e => Number(e.dataset.points) > 0); }"""


def noise_zip(path: Path, megabytes: int) -> Path:
    """A zip of PNGs of random pixels (incompressible): ``megabytes`` MB in all."""
    from PIL import Image

    rng = np.random.default_rng(0)
    side = 1200  # ~4.3 MB a PNG
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        i = 0
        while path.stat().st_size < megabytes * 1024**2:
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
            zf.writestr(f"noise/{'ab'[i % 2]}/img-{i:04d}.png", buf.getvalue())
            zf.fp.flush()  # type: ignore[union-attr]
            i += 1
    return path


def parquet_bomb(path: Path, rows: int = 4500, value_mb: int = 1) -> Path:
    """A tiny dictionary-encoded Parquet whose one text value repeats on every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    value = "a" * (value_mb * 1024**2)
    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int32)), pa.array([value]))
    table = pa.table({"text": column, "label": pa.array(["x"] * rows)})
    pq.write_table(table, path, compression="zstd", use_dictionary=True)
    return path


class Box:
    """A cgroup-v1 memory group: limit, peak, failures; removed on exit."""

    def __init__(self, name: str, limit_bytes: int) -> None:
        self.path = CGROUP / name
        self.path.mkdir(exist_ok=True)
        (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        memsw = self.path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(limit_bytes))

    def read(self, name: str) -> int:
        return int((self.path / name).read_text().strip())

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def close(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(OSError):
                (CGROUP / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            self.path.rmdir()


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server not healthy")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_home(browser, url: str) -> tuple[object, object, str]:
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(url, timeout=TIMEOUT_MS)
        page.wait_for_function(MAPS_DRAWN_JS, timeout=TIMEOUT_MS)
        return context, page, "drawn"
    except Exception as exc:  # reported in the table, not raised: the run goes on
        return context, page, f"failed: {type(exc).__name__}"


def upload(browser, url: str, path: Path) -> str:
    """Upload ``path`` on the Data page; the first success or error line the page shows."""
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{url}/data", timeout=TIMEOUT_MS)
        page.get_by_role("tab", name="Upload").click(timeout=TIMEOUT_MS)
        page.set_input_files(
            "[data-testid='stFileUploader'] input[type='file']", str(path), timeout=TIMEOUT_MS
        )
        page.wait_for_function(ANSWER_JS, timeout=TIMEOUT_MS)
        return " ".join(str(page.evaluate(ANSWER_JS)).split())[:200]
    except Exception as exc:
        return f"no answer: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    finally:
        context.close()


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="cloud-box-"))
    zip_path = noise_zip(work / "noise.zip", args.zip_mb)
    bomb = parquet_bomb(work / "bomb.parquet")
    box = Box(f"parallax-box-{os.getpid()}", args.limit_mb * 1024**2)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PARALLAX_CACHE": str(work / "cache"),
        "PARALLAX_IDLE_RELEASE_S": str(args.idle_release_s),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PARALLAX_VIEW_ONLY", None)
    if args.mode == "viewonly":
        env["PARALLAX_VIEW_ONLY"] = "1"
    serve = (
        f"echo $$ > {box.path / 'cgroup.procs'} && exec taskset -c 0 {sys.executable} -m "
        f"streamlit run dashboard/app.py --server.port {port} --server.address 127.0.0.1 "
        "--server.headless true --browser.gatherUsageStats false"
    )
    log = open(work / "server.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        ["bash", "-c", serve],
        cwd=args.repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out: dict = {
        "mode": args.mode,
        "repo": str(args.repo),
        "limit_mb": args.limit_mb,
        "visitors": args.visitors,
        "zip_mb": round(zip_path.stat().st_size / 1024**2),
        "bomb_kb": round(bomb.stat().st_size / 1024),
        "load_before": _load(),
    }
    try:
        wait_healthy(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx, _, first = open_home(browser, url)
            ctx.close()
            out["first_visit"] = first
            time.sleep(args.idle_release_s + 20)  # let the warm-up visit's session go idle
            out["idle_rss_mb"] = round(rss_bytes(box.pids()) / 1024**2)
            visitors = [open_home(browser, url) for _ in range(args.visitors)]
            out["visitors_first"] = [v[2] for v in visitors]
            out["loaded_rss_mb"] = round(rss_bytes(box.pids()) / 1024**2)
            if not args.skip_uploads:
                out["zip_upload"] = upload(browser, url, zip_path)
                out["bomb_upload"] = upload(browser, url, bomb)
                out["uploaded_rss_mb"] = round(rss_bytes(box.pids()) / 1024**2)
            out["server_alive"] = proc.poll() is None
            again = []
            for context, page, _ in visitors:
                try:
                    page.reload(timeout=TIMEOUT_MS)
                    page.wait_for_function(MAPS_DRAWN_JS, timeout=TIMEOUT_MS)
                    again.append("drawn")
                except Exception as exc:
                    again.append(f"failed: {type(exc).__name__}")
                context.close()
            out["visitors_after_uploads"] = again
            browser.close()
        samples = []
        # Streamlit keeps a closed tab's session for server.disconnectedSessionTTL (120 s)
        # before it drops it; then the idle release (and its heap trim) can hand memory back.
        deadline = time.monotonic() + args.idle_release_s + 240
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(5)
            samples.append(round(rss_bytes(box.pids()) / 1024**2))
            settled = len(samples) >= 4 and max(samples[-4:]) - min(samples[-4:]) < 5
            if settled and time.monotonic() > deadline - 60:
                break
        out["after_rss_mb"] = samples[-1] if samples else None
        out["after_over_idle"] = (
            round(samples[-1] / out["idle_rss_mb"], 2) if samples and out["idle_rss_mb"] else None
        )
        out["server_alive_end"] = proc.poll() is None
    finally:
        out["peak_mb"] = round(box.read("memory.max_usage_in_bytes") / 1024**2)
        out["failcnt"] = box.read("memory.failcnt")
        out["load_after"] = _load()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        oom = [ln for ln in (work / "server.log").read_text().splitlines() if "Killed" in ln]
        out["server_log_killed"] = bool(oom)
        box.close()
    return out


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO)
    ap.add_argument("--mode", choices=("full", "viewonly"), default="full")
    ap.add_argument("--visitors", type=int, default=5)
    ap.add_argument("--zip-mb", type=int, default=300)
    ap.add_argument("--limit-mb", type=int, default=1024)
    ap.add_argument("--idle-release-s", type=float, default=30.0)
    ap.add_argument("--skip-uploads", action="store_true", help="visitors only (a baseline)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    result = run(args)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
