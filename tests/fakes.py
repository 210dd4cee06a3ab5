"""Small in-memory datasets and models that follow the engine protocols exactly.

They let the cache, embedding runner and projection be tested without any weights, and can be
imported by a child process (see test_embed.py's kill test) because they are plain module code.
"""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pandas as pd
from PIL import Image

from engine.data.base import SkippedItem
from engine.errors import ItemError


class ArrayImageDataset:
    """``n`` deterministic 8x8 RGB images; item ``bad`` (if any) fails to decode."""

    def __init__(self, n: int, seed: int = 0, bad: tuple[int, ...] = (), texts: bool = True):
        self.spec = f"fake:images?n={n}&seed={seed}"
        self.name = "fake images"
        rng = np.random.default_rng(seed)
        self._pixels = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
        self.ids = [f"img-{i:05d}" for i in range(n)]
        self.labels = [str(i % 3) for i in range(n)]
        self.texts = [f"item {i} in class {i % 3}" for i in range(n)] if texts else None
        self.has_images = True
        self.skipped = [SkippedItem("missing.png", "not an image")]
        self._bad = set(bad)

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, index: int) -> Image.Image:
        if index in self._bad:
            raise ItemError("truncated or corrupt image")
        return Image.fromarray(self._pixels[index])

    def metadata(self) -> pd.DataFrame:
        return pd.DataFrame({"row": np.arange(len(self))})

    def fingerprint(self) -> str:
        h = hashlib.sha256(self._pixels.tobytes())
        for t in self.texts or []:
            h.update(t.encode())
        return h.hexdigest()


class MeanColourModel:
    """A 'model' whose image vector is a fixed projection of the pixels: deterministic, cheap.

    ``delay_s`` slows every batch so a test can kill a job in the middle.
    """

    def __init__(self, dim: int = 16, delay_s: float = 0.0, version: str = "1"):
        self.spec = f"fake:meancolour/{version}"
        self.modalities = frozenset({"image", "text"})
        self.dim = dim
        self.identity = hashlib.sha256(f"meancolour-{dim}-{version}".encode()).hexdigest()
        self.device = "cpu"
        self.default_batch_size = 4
        self.logit_scale = 100.0
        self.delay_s = delay_s
        self.batches: list[int] = []
        self._proj = np.random.default_rng(42).normal(size=(8 * 8 * 3, dim)).astype(np.float32)
        self._lock = threading.Lock()

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32).reshape(-1) / 255

    def embed_preprocessed(self, batch: list[np.ndarray]) -> np.ndarray:
        with self._lock:
            self.batches.append(len(batch))
            if self.delay_s:
                time.sleep(self.delay_s)
            v = np.stack(batch) @ self._proj
            return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_preprocessed([self.preprocess_image(im) for im in images])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            out[i] = np.random.default_rng(seed).normal(size=self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
