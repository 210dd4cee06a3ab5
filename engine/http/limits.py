"""The limits a request meets before any work: its body's size (whatever the transfer
encoding), its uploads (count, bytes, pixels across the whole request), its texts, and the work a
prediction asks for. Each refusal is one JSON line (``ApiError``: 400, 413)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import settings as engine_settings
from engine.http.service import ApiError
from engine.http.settings import ServiceSettings


def body_message(limit: int) -> str:
    return f"the request body is over {limit / 1024**2:g} MB"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit. An HTTP exception, so that the
    route's body parsing passes it on (FastAPI turns other exceptions there into a 400) and
    the app answers 413 with the JSON error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, body_message(limit), headers={"connection": "close"})


class BodyLimit:
    """An ASGI middleware bounding every request body: ``limit`` bytes for a multipart body
    (uploads, spooled to disk as they arrive), ``json_limit`` for any other (JSON is parsed
    whole, and takes several times its size in memory once parsed).

    A ``Content-Length`` over the limit is refused before a byte is read. A body without one
    (``Transfer-Encoding: chunked``) is counted as it streams and cut at the limit: the app
    never holds more than the limit of it (uvicorn and Starlette set no limit of their own).
    The answer is 413 with the JSON error shape, unless the app already started its response
    (then the connection is dropped).
    """

    def __init__(self, app: ASGIApp, limit: int, json_limit: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.json_limit = limit if json_limit is None else min(limit, json_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data")
        limit = self.limit if multipart else self.json_limit
        length = headers.get(b"content-length", b"")
        if length.strip().isdigit() and int(length) > limit:
            await self._refuse(send, limit)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send, limit)

    async def _refuse(self, send: Send, limit: int) -> None:
        error = {"code": "too_large", "message": body_message(limit)}
        body = json.dumps({"error": error}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# -- uploads ----------------------------------------------------------------------------------
UPLOAD_FIELDS = ("files", "file", "images", "image")  # older clients used every one of these


def uploads_of(form: Any) -> list[Any]:
    """The uploaded files of a multipart form, under any of the accepted field names."""
    found = [f for key in UPLOAD_FIELDS for f in form.getlist(key)]
    return [f for f in found if hasattr(f, "read")]


async def read_uploads(uploads: list[Any], settings: ServiceSettings) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each upload, refused past the count or the per-file size."""
    if len(uploads) > settings.max_images:
        raise ApiError(413, "too_many_items", f"at most {settings.max_images} images a request")
    out = []
    limit = settings.max_image_bytes
    for i, upload in enumerate(uploads):
        name = upload.filename or f"image-{i}"
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "too_large", f"{name} is over {limit // 1024**2} MB")
        out.append((name, data))
    return out


def check_pixels(files: Iterable[tuple[str, bytes]], limit: int) -> None:
    """Refuse a request whose images hold more than ``limit`` pixels together, from their
    headers alone (nothing is decoded): the per-image limit alone lets 64 images of the
    largest size through in one request."""
    from PIL import Image

    total = 0
    for _, data in files:
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except Exception:  # not an image: the decoder gives its one-line reason next
            continue
        total += width * height
        if total > limit:
            raise ApiError(
                413,
                "too_large",
                f"the images hold over {limit / 1e6:.0f} M pixels together (this "
                "deployment's limit for one request): send fewer or smaller images",
            )


def check_texts(texts: list[str], settings: ServiceSettings) -> list[str]:
    """At most ``max_texts`` texts, each cut at the engine's text length."""
    if len(texts) > settings.max_texts:
        raise ApiError(413, "too_many_items", f"at most {settings.max_texts} texts a request")
    return [t[: engine_settings.MAX_TEXT_CHARS] for t in texts]


def check_predict_work(
    n_models: int,
    labels: list[str],
    n_templates: int,
    n_inputs: int,
    settings: ServiceSettings,
) -> None:
    """A prediction embeds models x (labels x templates + inputs) items: bounded before any
    model loads, with labels bounded in number and length."""
    if not labels or len(labels) > settings.max_labels:
        raise ApiError(400, "bad_request", f"give 1 to {settings.max_labels} labels")
    longest = max(len(label) for label in labels)
    if longest > settings.max_label_chars:
        raise ApiError(
            400,
            "bad_request",
            f"a label has {longest} characters: at most {settings.max_label_chars}",
        )
    if n_models > settings.max_predict_models:
        raise ApiError(
            413,
            "too_many_items",
            f"at most {settings.max_predict_models} models in one prediction",
        )
    work = n_models * (len(labels) * n_templates + n_inputs)
    if work > settings.max_predict_work:
        raise ApiError(
            413,
            "too_much_work",
            f"{n_models} model(s) x ({len(labels)} labels x {n_templates} prompt(s) + "
            f"{n_inputs} inputs) = {work} items to embed, over this deployment's "
            f"{settings.max_predict_work}",
        )
