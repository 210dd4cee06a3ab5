"""The HTTP door's limits (issue #27): each refusal is one JSON line, before the work it guards.

Bodies whatever their transfer encoding, predictions bounded by models x labels x inputs and by
pixels across a request, embed jobs estimated and queued under bounds, records that expire,
model specs from an allow-list, no server path in what a client receives, and no anonymous
service on a public address.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from engine.http import create_app
from engine.http.jobs import JobStore, QueueFull
from engine.http.settings import ServiceSettings, is_loopback
from tests.service_util import SHAPES, png_bytes, shapes_items

REPO = Path(__file__).resolve().parent.parent
MB = 1024**2


@pytest.fixture
def make_client(cache_root, monkeypatch):
    monkeypatch.delenv("PARALLAX_SERVER_PATHS", raising=False)
    opened: list[TestClient] = []

    def make(**settings: object) -> TestClient:
        c = TestClient(create_app(ServiceSettings(**settings), cache_root))
        opened.append(c.__enter__())
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _error(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code, body
    assert "\n" not in body["error"]["message"]
    return body["error"]["message"]


JSON_TYPE = "application/json"
PART_TYPE = "multipart/form-data; boundary=zzz"
PART = (
    b'--zzz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


def _post_chunked(client: TestClient, path: str, content_type: str, chunks: int, size: int):
    """POST ``chunks`` chunks of ``size`` bytes straight to the ASGI app, as a server passes a
    body sent without a Content-Length, counting the chunks the app pulled. (The test client
    would read a streamed body whole before handing it over.)"""
    state = {"pulled": 0, "sent": []}

    async def receive():
        state["pulled"] += 1
        more = state["pulled"] < chunks
        # A multipart body opens a file part, then streams its bytes.
        head = PART if state["pulled"] == 1 and content_type.startswith("multipart") else b""
        return {"type": "http.request", "body": head + b"x" * size, "more_body": more}

    async def send(message):
        state["sent"].append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", content_type.encode()), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    client.portal.call(client.app, scope, receive, send)
    start = next(m for m in state["sent"] if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in state["sent"] if m["type"] == "http.response.body")
    return start["status"], json.loads(body), state["pulled"]


# -- bodies -----------------------------------------------------------------------------------
def test_a_chunked_body_is_counted_as_it_streams_and_cut_at_the_limit(make_client):
    c = make_client(max_body_bytes=1 * MB)
    size = 64 * 1024
    for path, kind in [
        ("/v1/embeddings", "application/json"),
        ("/v1/search", "application/json"),
        ("/v1/embeddings", PART_TYPE),
        ("/v1/predict", PART_TYPE),
        ("/v1/jobs/embed", "application/json"),
    ]:
        status, body, pulled = _post_chunked(c, path, kind, chunks=100, size=size)  # 6.4 MB
        assert status == 413 and body["error"]["code"] == "too_large", (path, body)
        assert pulled <= 1 * MB // size + 1, (path, pulled)  # cut at the limit, never read whole
    # A declared length over the limit is refused before a byte is read.
    sized = c.post(
        "/v1/embeddings",
        content=b"x" * (2 * MB),
        headers={"content-type": "application/json"},
    )
    _error(sized, 413, "too_large")
    # JSON has its own, smaller limit: parsing takes several times its size in memory.
    small_json = make_client(max_body_bytes=64 * MB, max_json_bytes=1 * MB)
    status, body, pulled = _post_chunked(
        small_json, "/v1/embeddings", "application/json", 100, size
    )
    assert status == 413 and "1 MB" in body["error"]["message"] and pulled <= 17
    status, body, pulled = _post_chunked(small_json, "/v1/predict", PART_TYPE, 30, size)
    assert status != 413 and pulled == 30  # 1.9 MB of upload is under the multipart limit
    # Under the limit, a chunked JSON body works.
    ok = iter([b'{"model": "baseline:text", ', b'"input": ["a cat"]}'])
    r = c.post("/v1/embeddings", content=ok, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["dim"] == 256


def test_a_missing_key_is_refused_before_the_body_is_read(make_client):
    c = make_client(api_keys=("k1",), max_body_bytes=64 * MB)
    status, body, pulled = _post_chunked(c, "/v1/embeddings", "application/json", 100, 65536)
    assert status == 401 and body["error"]["code"] == "unauthorized" and pulled == 0
    assert c.get("/docs").status_code == 200 and c.get("/openapi.json").status_code == 200


# -- predict ----------------------------------------------------------------------------------
def test_predict_is_bounded_before_any_model_loads(make_client):
    c = make_client(max_predict_models=2, max_predict_work=50, max_label_chars=20)
    data, _ = shapes_items(1)[0]
    one = [("files", ("a.png", data, "image/png"))]
    too_many_models = {"labels": "a,b", "models": "baseline:text,baseline:pixels,demo:shapes-clip"}
    _error(c.post("/v1/predict", data=too_many_models, files=one), 413, "too_many_items")
    long_label = {"labels": "circle," + "x" * 21, "models": "demo:shapes-clip"}
    assert "20" in _error(c.post("/v1/predict", data=long_label, files=one), 400, "bad_request")
    # 2 models x (30 labels x 1 prompt + 1 input) = 62 > 50
    labels = ",".join(f"l{i}" for i in range(30))
    work = {"labels": labels, "models": "demo:shapes-clip,demo:shapes-clip-small"}
    _error(c.post("/v1/predict", data=work, files=one), 413, "too_much_work")
    # The same labels with one model fit (31 <= 50) and are answered.
    fits = c.post("/v1/predict", data={**work, "models": "demo:shapes-clip"}, files=one)
    assert fits.status_code == 200, fits.text
    assert len(fits.json()["predictions"]) == 1


def test_images_are_bounded_by_pixels_across_the_request(make_client):
    c = make_client(max_request_pixels=30_000_000)
    big = png_bytes(Image.new("1", (4000, 4000)))  # 16 M pixels in a few kB
    files = [("files", (f"{i}.png", big, "image/png")) for i in range(2)]
    data = {"labels": ",".join(SHAPES), "models": "demo:shapes-clip"}
    assert "pixels" in _error(c.post("/v1/predict", data=data, files=files), 413, "too_large")
    r = c.post("/v1/embeddings", data={"model": "baseline:pixels"}, files=files)
    _error(r, 413, "too_large")
    # One of them is under the request's budget (and the per-image limit).
    assert c.post("/v1/predict", data=data, files=files[:1]).status_code == 200


# -- models -----------------------------------------------------------------------------------
def test_model_specs_come_from_the_allow_list(make_client, monkeypatch):
    """The service asks the workspace's visitor policy, the same as every door: no random or
    arbitrary architectures, nothing the model table does not list, and the operator's
    ``PARALLAX_VISITOR_MODELS`` on top of the shipped and catalogued models."""
    from engine import settings

    monkeypatch.setattr(settings, "VISITOR_MODELS", ("hf:someone/listed-model",))
    c = make_client()
    for spec in [
        "open_clip:ViT-B-32/random",
        "open_clip:ViT-bigG-14/random",
        "hf:someone/some-model",
        "nope:x",
    ]:
        r = c.post("/v1/embeddings", json={"model": spec, "input": "a"})
        assert "is refused" in _error(r, 403, "forbidden")
        job = {"dataset": "demo:digits", "model": spec}
        _error(c.post("/v1/jobs/embed", json=job), 403, "forbidden")
        predict = {"labels": "a,b", "models": spec, "texts": "hello"}
        _error(c.post("/v1/predict", data=predict), 403, "forbidden")
    listed = [m["spec"] for m in c.get("/v1/models").json()["models"]]
    assert "st:all-mpnet-base-v2" in listed and "demo:shapes-clip" in listed
    assert c.post("/v1/embeddings", json={"model": "baseline:text", "input": "a"}).is_success
    # Listed by the operator: past the allow-list (it then fails to load offline, one line).
    r = c.post("/v1/embeddings", json={"model": "hf:someone/listed-model", "input": "a"})
    assert r.status_code != 403, r.text


# -- jobs -------------------------------------------------------------------------------------
def test_an_embed_job_past_the_disk_budget_is_refused_up_front(make_client, cache_root):
    c = make_client(job_max_bytes=1 * MB)  # digits x pixels: 1797 x 768 x 4 = 5.3 MB
    body = {"dataset": "demo:digits", "model": "baseline:pixels"}
    assert "MB" in _error(c.post("/v1/jobs/embed", json=body), 413, "too_large")
    assert not list((cache_root / "jobs").glob("*.json"))  # nothing queued, nothing written


def test_embed_jobs_are_queued_under_bounds(make_client):
    c = make_client(max_jobs_per_client=1, max_jobs=2)
    release = threading.Event()
    store = c.app.state.service.jobs
    real = store.runner

    def held(job, progress):  # the job waits until the test lets it run
        release.wait(timeout=120)
        return real(job, progress)

    store.runner = held
    first = c.post("/v1/jobs/embed", json={"dataset": "demo:digits", "model": "baseline:pixels"})
    assert first.status_code == 202 and first.json()["estimate_bytes"] == 1797 * 768 * 4
    again = c.post("/v1/jobs/embed", json={"dataset": "demo:digits", "model": "baseline:pixels"})
    assert again.json()["id"] == first.json()["id"]  # the same unfinished job, not a new one
    other = {"dataset": "demo:sentences", "model": "baseline:text"}
    assert "per client" in _error(c.post("/v1/jobs/embed", json=other), 429, "too_many_jobs")
    # Another client (another key or address) may still queue one, up to the total.
    store.submit("demo:sentences", "baseline:text", client="addr:elsewhere")
    with pytest.raises(QueueFull):
        store.submit("demo:shapes?n=100", "baseline:text", client="addr:third")
    release.set()


def test_finished_job_records_expire(tmp_path):
    now = [1000.0]

    def runner(job, progress):
        return {"n": 1}

    store = JobStore(tmp_path / "jobs", runner, ttl_s=60.0, clock=lambda: now[0])
    job = store.submit("demo:digits", "baseline:pixels")
    store.shutdown(wait=True)  # the worker ran the job
    assert store.get(job["id"])["status"] == "done"
    assert (tmp_path / "jobs" / f"{job['id']}.json").is_file()
    now[0] += 61.0
    with pytest.raises(Exception, match="no job"):
        store.get(job["id"])
    assert not (tmp_path / "jobs" / f"{job['id']}.json").exists()


# -- what a client receives -------------------------------------------------------------------
def test_no_server_path_in_answers_or_errors(make_client, cache_root, tmp_path, monkeypatch):
    from engine import settings

    allowed = tmp_path / "srv" / "allowed"
    allowed.mkdir(parents=True)
    monkeypatch.setenv("PARALLAX_SERVER_PATHS", str(allowed))
    c = make_client()
    texts = [c.get("/v1/models").text, c.get("/v1/datasets").text]
    r = c.post("/v1/jobs/embed", json={"dataset": "folder:/etc", "model": "baseline:pixels"})
    texts.append(_error(r, 403, "forbidden"))
    assert "PARALLAX_SERVER_PATHS" in texts[-1]
    job = c.post("/v1/jobs/embed", json={"dataset": "demo:sentences", "model": "baseline:text"})
    job_id = job.json()["id"]
    c.app.state.service.jobs.shutdown(wait=True)  # let the job finish
    record = c.get(f"/v1/jobs/{job_id}").json()
    assert record["status"] == "done" and "path" not in record["result"]
    texts.append(str(record))
    for text in texts:
        for server_path in (str(cache_root), str(settings.REPO_ROOT), str(tmp_path)):
            assert server_path not in text, (server_path, text[:300])


# -- starting the service ---------------------------------------------------------------------
def test_serve_on_a_public_address_without_keys_refuses_to_start(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0"]
    cmd += ["--cache-dir", str(tmp_path / "c")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-anonymous" in lines[0] and "0.0.0.0" in lines[0]
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.1.1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "example.org"))
