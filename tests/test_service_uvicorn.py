"""The service as users start it (``python -m engine serve``): a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from tests.browser_util import chromium_available, chromium_page  # noqa: E402
from tests.service_util import SHAPES, shapes_items  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PARALLAX_API_KEYS": KEY, "HF_HUB_OFFLINE": "1"}
    env.pop("PARALLAX_SERVER_PATHS", None)
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--port",
        str(port),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError("server did not start within 120 s")
    yield base, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_served_as_documented(server):
    base, proc = server
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=base, timeout=120) as c:
        assert c.get("/v1/health").json()["auth"] is True
        assert c.get("/v1/models").status_code == 401  # a missing key is refused
        # The API page and its assets come from the service itself, without a key.
        docs = c.get("/docs")
        assert docs.status_code == 200 and "https://" not in docs.text
        assert c.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
        # Predicts the shape of an uploaded drawing with the shipped CLIP.
        data, truth = shapes_items(1)[0]
        r = c.post(
            "/v1/predict",
            headers=auth,
            data={"labels": ",".join(SHAPES), "models": "demo:shapes-clip"},
            files=[("files", ("drawing.png", data, "image/png"))],
        )
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["images"][0][0]["label"] == truth
        # A corrupt image is a clear 4xx JSON error.
        r = c.post(
            "/v1/predict",
            headers=auth,
            data={"labels": "a,b"},
            files=[("files", ("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png"))],
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_image"

    # 64 concurrent requests, no error.
    def one(i: int) -> int:
        with httpx.Client(base_url=base, timeout=120) as c:
            if i % 2:
                body = {"model": "baseline:text", "input": [f"text {i}"]}
                return c.post("/v1/embeddings", headers=auth, json=body).status_code
            return c.post(
                "/v1/predict",
                headers=auth,
                data={"labels": ",".join(SHAPES), "models": "demo:shapes-clip"},
                files=[("files", ("d.png", data, "image/png"))],
            ).status_code

    with ThreadPoolExecutor(max_workers=64) as pool:
        codes = list(pool.map(one, range(64)))
    assert codes == [200] * 64

    # Graceful shutdown on SIGTERM: uvicorn finishes, then re-raises the signal (its own
    # convention since 0.29), so the exit status is -SIGTERM after a clean shutdown log.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    log = proc.stdout.read()
    assert "Waiting for application shutdown." in log and "Finished server process" in log
    assert "Traceback" not in log


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright")
def test_the_api_page_renders_offline_in_a_browser(server):
    """/docs in headless Chromium with every request outside the service blocked: the page
    draws every operation of the schema (FastAPI's default page is blank without a CDN)."""
    base, _ = server
    schema = httpx.get(f"{base}/openapi.json", timeout=60).json()
    operations = sum(len(ops) for ops in schema["paths"].values())
    outside: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with chromium_page() as page:
        page.route("**/*", only_the_service)
        page.goto(f"{base}/docs")
        page.wait_for_function(
            f"() => document.querySelectorAll('.opblock').length === {operations}",
            timeout=120_000,
        )
    assert outside == []
