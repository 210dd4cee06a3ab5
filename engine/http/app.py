"""The HTTP service: the engine's ``Workspace`` behind a small JSON API (docs/api.md).

Routes (``engine/http/routes/``, one module per group; the OpenAPI page is ``/docs``):

    GET  /v1/health                      no auth
    GET  /v1/datasets, /v1/models        what the CLI lists
    POST /v1/embeddings                  texts (JSON) -> vectors
    POST /v1/embeddings/images           images (multipart) -> vectors
    POST /v1/predict                     images (+ texts) x labels -> each model's zero-shot answer
    POST /v1/jobs/embed, GET /v1/jobs/ID an embed job into the shared cache, with progress
    POST /v1/search                      a text query over an embedded dataset -> top k
    POST /v1/search/image                an image query (multipart) -> top k
    GET  /v1/maps/DATASET/MODEL          cached 2-D coordinates (JSON or Arrow IPC)

Every error is ``{"error": {"code", "message"}}`` with a 4xx status and one line, with no
server path in it; an unexpected failure is a 500 whose details stay in the server log. The
API key and the body limit are checked before a request's body is read.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

import engine
from engine.errors import ParallaxError
from engine.http.batching import BatcherClosed
from engine.http.limits import BodyLimit
from engine.http.routes import (
    LEGACY_FORMS,
    embeddings,
    findings,
    health,
    jobs,
    maps,
    predict,
    search,
)
from engine.http.service import ApiError, Service, cache_root_of, status_of
from engine.http.settings import ServiceSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
SWAGGER = "/static/swagger-ui"
# Paths open without an API key: the health check and the API's own documentation.
OPEN_PATHS = ("/v1/health", "/docs", "/openapi.json", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)
ROUTERS = (health, embeddings, predict, search, maps, jobs, findings)


def _error(status: int, code: str, message: str, **kw: Any) -> JSONResponse:
    line = " ".join(str(message).split())[:500]
    return JSONResponse({"error": {"code": code, "message": line}}, status_code=status, **kw)


class KeyCheck:
    """Refuse a request without a valid API key (when keys are configured) before its body is
    read: a client without a key must not make the server take in 256 MB first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not (
            path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or scope["method"] == "OPTIONS"
        ):
            svc: Service | None = getattr(scope["app"].state, "service", None)
            if svc is not None:
                try:
                    svc.authorise(Request(scope))
                except ApiError as exc:
                    await _error(exc.status, exc.code, exc.message)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _binary_files(node: Any) -> None:
    """Mark FastAPI's file fields (OpenAPI 3.1's ``contentMediaType``) with ``format: binary``
    too, which is what client generators read as a file."""
    if isinstance(node, dict):
        if node.get("contentMediaType") == "application/octet-stream" and "format" not in node:
            node["format"] = "binary"
        for value in node.values():
            _binary_files(value)
    elif isinstance(node, list):
        for value in node:
            _binary_files(value)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema, once: FastAPI's, with file fields marked the way generators read them."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        _binary_files(schema)
        app.openapi_schema = schema
    return app.openapi_schema


class LegacyForms:
    """A multipart body posted to ``/v1/embeddings`` or ``/v1/search`` (how clients of the
    earlier service send images) is served by the image route of the same group."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = LEGACY_FORMS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if target is not None and scope["method"] == "POST":
            kind = dict(scope.get("headers") or []).get(b"content-type", b"").lower()
            if kind.startswith((b"multipart/form-data", b"application/x-www-form-urlencoded")):
                scope = {**scope, "path": target, "raw_path": target.encode()}
        await self.app(scope, receive, send)


def create_app(settings: ServiceSettings | None = None, cache: Any = None) -> FastAPI:
    """The ASGI app. ``settings`` default to ``ServiceSettings.from_env()``; ``cache`` is the
    cache root (a path, or a ``Workspace`` / ``Cache`` whose root to use; default
    ``PARALLAX_CACHE`` or ``./cache``)."""
    settings = settings or ServiceSettings.from_env()
    root = cache_root_of(cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.service = Service(settings, root)
        try:
            yield
        finally:
            app.state.service.close()

    app = FastAPI(
        title="Parallax API",
        version=engine.__version__,
        description="Embeddings, zero-shot predictions, search and maps from the Parallax engine.",
        lifespan=lifespan,
        docs_url=None,  # served below from the service's own files (works offline)
        redoc_url=None,  # ReDoc would load its script and fonts from a CDN
        # operationId = the route's function name: a generated client's calls are named
        # predict, search, embeddings, maps (not predict_v1_predict_post).
        generate_unique_id_function=lambda route: route.name,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(health.open_router)
    for group in ROUTERS:
        app.include_router(group.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Parallax API",
            swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png",
            oauth2_redirect_url=None,
            # No validator badge: it would send the schema's address to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "swagger-ui" / "favicon-32x32.png", media_type="image/png")

    # Middleware: the last added runs first. The key is checked before the body limit counts
    # anything, and both before a route reads the body; CORS wraps them all, so that a browser
    # sees a refusal's status instead of a CORS failure.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, json_limit=settings.max_json_bytes)
    app.add_middleware(KeyCheck)
    app.add_middleware(LegacyForms)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    def scrubbed(request: Request, message: str) -> str:
        svc: Service | None = getattr(request.app.state, "service", None)
        return svc.scrub(message) if svc is not None else message

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, scrubbed(request, exc.message))

    @app.exception_handler(ParallaxError)
    async def engine_error(request: Request, exc: ParallaxError) -> JSONResponse:
        status, code = status_of(exc)
        if status == 403:
            log.info("refused %s %s: %s", request.method, request.url.path, exc)
        return _error(status, code, scrubbed(request, str(exc)))

    @app.exception_handler(BatcherClosed)
    async def closing(request: Request, exc: BatcherClosed) -> JSONResponse:
        return _error(503, "shutting_down", "the service is shutting down: retry shortly")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        where = ".".join(p for p in loc if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "")
        if first.get("type") == "json_invalid":
            return _error(400, "bad_json", "the body is not valid JSON")
        if loc[:1] == ["body"]:  # a field of the body: missing, or of the wrong type
            return _error(400, "bad_request", scrubbed(request, message))
        return _error(422, "invalid_request", scrubbed(request, message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            404: "not_found",
            405: "method_not_allowed",
            401: "unauthorized",
            413: "too_large",
            400: "bad_request",
        }
        code = codes.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the log")

    return app
