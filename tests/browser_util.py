"""Helpers for real-browser tests: run a Streamlit app on a free port, drive headless Chromium.

``running_app`` starts ``streamlit run <script>`` (the dashboard by default) in its own process
group with a private ``PARALLAX_CACHE``, waits for ``/_stcore/health`` and stops it afterwards.
``chromium_page`` opens a Playwright page in the system Chromium (never a downloaded browser).
"""

from __future__ import annotations

import contextlib
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
