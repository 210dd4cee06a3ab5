"""``POST /v1/embeddings`` (texts, JSON) and ``POST /v1/embeddings/images`` (files) -> vectors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from engine.http.limits import check_pixels, check_texts, read_uploads, uploads_of
from engine.http.routes import api_router, needs_form, needs_json
from engine.http.schemas import EmbeddingList, EmbedTexts
from engine.http.service import ApiError, Service, Svc

router = api_router("/v1", "embeddings")


async def decoded_images(svc: Service, uploads: list[Any]) -> tuple[list[Any], list[str]]:
    """The uploads read under the limits and decoded safely (400 with the first bad file)."""
    files = await read_uploads(uploads, svc.settings)
    check_pixels(files, svc.settings.max_request_pixels)
    images, names, errors = await run_in_threadpool(svc.ws.decode_images, files)
    if errors:
        raise ApiError(400, "bad_image", errors[0])
    return images, names


async def _answer(svc: Service, spec: str, modality: str, items: list[Any]) -> dict[str, Any]:
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


@router.post("/embeddings", response_model=EmbeddingList, dependencies=[Depends(needs_json)])
async def embeddings(svc: Svc, body: EmbedTexts) -> dict[str, Any]:
    """Texts to vectors, in the shape of the familiar embeddings APIs."""
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    return await _answer(svc, body.model, "text", check_texts(texts, svc.settings))


@router.post("/embeddings/images", response_model=EmbeddingList, dependencies=[Depends(needs_form)])
async def embed_images(
    svc: Svc,
    request: Request,
    model: Annotated[str, Form(min_length=1, description="a model spec from GET /v1/models")],
    files: Annotated[
        list[UploadFile] | None, File(description="image files (PNG, JPEG, WebP, ...)")
    ] = None,
) -> dict[str, Any]:
    """Images to vectors (multipart: `model` and `files`, repeatable)."""
    # The form is parsed already; read it again for the field names older clients used.
    items, _ = await decoded_images(svc, uploads_of(await request.form()))
    return await _answer(svc, model, "image", items)
