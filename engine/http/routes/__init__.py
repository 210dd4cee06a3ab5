"""The service's routes, one module per group (``engine.http.app`` includes them).

Each operation takes one kind of body, declared the FastAPI way (a pydantic model for JSON,
``Form``/``File`` parameters for multipart), so ``/openapi.json`` describes every body and a
generated client gets one typed call per operation: texts go to ``/v1/embeddings`` and
``/v1/search`` as JSON, images to ``/v1/embeddings/images`` and ``/v1/search/image`` as files.
A multipart body posted to the first two is served by the second two (``LEGACY_FORMS``), as
clients of the earlier service send them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer

from engine.http.schemas import ERRORS
from engine.http.service import ApiError

JSON = "application/json"
FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")
LEGACY_FORMS = {"/v1/embeddings": "/v1/embeddings/images", "/v1/search": "/v1/search/image"}

# Declares ``Authorization: Bearer KEY`` in the schema; the key itself is checked before the
# body is read (``engine.http.app.KeyCheck``), so this dependency never refuses.
bearer = HTTPBearer(auto_error=False, description="an API key, when the operator set some")


def api_router(prefix: str, tag: str) -> APIRouter:
    """A router whose routes need the key (when keys are set) and answer the JSON errors."""
    return APIRouter(prefix=prefix, tags=[tag], responses=ERRORS, dependencies=[Depends(bearer)])


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def needs_form(request: Request) -> None:
    """Refuse a body that is not a form (a dependency of multipart routes)."""
    if content_type(request) not in FORMS:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data")


def needs_json(request: Request) -> None:
    """Refuse a body that is not JSON (a dependency of JSON routes)."""
    kind = content_type(request)
    if kind != JSON and not kind.endswith("+json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send JSON (images go to {', '.join(LEGACY_FORMS.values())} as multipart)",
        )
