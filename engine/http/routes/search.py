"""``POST /v1/search``: a text (JSON) or image (multipart) query over an embedded dataset."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from engine.http import limits
from engine.http.routes import (
    FORMS,
    JSON,
    api_router,
    content_type,
    json_body,
    two_bodies,
    unsupported,
    validated,
)
from engine.http.routes.embeddings import decoded_images
from engine.http.schemas import SearchImage, SearchResults, SearchText
from engine.http.service import ApiError, Svc

router = api_router("/v1", "search")


@router.post(
    "/search",
    response_model=SearchResults,
    openapi_extra=two_bodies(SearchText, SearchImage),
)
async def search(svc: Svc, request: Request) -> dict[str, Any]:
    """The `k` items nearest to a query: JSON `{dataset, model, query, k}` for a text, or
    multipart with one image `file` (and the same fields) for an image. Exact cosine search
    below 50,000 items, an inverted-file index above; 404 `not_embedded` until the dataset is
    embedded with the model."""
    kind = content_type(request)
    query: Any
    if kind in FORMS:
        form = await request.form()
        fields = {
            k: form.get(k) for k in ("dataset", "model", "k") if form.get(k) not in (None, "")
        }
        body: SearchText | SearchImage = validated(SearchImage, {**fields, "file": b""})
        images, _ = await decoded_images(svc, limits.uploads_of(form))
        if len(images) != 1:
            raise ApiError(400, "bad_request", "an image query is exactly one image file")
        query = images[0]
    elif kind == JSON:
        body = await json_body(request, SearchText)
        if not body.query.strip():
            raise ApiError(400, "bad_request", "query is required (a text)")
        query = body.query
    else:
        raise unsupported("send JSON, or multipart with an image")
    t0 = time.perf_counter()
    svc.ws.check_dataset_spec(body.dataset.strip())
    spec = svc.check_model(body.model)
    dataset = await run_in_threadpool(svc.ws.open, body.dataset.strip())
    await run_in_threadpool(svc.ws.vectors, dataset, spec)  # 404 before any model loads
    model = await run_in_threadpool(svc.ws.model, spec)
    modality = "text" if isinstance(query, str) else "image"
    if modality not in model.modalities:
        raise ApiError(422, "wrong_modality", f"{spec} cannot embed a {modality} query")
    found = await run_in_threadpool(svc.ws.search, dataset, spec, query, k=body.k, embed=svc.embed)
    return {
        **svc.scrub.deep(found.to_json()),
        "ms": round((time.perf_counter() - t0) * 1000.0, 2),
    }
