"""The HTTP service: the engine's registry, cache and models behind a small JSON API.

Routes (docs/api.md; the OpenAPI page is ``/docs``):

    GET  /v1/health                      no auth
    GET  /v1/datasets, /v1/models        what the CLI lists
    POST /v1/embeddings                  texts (JSON) or images (multipart) -> vectors
    POST /v1/predict                     images (+ texts) x labels -> each model's zero-shot answer
    POST /v1/jobs/embed, GET /v1/jobs/ID an embed job into the shared cache, with progress
    POST /v1/search                      a text or image query over an embedded dataset -> top k
    GET  /v1/maps/DATASET/MODEL          cached 2-D coordinates (JSON or Arrow IPC)

Every client is a visitor (``engine.policy``): dataset and model specs pass the same policy as
the dashboard's pages. Every error is ``{"error": {"code", "message"}}`` with a 4xx status and one
line; an unexpected failure is a 500 whose details stay in the server log. Model calls go through
one dynamic batcher per (model, modality), so concurrent requests share forward passes.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import engine as parallax_engine
from engine.errors import DatasetError, ItemError, ModelUnavailable, ParallaxError
from engine.http.batching import BatcherClosed, BatcherPool
from engine.http.jobs import JobStore, UnknownJob
from engine.http.settings import ServiceSettings
from engine.params import PREDICT, SEARCH, ProjectionParams
from engine.policy import PolicyError, VisitorPolicy
from engine.store.cache import Cache

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
_MAX_OPEN_DATASETS = 4
_MAX_CLASS_VECTORS = 64


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _status_of(exc: ParallaxError) -> tuple[int, str]:
    if isinstance(exc, PolicyError):
        return 403, "forbidden"
    if isinstance(exc, UnknownJob):
        return 404, "not_found"
    if isinstance(exc, ItemError):
        return 400, "bad_input"
    if isinstance(exc, ModelUnavailable):
        return 422, "model_unavailable"
    if isinstance(exc, DatasetError):
        return 422, "dataset_unavailable"
    return 400, "bad_request"


def _error(status: int, code: str, message: str) -> JSONResponse:
    line = " ".join(str(message).split())[:500]
    return JSONResponse({"error": {"code": code, "message": line}}, status_code=status)


class Engine:
    """What the routes share: the cache, opened datasets, loaded models, batchers, jobs."""

    def __init__(self, settings: ServiceSettings, cache: Cache) -> None:
        self.settings = settings
        self.cache = cache
        self.started = time.time()
        self.batchers = BatcherPool(
            max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000.0
        )
        self.jobs = JobStore(cache)
        self._lock = threading.Lock()
        self._datasets: OrderedDict[str, Any] = OrderedDict()
        self._class_vectors: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._entries: dict[tuple[str, str, str | None], Any] = {}

    @property
    def policy(self) -> VisitorPolicy:
        return VisitorPolicy.for_visitor(self.cache.root)

    # -- specs a client names --------------------------------------------------------------
    def model(self, spec: str) -> Any:
        self.policy.check_model_spec(spec)
        from engine.models import load_model

        return load_model(spec)

    def dataset(self, spec: str) -> Any:
        self.policy.check_dataset_spec(spec)
        with self._lock:
            hit = self._datasets.get(spec)
            if hit is not None:
                self._datasets.move_to_end(spec)
                return hit
        from engine.data import open_dataset

        ds = open_dataset(spec, cache_root=self.cache.root)
        with self._lock:
            self._datasets[spec] = ds
            while len(self._datasets) > _MAX_OPEN_DATASETS:
                self._datasets.popitem(last=False)
        return ds

    def vectors_entry(self, dataset: Any, model_spec: str, modality: str | None = None) -> Any:
        """The finished vectors of ``dataset`` under ``model_spec`` (no model is loaded);
        images preferred when the dataset has them. ``ApiError`` 404 when not embedded yet."""
        self.policy.check_model_spec(model_spec)
        key = (dataset.fingerprint(), model_spec, modality)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit.array_path.is_file():
            return hit
        from engine.store.catalog import embeddings_by

        entries = embeddings_by(dataset, model_spec, self.cache)
        if modality is not None:
            entries = [e for e in entries if e.manifest.get("modality") == modality]
        if not entries:
            raise ApiError(
                404,
                "not_embedded",
                f"{dataset.spec} is not embedded with {model_spec} yet: POST /v1/jobs/embed "
                "or run `python -m engine embed` first",
            )
        entries.sort(key=lambda e: (e.manifest.get("modality") != "image", e.key))
        with self._lock:
            self._entries[key] = entries[0]
        return entries[0]

    # -- batched model calls ---------------------------------------------------------------
    def embed(self, model: Any, modality: str, items: Sequence[Any]) -> np.ndarray:
        fn = model.embed_images if modality == "image" else model.embed_texts
        batcher = self.batchers.get((str(model.spec), modality), fn)
        return batcher.submit(items)

    def class_vectors(
        self, model: Any, labels: list[str], templates: tuple[str, ...], ensemble: bool
    ) -> np.ndarray:
        """Label-prompt embeddings, kept for the next request with the same labels."""
        from engine.analysis.zeroshot import class_text_embeddings

        key = (str(model.spec), tuple(labels), templates, ensemble)
        with self._lock:
            hit = self._class_vectors.get(key)
            if hit is not None:
                self._class_vectors.move_to_end(key)
                return hit
        vectors = class_text_embeddings(model, labels, list(templates), ensemble)
        with self._lock:
            self._class_vectors[key] = vectors
            while len(self._class_vectors) > _MAX_CLASS_VECTORS:
                self._class_vectors.popitem(last=False)
        return vectors

    def close(self) -> None:
        self.batchers.close()
        self.jobs.shutdown(wait=False)


# -- request parsing -------------------------------------------------------------------------
def _form_list(form: Any, name: str) -> list[str]:
    """A form field given repeatedly, or once as a comma- or newline-separated list."""
    values: list[str] = []
    for raw in form.getlist(name):
        if isinstance(raw, str):
            values.extend(v.strip() for v in raw.replace("\n", ",").split(",") if v.strip())
    return values


async def _read_upload(upload: Any, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413, "too_large", f"{upload.filename or 'upload'} is over {limit // 1024**2} MB"
        )
    return data


async def _images_from_form(form: Any, settings: ServiceSettings) -> tuple[list, list[str]]:
    from engine.analysis.predict import decode_images

    uploads = [f for key in ("file", "files", "image", "images") for f in form.getlist(key)]
    uploads = [u for u in uploads if hasattr(u, "read")]
    if len(uploads) > settings.max_images:
        raise ApiError(413, "too_many_items", f"at most {settings.max_images} images a request")
    raw = [
        (u.filename or f"image-{i}", await _read_upload(u, settings.max_image_bytes))
        for i, u in enumerate(uploads)
    ]
    images, names, errors = await run_in_threadpool(decode_images, raw)
    if errors:
        raise ApiError(400, "bad_image", errors[0])
    return images, names


def _check_texts(texts: Any, settings: ServiceSettings) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "bad_request", "input must be a string or a list of strings")
    if len(texts) > settings.max_texts:
        raise ApiError(413, "too_many_items", f"at most {settings.max_texts} texts a request")
    from engine import settings as engine_settings

    return [t[: engine_settings.MAX_TEXT_CHARS] for t in texts]


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _spec_field(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "bad_request", f"{name} is required (a spec string)")
    return value.strip()


# -- the app ---------------------------------------------------------------------------------
def create_app(settings: ServiceSettings | None = None, cache: Cache | None = None) -> FastAPI:
    """The ASGI app. ``settings`` default to ``ServiceSettings.from_env()``, ``cache`` to the
    engine's cache root (``PARALLAX_CACHE`` or ``./cache``)."""
    settings = settings or ServiceSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.engine = Engine(settings, cache or Cache())
        try:
            yield
        finally:
            app.state.engine.close()

    app = FastAPI(
        title="Parallax API",
        version=parallax_engine.__version__,
        description="Embeddings, zero-shot predictions, search and maps from the Parallax engine.",
        lifespan=lifespan,
    )
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            limit = settings.max_body_bytes // 1024**2
            return _error(413, "too_large", f"the request body is over {limit} MB")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(ParallaxError)
    async def engine_error(request: Request, exc: ParallaxError) -> JSONResponse:
        status, code = _status_of(exc)
        return _error(status, code, str(exc))

    @app.exception_handler(BatcherClosed)
    async def closing(request: Request, exc: BatcherClosed) -> JSONResponse:
        return _error(503, "shutting_down", "the service is shutting down: retry shortly")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        return _error(exc.status_code, code.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the log")

    def authorised(request: Request) -> None:
        if not settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ok = scheme.lower() == "bearer" and any(
            hmac.compare_digest(token.strip().encode(), key.encode()) for key in settings.api_keys
        )
        if not ok:
            raise ApiError(
                401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)"
            )

    def engine(request: Request) -> Engine:
        return request.app.state.engine

    auth = [Depends(authorised)]

    @app.get("/v1/health")
    def health(request: Request) -> dict[str, Any]:
        eng = engine(request)
        active = [j for j in eng.jobs.list() if j["status"] in ("queued", "running")]
        return {
            "status": "ok",
            "version": parallax_engine.__version__,
            "uptime_s": round(time.time() - eng.started, 1),
            "auth": bool(settings.api_keys),
            "jobs_active": len(active),
            "batchers": eng.batchers.stats(),
        }

    @app.get("/v1/datasets", dependencies=auth)
    def datasets() -> dict[str, Any]:
        from engine.data import list_demos

        return {"datasets": list_demos()}

    @app.get("/v1/models", dependencies=auth)
    def models() -> dict[str, Any]:
        from engine.models import known_models

        return {"models": known_models()}

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(request: Request) -> dict[str, Any]:
        """Texts as JSON ``{"model", "input"}``; images as multipart (``model`` + files)."""
        eng = engine(request)
        if _content_type(request) in FORMS:
            form = await request.form()
            spec = _spec_field(form.get("model"), "model")
            items, _ = await _images_from_form(form, settings)
            modality = "image"
        elif _content_type(request) == "application/json":
            body = await _json_body(request)
            spec = _spec_field(body.get("model"), "model")
            items = _check_texts(body.get("input"), settings)
            modality = "text"
        else:
            raise ApiError(
                415,
                "unsupported_media_type",
                "send JSON {model, input} for texts, or multipart/form-data (model, files) "
                "for images",
            )
        if not items:
            raise ApiError(400, "bad_request", "nothing to embed")
        model = await run_in_threadpool(eng.model, spec)
        if modality not in model.modalities:
            raise ApiError(422, "wrong_modality", f"{spec} does not embed {modality}s")
        vectors = await run_in_threadpool(eng.embed, model, modality, items)
        return {
            "object": "list",
            "model": str(model.spec),
            "modality": modality,
            "dim": int(vectors.shape[1]),
            "data": [
                {"object": "embedding", "index": i, "embedding": [float(v) for v in row]}
                for i, row in enumerate(vectors)
            ],
            "usage": {"inputs": len(items)},
        }

    @app.post("/v1/predict", dependencies=auth)
    async def predict(request: Request) -> dict[str, Any]:
        """Multipart: files (images), ``labels``, optional ``texts``, ``models``, ``templates``."""
        eng = engine(request)
        if _content_type(request) not in FORMS:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data")
        form = await request.form()
        labels = _form_list(form, "labels")
        if not labels or len(labels) > settings.max_labels:
            raise ApiError(400, "bad_request", f"give 1 to {settings.max_labels} labels")
        specs = _form_list(form, "models") or list(settings.predict_models)
        templates = tuple(t for t in form.getlist("templates") if isinstance(t, str) and t.strip())
        templates = templates or tuple(PREDICT.templates)
        texts = _check_texts(_form_list(form, "texts"), settings)
        images, names = await _images_from_form(form, settings)
        if not images and not texts:
            raise ApiError(400, "bad_request", "give at least one image file or text")
        from engine.analysis.zeroshot import check_labels, check_templates

        labels = check_labels(labels)
        check_templates(list(templates))
        answers = [
            await run_in_threadpool(_predict_one, eng, spec, images, texts, labels, templates)
            for spec in specs
        ]
        return {
            "labels": labels,
            "inputs": [{"index": i, "kind": "image", "name": n} for i, n in enumerate(names)]
            + [{"index": i, "kind": "text"} for i in range(len(texts))],
            "predictions": answers,
        }

    @app.post("/v1/jobs/embed", status_code=202, dependencies=auth)
    async def submit_job(request: Request) -> dict[str, Any]:
        eng = engine(request)
        body = await _json_body(request)
        dataset = _spec_field(body.get("dataset"), "dataset")
        model = _spec_field(body.get("model"), "model")
        modality = body.get("modality")
        if modality not in (None, "image", "text"):
            raise ApiError(400, "bad_request", "modality is image, text or absent")
        eng.policy.check_dataset_spec(dataset)
        eng.policy.check_model_spec(model)
        return eng.jobs.submit(dataset, model, modality)

    @app.get("/v1/jobs/{job_id}", dependencies=auth)
    def get_job(job_id: str, request: Request) -> dict[str, Any]:
        job = engine(request).jobs.get(job_id)
        job.pop("cache_root", None)  # a server path: not the client's business
        return job

    @app.post("/v1/search", dependencies=auth)
    async def search(request: Request) -> dict[str, Any]:
        """JSON ``{dataset, model, query, k}`` for a text query; multipart with one image file
        (and the same fields) for an image query."""
        eng = engine(request)
        if _content_type(request) in FORMS:
            form = await request.form()
            fields = {k: form.get(k) for k in ("dataset", "model", "k", "query")}
            images, _ = await _images_from_form(form, settings)
            if len(images) != 1:
                raise ApiError(400, "bad_request", "an image query is exactly one image file")
            query: Any = images[0]
        elif _content_type(request) == "application/json":
            fields = await _json_body(request)
            query = fields.get("query")
            if not isinstance(query, str) or not query.strip():
                raise ApiError(400, "bad_request", "query is required (a text)")
        else:
            raise ApiError(415, "unsupported_media_type", "send JSON, or multipart with an image")
        try:
            raw_k = fields.get("k")
            k = SEARCH.k if raw_k in (None, "") else int(raw_k)
        except (TypeError, ValueError):
            raise ApiError(400, "bad_request", "k must be a whole number") from None
        if not 1 <= k <= SEARCH.max_k:
            raise ApiError(400, "bad_request", f"k must be 1 to {SEARCH.max_k}")
        dataset_spec = _spec_field(fields.get("dataset"), "dataset")
        model_spec = _spec_field(fields.get("model"), "model")
        return await run_in_threadpool(_search, eng, dataset_spec, model_spec, query, k)

    @app.get("/v1/maps/{rest:path}", dependencies=auth)
    async def maps(request: Request, method: str = "umap", seed: int = 0) -> Response:
        """``/v1/maps/DATASET/MODEL``: each spec one path segment, URL-encoded (``/`` as %2F)."""
        raw = request.scope.get("raw_path", b"").decode("latin-1").split("?")[0]
        parts = raw.split("/v1/maps/", 1)[-1].split("/")
        if len(parts) != 2 or not all(parts):
            raise ApiError(
                404,
                "not_found",
                "use /v1/maps/DATASET/MODEL with each spec URL-encoded (e.g. demo%3Adigits)",
            )
        dataset_spec, model_spec = (unquote(p) for p in parts)
        eng = engine(request)
        table = await run_in_threadpool(_map_table, eng, dataset_spec, model_spec, method, seed)
        if ARROW_STREAM in request.headers.get("accept", ""):
            import pyarrow as pa

            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return JSONResponse({**meta, "n": table.num_rows, **table.to_pydict()})

    return app


def _predict_one(
    eng: Engine,
    spec: str,
    images: list,
    texts: list[str],
    labels: list[str],
    templates: tuple[str, ...],
) -> dict[str, Any]:
    """One model's zero-shot answer; its image and text embeddings go through the batcher."""
    from engine.analysis.predict import score_rule
    from engine.analysis.zeroshot import (
        NO_TEXT_TOWER,
        NOT_CLIP_LIKE,
        ModelPrediction,
        is_clip_like,
        model_scores,
    )

    pred = ModelPrediction(model=spec)
    t0 = time.perf_counter()
    try:
        model = eng.model(spec)
    except ParallaxError as exc:
        if isinstance(exc, PolicyError):
            raise
        pred.error = f"cannot load: {str(exc).splitlines()[0]}"
        return pred.to_json()
    pred.load_ms = (time.perf_counter() - t0) * 1000.0
    t1 = time.perf_counter()
    if "text" not in model.modalities:
        pred.error = NOT_CLIP_LIKE if images else NO_TEXT_TOWER
        return pred.to_json()
    from engine.analysis.answerable import label_warnings, score_warnings

    classes = eng.class_vectors(model, labels, templates, PREDICT.ensemble)
    pred.warnings = label_warnings(model, labels, classes)  # labels it cannot tell apart
    problems = []
    if images:
        if is_clip_like(model):
            scores = model_scores(model, eng.embed(model, "image", images), classes)
            pred.images = [scores.top_k(i, labels, PREDICT.top_k) for i in range(len(images))]
            pred.warnings += score_warnings(labels, scores.probs, "image")
        else:
            problems.append(NOT_CLIP_LIKE)
    if texts:
        scores = model_scores(model, eng.embed(model, "text", texts), classes)
        pred.texts = [scores.top_k(i, labels, PREDICT.top_k) for i in range(len(texts))]
        pred.warnings += score_warnings(labels, scores.probs, "text")
    pred.latency_ms = (time.perf_counter() - t1) * 1000.0
    pred.error = "; ".join(problems) or None
    return {**pred.to_json(), "score": score_rule(model)}


def _search(eng: Engine, dataset_spec: str, model_spec: str, query: Any, k: int) -> dict:
    from engine.analysis.search import index_for

    t0 = time.perf_counter()
    dataset = eng.dataset(dataset_spec)
    entry = eng.vectors_entry(dataset, model_spec)
    index = index_for(entry.key, entry.load)
    model = eng.model(model_spec)
    modality = "text" if isinstance(query, str) else "image"
    if modality not in model.modalities:
        raise ApiError(422, "wrong_modality", f"{model_spec} cannot embed a {modality} query")
    vector = eng.embed(model, modality, [query])
    idx, scores = index.search(vector, k)
    from engine.analysis.answerable import query_warnings

    warnings = query_warnings(model, query) if modality == "text" else []
    hits = [
        {
            "index": int(i),
            "id": dataset.ids[int(i)],
            "label": dataset.labels[int(i)],
            "score": round(float(s), 6),
        }
        for i, s in zip(idx[0], scores[0], strict=True)
        if i >= 0
    ]
    return {
        "dataset": dataset.spec,
        "model": model_spec,
        "query_kind": modality,
        "index": index.kind,
        "n": index.n,
        "results": hits,
        "warnings": warnings,  # query words the model does not know (engine.analysis.answerable)
        "ms": round((time.perf_counter() - t0) * 1000.0, 2),
    }


def _map_table(eng: Engine, dataset_spec: str, model_spec: str, method: str, seed: int) -> Any:
    import pyarrow as pa

    from engine.params import PROJECTION_METHODS

    if method not in PROJECTION_METHODS:
        raise ApiError(400, "bad_request", f"method is one of {', '.join(PROJECTION_METHODS)}")
    dataset = eng.dataset(dataset_spec)
    entry = eng.vectors_entry(dataset, model_spec)
    from engine.store.catalog import cached_map

    params = ProjectionParams(method=method, seed=seed)
    key = params.cache_key(entry.key)
    found = cached_map(entry, params, eng.cache)
    if found is None:
        raise ApiError(
            404,
            "not_mapped",
            f"no cached {method} map of {dataset_spec} under {model_spec}: run `python -m "
            f"engine project --dataset ... --model ... --method {method}` first",
        )
    coords = np.asarray(found.load(), dtype=np.float32)
    table = pa.table(
        {
            "id": pa.array(dataset.ids, pa.string()),
            "label": pa.array(dataset.labels, pa.string()),
            "x": pa.array(coords[:, 0]),
            "y": pa.array(coords[:, 1]),
        }
    )
    meta = {"dataset": dataset.spec, "model": model_spec, "method": method, "key": key}
    return table.replace_schema_metadata(meta)
