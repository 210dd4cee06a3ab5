"""``POST /v1/search`` (a text, JSON) and ``POST /v1/search/image`` (an image file): the
nearest items of an embedded dataset."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from engine.http.limits import uploads_of
from engine.http.routes import api_router, needs_form, needs_json
from engine.http.routes.embeddings import decoded_images
from engine.http.schemas import SearchResults, SearchText
from engine.http.service import ApiError, Service, Svc
from engine.params import SEARCH

router = api_router("/v1", "search")


async def _search(svc: Service, dataset: str, model: str, query: Any, k: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    dataset = dataset.strip()
    svc.ws.check_dataset_spec(dataset)
    spec = svc.check_model(model)
    ds = await run_in_threadpool(svc.ws.open, dataset)
    await run_in_threadpool(svc.ws.vectors, ds, spec)  # 404 not_embedded before a model loads
    loaded = await run_in_threadpool(svc.ws.model, spec)
    modality = "text" if isinstance(query, str) else "image"
    if modality not in loaded.modalities:
        raise ApiError(422, "wrong_modality", f"{spec} cannot embed a {modality} query")
    found = await run_in_threadpool(svc.ws.search, ds, spec, query, k=k, embed=svc.embed)
    return {
        **svc.scrub.deep(found.to_json()),
        "ms": round((time.perf_counter() - t0) * 1000.0, 2),
    }


@router.post("/search", response_model=SearchResults, dependencies=[Depends(needs_json)])
async def search(svc: Svc, body: SearchText) -> dict[str, Any]:
    """The `k` items nearest to a text. Exact cosine search below 50,000 items, an
    inverted-file index above; 404 `not_embedded` until the dataset is embedded with the
    model."""
    if not body.query.strip():
        raise ApiError(400, "bad_request", "query is required (a text)")
    return await _search(svc, body.dataset, body.model, body.query, body.k)


@router.post("/search/image", response_model=SearchResults, dependencies=[Depends(needs_form)])
async def search_image(
    svc: Svc,
    request: Request,
    dataset: Annotated[str, Form(min_length=1, description="a dataset spec")],
    model: Annotated[str, Form(min_length=1, description="a model spec")],
    file: Annotated[UploadFile | None, File(description="the query image")] = None,
    k: Annotated[int, Form(ge=1, le=SEARCH.max_k, description="how many results")] = SEARCH.k,
) -> dict[str, Any]:
    """The `k` items nearest to an image (multipart: one `file` and the same fields)."""
    images, _ = await decoded_images(svc, uploads_of(await request.form()))
    if len(images) != 1:
        raise ApiError(400, "bad_request", "an image query is exactly one image file")
    return await _search(svc, dataset, model, images[0], k)
