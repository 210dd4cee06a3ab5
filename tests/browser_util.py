"""Helpers for real-browser tests: run a Streamlit app on a free port, drive headless Chromium.

``running_app`` starts ``streamlit run <script>`` (the dashboard by default) in its own process
group with a private ``PARALLAX_CACHE``, waits for ``/_stcore/health`` and stops it afterwards.
``chromium_page`` opens a Playwright page in the system Chromium (never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DEFAULT_TIMEOUT_MS = 120_000


def chromium_available() -> bool:
    if not Path(CHROMIUM).is_file():
        return False
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} was not healthy after {timeout_s:.0f}s ({last})")


@contextlib.contextmanager
def running_app(
    cache_dir: Path,
    script: str | Path = "dashboard/app.py",
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 120,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Yield the base URL of ``streamlit run script`` serving with ``PARALLAX_CACHE=cache_dir``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    full_env = {**os.environ, "PARALLAX_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    full_env |= env or {}
    log_path = log_path or (Path(cache_dir) / f"streamlit-{port}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_healthy(url, timeout_s, proc)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


@contextlib.contextmanager
def chromium_page(width: int = 1500, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            # Playwright's implicit waits (a click waiting for its element) get the time a busy
            # 2-core machine needs, as the tests' explicit waits do.
            page.set_default_timeout(DEFAULT_TIMEOUT_MS)
            yield page
        finally:
            browser.close()


def wait_for_app_idle(page: Any, timeout_ms: int = 120_000) -> None:
    """Wait until Streamlit has finished running the script (no 'running' status widget)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector(\"[data-testid='stStatusWidget']\")"
        " || !document.querySelector(\"[data-testid='stStatusWidget']\").innerText"
        ".match(/Running|Connecting/i)",
        timeout=timeout_ms,
    )


# -- what the map component announces ---------------------------------------------------------
# Shared by the browser tests: each map element's explicit ``data-*`` state, and the screen
# positions of its points as the drawing library reports them.

# What each map element reports: its state, points drawn and selected, the linked hovered row,
# the positions drawn, the points' extent on the canvas, the canvas size; and its title, its
# status line (why it could not be drawn, or a note), and where its header and canvas sit.
MAP_INFO_JS = """() => Array.from(document.querySelectorAll('.parallax-scatter')).map(e => {
  const wrap = e.querySelector('.ps-canvas'), num = (s) => (s || '').split(' ').map(Number);
  return {
    id: e.dataset.mapId, points: Number(e.dataset.points), selected: Number(e.dataset.selected),
    state: e.dataset.state, hovered: e.dataset.hovered, key: e.dataset.pointsKey,
    extent: num(e.dataset.extent), canvas: num(e.dataset.canvas),
    size: [wrap.clientWidth, wrap.clientHeight],
    title: e.querySelector('.ps-title').textContent,
    status: e.querySelector('.ps-status').textContent,
    titleTop: e.querySelector('.ps-title').getBoundingClientRect().top,
    canvasTop: wrap.getBoundingClientRect().top,
  }; })"""

# Screen positions of every row of map ``m`` (page order), relative to its canvas: [[x, y], ...].
CANVAS_ROWS_JS = """(m) => {
  const root = document.querySelectorAll('.parallax-scatter')[m];
  const inst = window.__parallaxMaps.maps.get(root.dataset.mapId), out = [];
  for (let i = 0; i < inst.n; i++) out.push(inst.sp.getScreenPosition(i));
  return out;
}"""

MARGIN_PX = 5  # every point's centre at least this far inside its frame (points are 5 px wide)


def drawn_js(maps: int, n: int, title: str = "", not_keys: tuple[str, ...] = ()) -> str:
    """``maps`` maps, each drawn with ``n`` points, titled with ``title``, its positions none of
    ``not_keys`` (positions drawn before a change), and its canvas size taken into account."""
    return (
        f"() => {{ const m = ({MAP_INFO_JS})(); return m.length === {maps} && m.every(x => "
        f"x.state === 'drawn' && x.points === {n} && x.title.includes({json.dumps(title)}) && "
        f"!{json.dumps(list(not_keys))}.includes(x.key) && "
        "x.canvas[0] === x.size[0] && x.canvas[1] === x.size[1]); }"
    )


def map_infos(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(MAP_INFO_JS)


def assert_framed(page: Any, *, fill: bool) -> list[dict[str, Any]]:
    """Check every map frames every one of its points: each point's centre (all of them, read
    from the library) lies at least MARGIN_PX inside the canvas; the extent the map announces
    is theirs. ``fill``: the points also span most of the frame in one direction (they are not
    crammed into a corner). Returns the maps' infos."""
    import numpy as np

    maps = map_infos(page)
    for m, info in enumerate(maps):
        xy = np.array(page.evaluate(CANVAS_ROWS_JS, m))
        width, height = info["canvas"]
        assert [width, height] == info["size"], info
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        assert np.allclose(info["extent"], [lo[0], lo[1], hi[0], hi[1]], atol=0.6), (info, lo, hi)
        assert lo.min() >= MARGIN_PX, (m, info["title"], lo, (width, height))
        assert hi[0] <= width - MARGIN_PX and hi[1] <= height - MARGIN_PX, (m, info, hi)
        if fill:
            spans = (hi - lo) / [width, height]
            assert spans.max() >= 0.75, (m, info["title"], spans)
    return maps


# -- what the sidebar names --------------------------------------------------------------------
# ``dashboard.state.sidebar`` writes a "Dataset" heading and its spec as a code line, then a
# "Models" (or "Maps") heading and one code line per model. This reads them back in page order:
# {dataset: spec or null, caption: its size line, heading: "Models" | "Maps", models: [spec, ...]};
# null when the sidebar has not been written (or is stale: left over from the run before).
SIDEBAR_JS = """() => {
  const box = document.querySelector("[data-testid='stSidebarUserContent']");
  // an element still loading its code (a Suspense skeleton) is not written yet
  if (!box || box.querySelector("[data-testid='stSkeleton']")) return null;
  const out = {dataset: null, caption: null, heading: null, models: []};
  let section = null;
  for (const el of box.querySelectorAll("[data-testid='stElementContainer']")) {
    if (el.dataset.stale === 'true') return null;
    const code = el.querySelector("[data-testid='stCode'] code, [data-testid='stCode'] pre");
    const md = el.querySelector("[data-testid='stMarkdown']");
    const caption = el.querySelector("[data-testid='stCaptionContainer']");
    if (caption) {
      if (section === 'dataset' && out.caption === null) out.caption = caption.textContent.trim();
    } else if (code) {
      const text = code.textContent.trim();
      if (section === 'dataset' && out.dataset === null) out.dataset = text;
      else if (section === 'models') out.models.push(text);
    } else if (md) {
      const text = md.textContent.trim();
      if (text === 'Dataset') section = 'dataset';
      else if (text === 'Models' || text === 'Maps') { section = 'models'; out.heading = text; }
    }
  }
  return out.heading === null ? null : out;
}"""


# The page titled ``title`` has finished its run: its heading is shown, no element is left
# over from the run before, Streamlit says the script is not running (``stApp``'s
# ``data-test-script-state``, set when the run's last message is in), and the sidebar is
# written (what it names, else null).
PAGE_SETTLED_JS = (
    """(title) => {
  const h = document.querySelector("[data-testid='stMain'] h1");
  if (!h || h.textContent.trim() !== title) return false;
  if (document.querySelector("[data-stale='true']")) return false;
  // Streamlit's own run state: "notRunning" once the script's last message has been applied
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.dataset.testScriptState !== 'notRunning') return false;
  return ("""
    + SIDEBAR_JS
    + """)();
}"""
)


def wait_for_page(page: Any, title: str, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> dict[str, Any]:
    """Wait until the page titled ``title`` has run to its end (``PAGE_SETTLED_JS``); returns
    what its sidebar named then (read in the same check: a later rerun cannot slip between)."""
    return page.wait_for_function(PAGE_SETTLED_JS, arg=title, timeout=timeout_ms).json_value()
