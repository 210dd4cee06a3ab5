"""The protocol every model adapter implements, whatever library sits behind it.

Downstream code (embedding runner, cache, comparison) only ever sees this protocol. Vectors come
back as L2-normalised float32 NumPy arrays, one row per input.

``Adapter`` is the shared half of every implementation (modality checks, the per-model lock that
serialises forward passes, ``embed_images`` in terms of the other two methods). It imports
nothing heavy, so ``engine.models`` stays importable without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.errors import ParallaxError

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
    # Adapters also set ``logit_bias`` (SigLIP scores a pair with sigmoid(logit_scale * cosine +
    # logit_bias); None otherwise). It is read with getattr and kept out of the protocol so that
    # simpler models (test fakes) still pass ``isinstance(m, EmbeddingModel)``.

    def preprocess_image(self, image: Image.Image) -> Any:
        """Turn one RGB PIL image into the model's input (runs in decode worker threads)."""
        ...

    def embed_preprocessed(self, batch: list[Any]) -> np.ndarray:
        """Embed ``preprocess_image`` outputs: ``(len(batch), dim)`` float32, L2-normalised."""
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Convenience: preprocess then embed."""
        ...

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised. Raises for image-only models."""
        ...


class Adapter:
    """Common behaviour of the adapters; subclasses fill in the attributes and ``_embed_*``."""

    spec: str
    modalities: frozenset[str]
    dim: int
    identity: str
    device: str
    default_batch_size: int
    logit_scale: float | None = None
    logit_bias: float | None = None

    def __init__(self) -> None:
        # One forward pass at a time per model: the dashboard shares a loaded model between
        # sessions (threads), and neither torch modules nor HF tokenizers promise re-entrancy.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} on {self.device}, dim={self.dim}>"

    def _require(self, modality: str) -> None:
        if modality not in self.modalities:
            wants = " and ".join(sorted(m + "s" for m in self.modalities))
            raise ParallaxError(f"model {self.spec} embeds {wants} only, not {modality}s")

    # -- public API ---------------------------------------------------------------------------
    def preprocess_image(self, image: Image.Image) -> Any:
        self._require(IMAGE)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self._preprocess_image(image)

    def embed_preprocessed(self, batch: list[Any]) -> np.ndarray:
        self._require(IMAGE)
        if not batch:
            return _empty(self.dim)
        with self._lock:
            return self._embed_preprocessed(list(batch))

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_preprocessed([self.preprocess_image(im) for im in images])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self._require(TEXT)
        if not texts:
            return _empty(self.dim)
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        with self._lock:
            return self._embed_texts(texts)

    def unknown_words(self, text: str) -> list[str] | None:
        """Words of ``text`` the text tokenizer maps to its unknown token (``[]``: none); None
        when that cannot be told (no text tower, or a tokenizer without an unknown token)."""
        if TEXT not in self.modalities:
            return None
        from engine.models.vocab import unknown_words

        tokenizer = self._vocabulary_tokenizer()
        return None if tokenizer is None else unknown_words(tokenizer, text)

    def _vocabulary_tokenizer(self) -> Any:
        """The Hugging Face tokenizer of the text tower, where there is one (else None)."""
        return None

    # -- filled in by subclasses --------------------------------------------------------------
    def _preprocess_image(self, image: Image.Image) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _embed_preprocessed(self, batch: list[Any]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


def load_errors() -> tuple[type[BaseException], ...]:
    """What model libraries raise for files a user can fix: missing or unreadable files, corrupt
    or truncated checkpoints, configs and weights that do not match. Adapters turn these into a
    one-line ``ModelUnavailable`` (keeping the cause); anything else is a bug and propagates
    with its traceback."""
    import pickle
    import zipfile

    errors: list[type[BaseException]] = [
        OSError,  # missing, unreadable, a hub file not cached (transformers' EnvironmentError)
        ValueError,  # bad JSON, unknown config values, shape mismatches reported as values
        RuntimeError,  # state-dict key / size mismatches (strict loading)
        KeyError,  # a config without a required key
        EOFError,
        pickle.UnpicklingError,  # a .pt that is not a weights-only checkpoint
        zipfile.BadZipFile,  # a truncated torch zip checkpoint
    ]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


def _empty(dim: int) -> np.ndarray:
    import numpy as np

    return np.zeros((0, dim), dtype=np.float32)


# -- identity ----------------------------------------------------------------------------------
# Weight files are hashed in full (a sampled hash would let two checkpoints share a cache key).
# Hashing a large file takes a while, so digests are remembered per (path, size, mtime).
_digest_lock = threading.Lock()
_digests: dict[tuple[str, int, int], str] = {}

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz", ".ckpt")
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")


def file_digest(path: str | os.PathLike[str]) -> str:
    """Full-content BLAKE2b of one file, memoised by path, size and modification time."""
    p = os.path.realpath(path)
    st = os.stat(p)
    key = (p, st.st_size, st.st_mtime_ns)
    with _digest_lock:
        hit = _digests.get(key)
    if hit is not None:
        return hit
    h = hashlib.blake2b(digest_size=20)
    with open(p, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    digest = h.hexdigest()
    with _digest_lock:
        _digests[key] = digest
    return digest


def folder_digest(folder: str | os.PathLike[str]) -> str:
    """Digest of a model folder: every weight and config file below it, by relative path.

    README files, dot-files and anything else (images in a model card, logs) are left out so
    that editing documentation does not invalidate cached vectors.
    """
    root = Path(folder)
    h = hashlib.blake2b(digest_size=20)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if not p.is_file() or not p.name.lower().endswith(WEIGHT_SUFFIXES + CONFIG_SUFFIXES):
            continue
        h.update(f"{rel}\0{file_digest(p)}\n".encode())
    return h.hexdigest()


def make_identity(spec: str, weights: str, preprocess: dict[str, Any]) -> str:
    """Stable hex identity of (spec, weights identity, preprocessing config)."""
    blob = json.dumps(
        {"spec": spec, "weights": weights, "preprocess": preprocess},
        sort_keys=True,
        default=str,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
