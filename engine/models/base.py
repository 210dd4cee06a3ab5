"""The protocol every model adapter implements, whatever library sits behind it.

Downstream code (embedding runner, cache, comparison) only ever sees this protocol. Vectors come
back as L2-normalised float32 NumPy arrays, one row per input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

IMAGE = "image"
TEXT = "text"


@runtime_checkable
class EmbeddingModel(Protocol):
    spec: str  # canonical spec string, e.g. "open_clip:ViT-B-32/laion2b_s34b_b79k"
    modalities: frozenset[str]  # subset of {"image", "text"}
    dim: int
    identity: str  # hash of weights identity + preprocessing: part of every cache key
    device: str  # "cpu" or "cuda"
    default_batch_size: int
    # CLIP-like models (image+text in one space) expose their learnt temperature so that
    # zero-shot probabilities are softmax(logit_scale * cosine); None for single-tower models.
    logit_scale: float | None

    def preprocess_image(self, image: Image.Image) -> Any:
        """Turn one RGB PIL image into the model's input (runs in decode worker threads)."""
        ...

    def embed_preprocessed(self, batch: list[Any]) -> np.ndarray:
        """Embed a list of ``preprocess_image`` outputs: ``(len(batch), dim)`` float32, L2-normed."""
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Convenience: preprocess then embed."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised. Raises for image-only models."""
        ...
