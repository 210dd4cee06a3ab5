"""``POST /v1/embeddings``: texts (JSON) or images (multipart) -> vectors."""

from __future__ import annotations

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
from engine.http.schemas import EmbeddingList, EmbedImages, EmbedTexts
from engine.http.service import ApiError, Service, Svc

router = api_router("/v1", "embeddings")


async def decoded_images(svc: Service, uploads: list[Any]) -> tuple[list[Any], list[str]]:
    """The uploads read under the limits and decoded safely (400 with the first bad file)."""
    files = await limits.read_uploads(uploads, svc.settings)
    limits.check_pixels(files, svc.settings.max_request_pixels)
    images, names, errors = await run_in_threadpool(svc.ws.decode_images, files)
    if errors:
        raise ApiError(400, "bad_image", errors[0])
    return images, names


@router.post(
    "/embeddings",
    response_model=EmbeddingList,
    openapi_extra=two_bodies(EmbedTexts, EmbedImages),
)
async def embeddings(svc: Svc, request: Request) -> dict[str, Any]:
    """Texts as JSON `{"model", "input"}`; images as multipart (`model` and `files`). The
    answer has the shape of the familiar embeddings APIs."""
    kind = content_type(request)
    if kind in FORMS:
        form = await request.form()
        spec = validated(EmbedImages, {"model": form.get("model"), "files": []}).model
        items, _ = await decoded_images(svc, limits.uploads_of(form))
        modality = "image"
    elif kind == JSON:
        body = await json_body(request, EmbedTexts)
        spec = body.model
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        items = limits.check_texts(texts, svc.settings)
        modality = "text"
    else:
        raise unsupported(
            "send JSON {model, input} for texts, or multipart/form-data (model, files) for images"
        )
    if not items:
        raise ApiError(400, "bad_request", "nothing to embed")
    model = await run_in_threadpool(svc.model, spec)
    if modality not in model.modalities:
        raise ApiError(422, "wrong_modality", f"{spec} does not embed {modality}s")
    vectors = await run_in_threadpool(svc.embed, model, modality, items)
    return {
        "object": "list",
        "model": str(model.spec),
        "modality": modality,
        "dim": int(vectors.shape[1]),
        "data": [
            {"object": "embedding", "index": i, "embedding": row.tolist()}
            for i, row in enumerate(vectors)
        ],
        "usage": {"inputs": len(items)},
    }
