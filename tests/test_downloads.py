"""URL downloads of manifests: one deadline for the whole download, and a disk quota.

A local HTTP server on 127.0.0.1 stands in for the internet (``PARALLAX_ALLOW_PRIVATE_URLS=1``).
"""

from __future__ import annotations

import gc
import http.server
import io
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

import engine.data.manifest as manifest_mod
from engine import settings
from engine.data import open_dataset
from engine.errors import ItemError, QuotaError
from engine.store.cache import Cache


class _Server:
    def __init__(self, handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., _Server]]:
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")  # the server is on loopback
    servers: list[_Server] = []

    def start(handle: Callable[[http.server.BaseHTTPRequestHandler], None]) -> _Server:
        servers.append(_Server(handle))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40 + seed).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_a_server_trickling_the_body_is_cut_at_the_total_deadline(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the deadline covered connect and headers only: a body sent one byte at a time
    (each read succeeding) held the download until the server chose to stop."""
    monkeypatch.setattr(manifest_mod, "DOWNLOAD_DEADLINE_S", 0.5)
    body_bytes = 400
    sent: list[int] = []
    finished = threading.Event()

    def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(body_bytes))
        h.end_headers()
        count = 0
        try:
            for _ in range(body_bytes):
                h.wfile.write(b"\x00")
                h.wfile.flush()
                count += 1
                finished.wait(0.05)  # 20 s for the whole body
        except OSError:
            pass  # the client hung up: what the deadline must cause
        finally:
            sent.append(count)
            finished.set()

    server = serve(trickle)
    with pytest.raises(ItemError, match=r"took longer than 0\.5 s"):
        manifest_mod.download_url(f"{server.url}/slow.png", tmp_path)
    assert finished.wait(30), "the server never noticed the client hang up"
    assert sent[0] < body_bytes  # the body was never read to the end
    assert list(tmp_path.iterdir()) == []  # nothing stored


def test_downloads_quota(tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    images = {f"/{i}.png": png(i) for i in range(4)}

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        body = images[h.path]
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    server = serve(handle)
    size = max(len(b) for b in images.values())
    monkeypatch.setattr(settings, "QUOTA_DOWNLOADS", int(size * 2.5))  # room for two images
    cache_root = tmp_path / "cache"

    def manifest(name: str, paths: list[str]) -> str:
        path = tmp_path / f"{name}.csv"
        path.write_text("image\n" + "".join(f"{server.url}{p}\n" for p in paths))
        return f"manifest:{path}"

    first = open_dataset(manifest("a", ["/0.png", "/1.png"]), cache_root=cache_root)
    assert len(first) == 2 and first.load_image(1).size == (64, 64)
    # While the first manifest is open its downloads stay: two more do not fit.
    with pytest.raises(QuotaError) as err:
        open_dataset(manifest("b", ["/2.png", "/3.png"]), cache_root=cache_root)
    line = str(err.value)
    assert "\n" not in line and "PARALLAX_QUOTA_DOWNLOADS" in line and "downloading" in line
    assert first.load_image(0).size == (64, 64)
    del first
    gc.collect()  # closed: its downloads are the least recently used, and not in use
    second = open_dataset(manifest("b", ["/2.png", "/3.png"]), cache_root=cache_root)
    assert len(second) == 2
    (entry,) = Cache(cache_root).stored("downloads")
    assert entry.bytes == len(images["/2.png"]) + len(images["/3.png"])
