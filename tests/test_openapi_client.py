"""A client generated from ``/openapi.json`` (openapi-python-client, offline) calls the service.

The schema is what a client generator reads: if a route's body, a file upload or a path
parameter were missing from it, the generated call would take no argument, send the wrong
content type, or not exist. The calls go through the generated code against the real app.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("openapi_python_client")
from fastapi.testclient import TestClient

from engine.embed.local import embed_dataset
from engine.http import create_app
from engine.http.settings import ServiceSettings
from engine.maps.project import project
from engine.store.cache import Cache
from tests.service_util import SHAPES, shapes_items

SHAPES_SPEC = "demo:shapes?n=200&seed=0"


@pytest.fixture
def generated(tmp_path, cache_root, monkeypatch):
    """(the generated package, a test client of the app, the shapes vectors)."""
    monkeypatch.delenv("PARALLAX_SERVER_PATHS", raising=False)
    cache = Cache(cache_root)
    vectors = embed_dataset(SHAPES_SPEC, "demo:shapes-clip", cache=cache).vectors()
    digits = embed_dataset("demo:digits", "baseline:pixels", cache=cache)
    project(digits.path, "pca", cache=cache)
    app = create_app(ServiceSettings(), cache_root)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(app.openapi()))
    out = tmp_path / "gen" / "parallax_client"
    cmd = [sys.executable, "-m", "openapi_python_client", "generate"]
    cmd += ["--path", str(schema), "--output-path", str(out), "--meta", "none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    monkeypatch.syspath_prepend(str(out.parent))
    for name in [m for m in sys.modules if m.startswith("parallax_client")]:
        del sys.modules[name]
    package = importlib.import_module("parallax_client")
    with TestClient(app) as http:
        yield package, http, vectors


@pytest.mark.slow
def test_a_generated_client_predicts_searches_embeds_maps_and_finds(generated):
    package, http, vectors = generated
    models = importlib.import_module("parallax_client.models")
    types = importlib.import_module("parallax_client.types")
    predict = importlib.import_module("parallax_client.api.predict.predict")
    search = importlib.import_module("parallax_client.api.search.search")
    search_image = importlib.import_module("parallax_client.api.search.search_image")
    embeddings = importlib.import_module("parallax_client.api.embeddings.embeddings")
    embed_images = importlib.import_module("parallax_client.api.embeddings.embed_images")
    maps = importlib.import_module("parallax_client.api.maps.maps")
    findings = importlib.import_module("parallax_client.api.findings.findings")
    client = package.Client(base_url="http://testserver").set_httpx_client(http)

    # predict: images as files, labels, two models -> one answer per model
    items = shapes_items(4)

    def uploads(n: int) -> list:
        return [
            types.File(payload=io.BytesIO(data), file_name=f"{i}.png", mime_type="image/png")
            for i, (data, _) in enumerate(items[:n])
        ]

    files = uploads(4)
    body = models.BodyPredict(labels=SHAPES, files=files, models=["demo:shapes-clip"])
    body.models.append("demo:shapes-clip-small")
    answer = predict.sync(client=client, body=body)
    assert isinstance(answer, models.Prediction), answer
    assert [p.model for p in answer.predictions] == ["demo:shapes-clip", "demo:shapes-clip-small"]
    clip = answer.predictions[0]
    top1 = [ranked[0].label for ranked in clip.images]
    assert sum(t == truth for t, (_, truth) in zip(top1, items, strict=True)) >= 3

    # search: a text query's top 5 are the brute-force cosine top 5
    query = "a red circle"
    found = search.sync(
        client=client,
        body=models.SearchText(dataset=SHAPES_SPEC, model="demo:shapes-clip", query=query, k=5),
    )
    assert isinstance(found, models.SearchResults), found
    from engine.models import load_model

    q = load_model("demo:shapes-clip").embed_texts([query])[0]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    best = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:5].tolist()
    assert [hit.index for hit in found.results] == best
    # An image query: an item's own picture finds that item first.
    from engine.data import open_dataset
    from tests.service_util import png_bytes

    ds = open_dataset(SHAPES_SPEC)
    image = types.File(payload=io.BytesIO(png_bytes(ds.load_image(7))), file_name="q.png")
    form = models.BodySearchImage(dataset=SHAPES_SPEC, model="demo:shapes-clip", file=image, k=3)
    by_image = search_image.sync(client=client, body=form)
    assert isinstance(by_image, models.SearchResults), by_image
    assert by_image.query_kind == "image" and by_image.results[0].index == 7

    # embeddings: texts as JSON and images as files
    texts = embeddings.sync(
        client=client, body=models.EmbedTexts(model="baseline:text", input_=["a cat", "tea"])
    )
    assert isinstance(texts, models.EmbeddingList), texts
    want = load_model("baseline:text").embed_texts(["a cat", "tea"])
    got = np.array([d.embedding for d in texts.data], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-6)
    pictures = embed_images.sync(
        client=client, body=models.BodyEmbedImages(model="demo:shapes-clip", files=uploads(2))
    )
    assert isinstance(pictures, models.EmbeddingList), pictures
    clip_model = load_model("demo:shapes-clip")
    assert pictures.modality == "image" and pictures.dim == clip_model.dim
    want = clip_model.embed_images([Image.open(io.BytesIO(data)) for data, _ in items[:2]])
    got = np.array([d.embedding for d in pictures.data], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)

    # maps: specs with ":" as path parameters (the generated code URL-encodes them)
    coords = maps.sync(
        "demo:digits",
        "baseline:pixels",
        client=client,
        method=models.MapsMethod.PCA,
    )
    assert isinstance(coords, models.MapCoords), coords
    assert coords.n == 1797 and len(coords.x) == 1797 and coords.method == "pca"
    # An error comes back parsed, with its code.
    missing = maps.sync("demo:digits", "baseline:pixels", client=client)  # no UMAP map yet
    assert isinstance(missing, models.ErrorResponse) and missing.error.code == "not_mapped"

    # findings: the typed answer of the CLI's JSON object (rows are row indices)
    body = models.FindingsRequest(dataset="demo:digits", models=["baseline:pixels"])
    found = findings.sync(client=client, body=body)
    assert isinstance(found, models.FindingsResult), found
    assert found.n == 1797 and found.models == ["baseline:pixels"]
    assert found.outliers and all(0 <= o.row < 1797 for o in found.outliers)
    assert [c.name for c in found.clusters["baseline:pixels"]]
    body.models = ["hf:/"]
    refused = findings.sync(client=client, body=body)
    assert isinstance(refused, models.ErrorResponse) and refused.error.code == "forbidden"
