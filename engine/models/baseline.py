"""Weight-free baselines: what a learnt model has to beat.

``baseline:pixels`` - the image downsampled to 16x16 RGB with a box filter (an area average, so
the result does not depend on aliasing), 768 values in [0, 1], minus their mean, L2-normalised.
Mean-centring removes overall brightness, so the map groups images by layout and colour
contrast. A perfectly uniform image has nothing left after centring; it maps to the constant unit
vector, which is orthogonal to every centred vector (uniform images cluster together, apart).

``baseline:text`` - hashed word 1-2-grams and char 3-5-grams with sublinear tf (1 + log tf),
each block L2-normalised, then a fixed Gaussian random projection (seeded) to 256-d and
L2-normalised. Stateless: no vocabulary is fitted, so a text's vector never depends on the
rest of the dataset.

Both need only NumPy, Pillow and scikit-learn, and always run on the CPU.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.models.base import IMAGE, TEXT, Adapter, make_identity
from engine.models.device import l2_normalize

if TYPE_CHECKING:
    from PIL import Image

    from engine.models.spec import ModelSpec

PIXELS_SIDE = 16
PIXELS_VERSION = "pixels-v1"  # bump when the recipe changes: part of the identity

TEXT_DIM = 256
TEXT_SEED = 20240601
TEXT_FEATURES = 2**14  # hashed features per block; the 256-d projection dominates the noise
TEXT_VERSION = "text-v1"


def pixels_identity() -> str:
    """``baseline:pixels``' identity: its recipe's parameters (no weights)."""
    return make_identity(
        "baseline:pixels",
        PIXELS_VERSION,
        {"size": PIXELS_SIDE, "filter": "box", "mode": "RGB", "centre": "per-image mean"},
    )


def text_identity() -> str:
    """``baseline:text``' identity: its parameters and a digest of its seeded projection."""
    _, digest = _text_projection()
    return make_identity(
        "baseline:text",
        f"{TEXT_VERSION}:{digest}",
        {
            "word_ngrams": [1, 2],
            "char_wb_ngrams": [3, 5],
            "features": TEXT_FEATURES,
            "tf": "1+log",
            "lowercase": True,
            "strip_accents": "unicode",
        },
    )


def identity_from_parameters(spec: ModelSpec) -> str:
    """A baseline's exact identity without building it (it has no files to read)."""
    return pixels_identity() if spec.name == "pixels" else text_identity()


class PixelsBaseline(Adapter):
    modalities = frozenset({IMAGE})
    dim = 3 * PIXELS_SIDE * PIXELS_SIDE
    device = "cpu"
    default_batch_size = 256

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec
        self.identity = pixels_identity()

    def _preprocess_image(self, image: Image.Image) -> np.ndarray:
        from PIL import Image as PILImage

        small = image.resize((PIXELS_SIDE, PIXELS_SIDE), PILImage.Resampling.BOX)
        return np.asarray(small, dtype=np.float32).reshape(-1) / np.float32(255.0)

    def _embed_preprocessed(self, batch: list[Any]) -> np.ndarray:
        x = np.stack([np.asarray(b, dtype=np.float64).reshape(-1) for b in batch])
        x = x - x.mean(axis=1, keepdims=True)
        # The downsampled pixels are whole 1/255 steps, so any non-uniform image deviates from
        # its mean by well over 1e-3 somewhere; below that it is float rounding of a flat image.
        flat = np.abs(x).max(axis=1) < 1e-3
        x[flat] = 1.0  # uniform image: the constant direction (see the module docstring)
        return l2_normalize(x)


_projection_lock = threading.Lock()
_projection: tuple[np.ndarray, str] | None = None


def _text_projection() -> tuple[np.ndarray, str]:
    """The (2 * TEXT_FEATURES, TEXT_DIM) Gaussian matrix and a digest of its bytes.

    The digest goes into the identity: if a NumPy release ever changed the generator's stream,
    cached vectors would be invalidated instead of silently mixed with new ones.
    """
    global _projection
    with _projection_lock:
        if _projection is None:
            import hashlib

            rng = np.random.default_rng(TEXT_SEED)
            m = rng.standard_normal((2 * TEXT_FEATURES, TEXT_DIM), dtype=np.float32)
            m /= np.float32(np.sqrt(TEXT_DIM))
            _projection = (m, hashlib.blake2b(m.tobytes(), digest_size=16).hexdigest())
        return _projection


class TextBaseline(Adapter):
    modalities = frozenset({TEXT})
    dim = TEXT_DIM
    device = "cpu"
    default_batch_size = 1024

    def __init__(self, spec: str) -> None:
        super().__init__()
        from sklearn.feature_extraction.text import HashingVectorizer

        self.spec = spec
        common = dict(
            n_features=TEXT_FEATURES,
            alternate_sign=False,
            norm=None,
            lowercase=True,
            strip_accents="unicode",
            dtype=np.float32,
        )
        self._words = HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common)
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)
        self._matrix, _ = _text_projection()
        self.identity = text_identity()

    def _block(self, vectorizer: Any, texts: list[str]) -> Any:
        from sklearn.preprocessing import normalize

        x = vectorizer.transform(texts).tocsr()
        x.data = 1.0 + np.log(x.data)  # sublinear tf: a repeated word is not 10x as important
        return normalize(x, norm="l2", copy=False)

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        import scipy.sparse as sp

        x = sp.hstack([self._block(self._words, texts), self._block(self._chars, texts)]).tocsr()
        y = np.asarray(x @ self._matrix, dtype=np.float32)
        # An empty text has no features: give it a fixed direction rather than a zero vector.
        empty = np.linalg.norm(y, axis=1) < 1e-12
        y[empty] = self._matrix[0]
        return l2_normalize(y)


def load(spec: ModelSpec, device: str) -> Adapter:
    if spec.name == "pixels":
        return PixelsBaseline(spec.display)
    return TextBaseline(spec.display)
