"""The HTTP service through FastAPI's test client: every route, its errors, auth, hostile input."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from engine.embed.local import embed_dataset
from engine.http import create_app
from engine.http.batching import DynamicBatcher
from engine.http.settings import ServiceSettings
from engine.maps.project import project
from engine.store.cache import Cache
from tests.service_util import SHAPES, png_bytes, shapes_items


@pytest.fixture
def client(cache_root, monkeypatch):
    monkeypatch.delenv("PARALLAX_SERVER_PATHS", raising=False)
    app = create_app(ServiceSettings(), Cache(cache_root))
    with TestClient(app) as c:
        yield c


def _error(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code
    assert "\n" not in body["error"]["message"] and "Traceback" not in body["error"]["message"]
    return body["error"]["message"]


def test_health_lists_and_openapi(client):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["auth"] is False
    specs = [d["spec"] for d in client.get("/v1/datasets").json()["datasets"]]
    assert "demo:digits" in specs
    models = [m["spec"] for m in client.get("/v1/models").json()["models"]]
    assert "baseline:pixels" in models and "demo:shapes-clip" in models
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    _error(client.get("/v1/nothing"), 404, "not_found")


def test_openapi_is_valid_and_describes_every_body(client):
    from openapi_spec_validator import validate

    schema = client.get("/openapi.json").json()
    validate(schema)  # raises with the first problem
    posts = {p: ops["post"] for p, ops in schema["paths"].items() if "post" in ops}
    forms = {"/v1/embeddings/images", "/v1/predict", "/v1/search/image"}
    assert set(posts) == forms | {"/v1/embeddings", "/v1/search", "/v1/jobs/embed", "/v1/findings"}
    components = schema["components"]["schemas"]
    for path, op in posts.items():
        body = op["requestBody"]
        assert body["required"] is True, path
        (kind,) = body["content"]  # one kind of body per operation: one typed client call
        assert kind == ("multipart/form-data" if path in forms else "application/json"), path
        form = components[body["content"][kind]["schema"]["$ref"].rsplit("/", 1)[-1]]
        assert form["properties"] and form.get("required"), path
        if path in forms:  # files as generators read them
            assert '"format": "binary"' in json.dumps(form["properties"]), path
    predict_form = posts["/v1/predict"]["requestBody"]["content"]["multipart/form-data"]
    assert "labels" in components[predict_form["schema"]["$ref"].rsplit("/", 1)[-1]]["required"]
    maps = schema["paths"]["/v1/maps/{dataset}/{model}"]["get"]
    declared = {p["name"]: p["in"] for p in maps["parameters"]}
    assert declared == {"dataset": "path", "model": "path", "method": "query", "seed": "query"}
    # Errors are documented with their shape.
    assert "ErrorResponse" in str(posts["/v1/predict"]["responses"]["413"])


def test_docs_load_every_asset_from_the_service(client):
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", page.text), "an outside URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assets += re.findall(r"url: '([^']+)'", page.text)
    assert len(assets) >= 4  # the script, the stylesheet, the favicon, the schema
    for asset in assets:
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200, asset
    assert client.get("/favicon.ico").headers["content-type"] == "image/png"
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN: not served


def test_auth_when_keys_are_configured(cache_root):
    app = create_app(ServiceSettings(api_keys=("k1", "k2")), Cache(cache_root))
    with TestClient(app) as c:
        assert c.get("/v1/health").status_code == 200  # health stays open
        _error(c.get("/v1/models"), 401, "unauthorized")
        _error(c.get("/v1/models", headers={"Authorization": "Bearer nope"}), 401)
        _error(c.get("/v1/models", headers={"Authorization": "Basic k1"}), 401)
        assert c.get("/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
        body = {"model": "baseline:text", "input": ["a"]}
        _error(c.post("/v1/embeddings", json=body), 401)


def test_no_cors_unless_configured(cache_root):
    origin = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(ServiceSettings(), Cache(cache_root))) as c:
        r = c.get("/v1/health", headers=origin)
        assert "access-control-allow-origin" not in r.headers
    app = create_app(ServiceSettings(cors_origins=("https://ok.example",)), Cache(cache_root))
    with TestClient(app) as c:
        r = c.get("/v1/health", headers={"Origin": "https://ok.example"})
        assert r.headers["access-control-allow-origin"] == "https://ok.example"


def test_text_embeddings_match_the_engine(client):
    from engine.models import load_model

    r = client.post("/v1/embeddings", json={"model": "baseline:text", "input": ["a cat", "tea"]})
    body = r.json()
    assert r.status_code == 200 and body["model"] == "baseline:text" and body["dim"] == 256
    assert [d["index"] for d in body["data"]] == [0, 1]
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = load_model("baseline:text").embed_texts(["a cat", "tea"])
    np.testing.assert_allclose(got, want, atol=1e-6)
    single = client.post("/v1/embeddings", json={"model": "baseline:text", "input": "one"})
    assert len(single.json()["data"]) == 1


def test_image_embeddings_and_errors(client):
    files = [("files", ("a.png", png_bytes(Image.new("RGB", (20, 20), (255, 0, 0))), "image/png"))]
    r = client.post("/v1/embeddings", data={"model": "baseline:pixels"}, files=files)
    assert r.status_code == 200 and r.json()["modality"] == "image" and r.json()["dim"] == 768
    bad = [("files", ("b.png", b"not an image at all", "image/png"))]
    assert "b.png" in _error(
        client.post("/v1/embeddings", data={"model": "baseline:pixels"}, files=bad),
        400,
        "bad_image",
    )
    _error(
        client.post("/v1/embeddings", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    _error(
        client.post("/v1/embeddings", content=b"{", headers={"content-type": "application/json"}),
        400,
    )
    # A model kind the model table does not list is refused by default (the visitor policy).
    _error(client.post("/v1/embeddings", json={"model": "nope:x", "input": "a"}), 403)
    _error(client.post("/v1/embeddings", json={"input": "a"}), 400)
    _error(
        client.post("/v1/embeddings", json={"model": "baseline:pixels", "input": "a"}),
        422,
        "wrong_modality",
    )
    _error(
        client.post("/v1/embeddings", json={"model": "baseline:text", "input": ["a"] * 999}),
        413,
        "too_many_items",
    )
    _error(client.post("/v1/embeddings", json={"model": "baseline:text", "input": [1, 2]}), 400)


def test_visitor_policy_applies_to_model_and_dataset_specs(client, tmp_path):
    (tmp_path / "m").mkdir()
    for spec in [
        f"hf:{tmp_path / 'm'}",
        "hf:/",
        f"open_clip:local-dir:{tmp_path}",
        "hf:org/name?trust_remote_code=1",
        f"st:{tmp_path}",
    ]:
        _error(client.post("/v1/embeddings", json={"model": spec, "input": "a"}), 403, "forbidden")
    body = {"dataset": f"folder:{tmp_path}", "model": "baseline:pixels"}
    _error(client.post("/v1/jobs/embed", json=body), 403, "forbidden")
    body = {"dataset": "folder:/etc", "model": "baseline:pixels", "query": "x"}
    _error(client.post("/v1/search", json=body), 403, "forbidden")


def test_predict_shapes_with_the_shipped_clip(client):
    items = shapes_items(5)
    files = [("files", (f"{i}.png", data, "image/png")) for i, (data, _) in enumerate(items)]
    data = {"labels": ",".join(SHAPES), "models": "demo:shapes-clip,baseline:pixels"}
    r = client.post("/v1/predict", data=data, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["labels"] == SHAPES and len(body["inputs"]) == 5
    clip, pixels = body["predictions"]
    assert clip["model"] == "demo:shapes-clip" and clip["error"] is None
    top1 = [answer[0]["label"] for answer in clip["images"]]
    assert sum(t == truth for t, (_, truth) in zip(top1, items, strict=True)) >= 4
    probs = [sum(a["prob"] for a in answer) for answer in clip["images"]]
    assert all(0 < p <= 1.0001 for p in probs) and clip["latency_ms"] > 0
    assert pixels["error"] and "CLIP" in pixels["error"]  # pixels has no text tower: one line
    assert clip["warnings"] == []  # shapes it knows: nothing to warn about
    # Labels outside the shipped CLIP's vocabulary: it says it cannot answer.
    odd = {"labels": "astronaut,cat,coffee", "models": "demo:shapes-clip"}
    warned = client.post("/v1/predict", data=odd, files=files[:1]).json()["predictions"][0]
    assert warned["warnings"] and any("astronaut" in w for w in warned["warnings"])
    bad = [("files", ("x.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg"))]
    _error(client.post("/v1/predict", data=data, files=bad), 400, "bad_image")
    _error(client.post("/v1/predict", data={"models": "demo:shapes-clip"}, files=files[:1]), 400)
    _error(client.post("/v1/predict", data={"labels": "a,b"}), 400)


def test_hostile_uploads_are_4xx_never_500(client):
    bomb = io.BytesIO()
    Image.new("1", (30_000, 30_000)).save(bomb, format="PNG")  # a few hundred kB, 900 M pixels
    cases = {
        "bomb.png": bomb.getvalue(),
        "empty.png": b"",
        "text.png": b"hello, I am not a picture",
        "half.png": png_bytes(Image.new("RGB", (64, 64), (9, 9, 9)))[:40],
    }
    for name, data in cases.items():
        r = client.post(
            "/v1/embeddings",
            data={"model": "baseline:pixels"},
            files=[("files", (name, data, "image/png"))],
        )
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        _error(r, r.status_code)
    many = [("files", (f"{i}.png", b"x", "image/png")) for i in range(65)]
    _error(client.post("/v1/embeddings", data={"model": "baseline:pixels"}, files=many), 413)


def test_embed_job_progress_result_and_resume(client, cache_root):
    r = client.post("/v1/jobs/embed", json={"dataset": "demo:digits", "model": "baseline:pixels"})
    assert r.status_code == 202
    job_id = r.json()["id"]
    deadline = time.time() + 120
    while time.time() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.2)
    assert job["status"] == "done", job
    assert job["result"]["n"] == 1797 and job["progress"]["done"] == 1797
    assert "cache_root" not in job
    # The same cache entry as the CLI's: a local embed finds it cached.
    cached = embed_dataset("demo:digits", "baseline:pixels", cache=Cache(cache_root))
    assert cached.cached and cached.key == job["result"]["key"]
    _error(client.get("/v1/jobs/0000"), 404, "not_found")
    _error(client.post("/v1/jobs/embed", json={"dataset": "demo:digits"}), 400)


def test_a_job_left_running_by_a_dead_server_resumes(cache_root):
    from engine.store.cache import atomic_write_json

    folder = cache_root / "jobs"
    folder.mkdir()
    record = {
        "id": "deadbeef00000000",
        "kind": "embed",
        "dataset": "demo:sentences",
        "model": "baseline:text",
        "modality": None,
        "cache_root": str(cache_root),
        "status": "running",
        "created": 1.0,
        "updated": 1.0,
        "progress": {},
        "result": None,
        "error": None,
    }
    atomic_write_json(folder / "deadbeef00000000.json", record)
    with TestClient(create_app(ServiceSettings(), Cache(cache_root))) as c:
        deadline = time.time() + 120
        while time.time() < deadline:
            job = c.get("/v1/jobs/deadbeef00000000").json()
            if job["status"] == "done":
                break
            time.sleep(0.2)
        assert job["status"] == "done" and job["resumed"] == 1 and job["result"]["n"] == 360


def test_search_text_and_image_queries(client, cache_root):
    spec = "demo:shapes?n=200&seed=0"
    body = {"dataset": spec, "model": "demo:shapes-clip", "query": "a red circle", "k": 5}
    _error(client.post("/v1/search", json=body), 404, "not_embedded")
    vectors = embed_dataset(spec, "demo:shapes-clip", cache=Cache(cache_root)).vectors()
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert len(hits) == 5 and r.json()["index"] == "exact"
    # The same answer as brute-force cosine similarity against the model's own text vector.
    from engine.models import load_model

    q = load_model("demo:shapes-clip").embed_texts(["a red circle"])[0]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ (q / np.linalg.norm(q))
    assert [h["index"] for h in hits] == np.argsort(-cosine)[:5].tolist()
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(cosine)[::-1][:5], atol=1e-5)
    assert sum(h["label"] == "circle" for h in hits) >= 2  # chance would be 5/8 of one
    data, truth = shapes_items(1)[0]
    r = client.post(
        "/v1/search",
        data={"dataset": spec, "model": "demo:shapes-clip", "k": "3"},
        files=[("file", ("q.png", data, "image/png"))],
    )
    assert r.status_code == 200 and r.json()["query_kind"] == "image"
    assert r.json()["results"][0]["label"] == truth
    _error(client.post("/v1/search", json={**body, "k": 0}), 400)
    _error(client.post("/v1/search", json={**body, "query": ""}), 400)


def test_maps_json_and_arrow(client, cache_root):
    cache = Cache(cache_root)
    vectors = embed_dataset("demo:digits", "baseline:pixels", cache=cache)
    coords = project(vectors.path, "pca", cache=cache).coords()
    url = "/v1/maps/demo%3Adigits/baseline%3Apixels?method=pca"
    body = client.get(url).json()
    assert body["n"] == 1797 and body["method"] == "pca" and len(body["id"]) == 1797
    np.testing.assert_allclose(body["x"], coords[:, 0], rtol=1e-6)
    r = client.get(url, headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert r.headers["content-type"].startswith("application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["id", "label", "x", "y"]
    np.testing.assert_array_equal(table["y"].to_numpy(), coords[:, 1].astype(np.float32))
    _error(client.get("/v1/maps/demo%3Adigits/baseline%3Apixels?method=umap"), 404, "not_mapped")
    _error(client.get("/v1/maps/demo%3Adigits/baseline%3Apixels?method=tsne"), 400)
    _error(client.get("/v1/maps/demo%3Adigits"), 404)


def test_dynamic_batcher_groups_concurrent_requests():
    calls: list[int] = []

    def embed(items):
        calls.append(len(items))
        time.sleep(0.02)
        return np.array([[float(i)] for i in items])

    batcher = DynamicBatcher(embed, max_batch=64, max_wait_s=0.05)
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = batcher.submit([i, i + 100])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert sum(calls) == 32 and len(calls) < 16  # shared forward passes
    for i, rows in results.items():  # and every caller got its own rows back
        assert rows[:, 0].tolist() == [i, i + 100]


def test_batcher_errors_reach_every_waiting_caller():
    def broken(items):
        raise ValueError("model exploded")

    batcher = DynamicBatcher(broken, max_batch=8, max_wait_s=0.01)
    with pytest.raises(ValueError, match="exploded"):
        batcher.submit([1])
    batcher.close()
    one = DynamicBatcher(lambda items: np.ones((len(items), 1)), max_batch=1, max_wait_s=0)
    assert one.submit([1]).shape == (1, 1)
    one.close()


def test_findings_answer_the_cli_contract(client, cache_root, tmp_path):
    body = {"dataset": "demo:digits", "models": ["baseline:pixels"]}
    _error(client.post("/v1/findings", json=body), 404, "not_embedded")  # no model loads here
    embed_dataset("demo:digits", "baseline:pixels", cache=Cache(cache_root))
    _error(client.post("/v1/findings", json={**body, "cached_only": True}), 404, "not_computed")
    r = client.post("/v1/findings", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    # The engine's own answer, computed apart in another cache: the same object, field for field.
    from engine.workspace import Workspace

    want = Workspace(tmp_path / "other").find("demo:digits", ["baseline:pixels"]).to_json()
    assert got == json.loads(json.dumps(want))
    assert got["n"] == 1797 and got["models"] == ["baseline:pixels"]
    assert {"label_errors", "duplicates", "outliers", "leaks", "clusters"} <= set(got)
    assert got["clusters"]["baseline:pixels"] and got["outliers"]
    rows = [r for c in got["clusters"]["baseline:pixels"] for r in c["rows"]]
    assert len(rows) == len(set(rows)) and all(0 <= r < 1797 for r in rows)
    # Computed once: the cached answer is the same.
    assert client.post("/v1/findings", json={**body, "cached_only": True}).json() == got
    # The visitor policy and the error shape, as on every route.
    _error(client.post("/v1/findings", json={**body, "models": ["hf:/"]}), 403, "forbidden")
    _error(client.post("/v1/findings", json={**body, "dataset": "folder:/etc"}), 403, "forbidden")
    _error(client.post("/v1/findings", json={**body, "models": []}), 400)
    _error(client.post("/v1/findings", json={**body, "split_column": "nope"}), 400)
    _error(
        client.post("/v1/findings", content=b"dataset=x", headers={"content-type": "text/plain"}),
        415,
    )
