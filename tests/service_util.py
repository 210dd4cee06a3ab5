"""Helpers shared by the HTTP service tests: upload bytes and a client on a private cache."""

from __future__ import annotations

import io

from PIL import Image

SHAPES = ["circle", "crescent", "cross", "heart", "hexagon", "square", "star", "triangle"]


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def shapes_items(n: int = 5) -> list[tuple[bytes, str]]:
    """(PNG bytes, true shape) of the first ``n`` demo:shapes items."""
    from engine.data import open_dataset

    ds = open_dataset("demo:shapes?n=100")
    return [(png_bytes(ds.load_image(i)), ds.labels[i]) for i in range(n)]
