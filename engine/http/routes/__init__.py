"""The service's routes, one module per group; ``ROUTERS`` in the order ``/docs`` lists them.

Helpers shared by the routes: the bearer-key declaration, and reading a body that may come as
JSON or as a multipart form (``/v1/embeddings`` and ``/v1/search`` take texts as JSON and
images as files), declared in the schema with both content types.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError

from engine.http.schemas import ERRORS
from engine.http.service import ApiError

JSON = "application/json"
MULTIPART = "multipart/form-data"
FORMS = (MULTIPART, "application/x-www-form-urlencoded")

# Declares ``Authorization: Bearer KEY`` in the schema; the key itself is checked before the
# body is read (``engine.http.app``), so this dependency never refuses.
bearer = HTTPBearer(auto_error=False, description="an API key, when the operator set some")


def api_router(prefix: str, tag: str) -> APIRouter:
    """A router whose routes need the key (when keys are set) and answer the JSON errors."""
    return APIRouter(prefix=prefix, tags=[tag], responses=ERRORS, dependencies=[Depends(bearer)])


# Models that only appear in two-content-type request bodies: ``engine.http.app`` adds them
# to the schema's components.
EXTRA_SCHEMAS: list[type[BaseModel]] = []

M = TypeVar("M", bound=BaseModel)


def two_bodies(json_model: type[BaseModel], form_model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a request body as JSON or as a multipart form."""
    EXTRA_SCHEMAS.extend(m for m in (json_model, form_model) if m not in EXTRA_SCHEMAS)
    ref = "#/components/schemas/{}".format
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": ref(json_model.__name__)}},
                MULTIPART: {"schema": {"$ref": ref(form_model.__name__)}},
            },
        }
    }


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def one_line(exc: ValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", exc))


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``, or a 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "bad_request", one_line(exc)) from None


async def json_body(request: Request, model: type[M]) -> M:
    try:
        data = await request.json()
    except ValueError:
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return validated(model, data)


def unsupported(what: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", what)


def needs_form(request: Request) -> None:
    """Refuse a body that is not a form (a dependency of multipart-only routes)."""
    if content_type(request) not in FORMS:
        raise unsupported("send multipart/form-data")
