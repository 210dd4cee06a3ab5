"""``hf:ORG/NAME`` / ``hf:PATH``: transformers CLIP and SigLIP dual encoders.

The class is chosen from ``config.json``'s ``model_type`` (read as plain JSON, so no code from
the repo runs to decide). Everything is then loaded from a local folder with
``local_files_only=True``; hub names are first brought into the HF cache by
``engine.models.offline``. ``trust_remote_code`` is passed as True only when the spec says
``?trust_remote_code=1``; only then are other model types tried through ``AutoModel``.

Tokenizer and image processor are loaded separately (not through ``AutoProcessor``) so that a
folder whose processor class does not match its tokenizer (tiny test models, converted
checkpoints) still works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ModelUnavailable
from engine.models import offline
from engine.models.base import IMAGE, TEXT, Adapter, load_errors, make_identity
from engine.models.device import batch_size_for, inference, is_cuda, to_device, to_numpy

if TYPE_CHECKING:
    from PIL import Image

    from engine.models.spec import ModelSpec

HF_PATTERNS = [*offline.CONFIG_PATTERNS, "*.safetensors"]
SUPPORTED = ("clip", "siglip")


def _fail(spec: ModelSpec, why: str) -> ModelUnavailable:
    return ModelUnavailable(f"model {spec.display}: {why}")


# Distributions whose versions decide what the identity's preprocessing part resolves to.
LIBRARIES = ("transformers", "tokenizers")


def _folder(spec: ModelSpec, *, download: bool) -> Path | None:
    return offline.model_folder(spec, HF_PATTERNS, ["config.json"], download=download)


def _weights_id(spec: ModelSpec, folder: Path) -> str:
    return offline.folder_weights_id(spec, folder, local=spec.path is not None)


def weights_source(spec: ModelSpec) -> str | None:
    """The weights part of the identity, from files already on disk (None if they are not)."""
    return offline.present_weights_id(spec, _folder, _weights_id)


def _resolve(spec: ModelSpec) -> tuple[Path, str]:
    return offline.resolve_folder(spec, _folder, _weights_id)


def _model_type(folder: Path, spec: ModelSpec) -> str:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(spec, f"cannot read {path}: {offline.one_line(exc)}") from exc
    return str(config.get("model_type", "")) if isinstance(config, dict) else ""


def _features(out: Any) -> Any:
    """transformers 5 returns a model output (projected embeds in ``pooler_output``); 4.x a
    bare tensor. Accept both."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(out, name, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected feature output {type(out).__name__}")


class HFDualEncoder(Adapter):
    modalities = frozenset({IMAGE, TEXT})

    def __init__(self, spec: ModelSpec, device: str) -> None:
        super().__init__()
        folder, weights = _resolve(spec)
        kind = _model_type(folder, spec)
        trust = spec.trust_remote_code
        if kind not in SUPPORTED and not trust:
            raise _fail(
                spec,
                f"hf: supports CLIP and SigLIP models (config model_type clip/siglip), not "
                f"{kind or 'an unknown type'}",
            )
        try:
            import transformers
        except ImportError:
            raise _fail(spec, "needs transformers: pip install transformers") from None
        cls = {"clip": transformers.CLIPModel, "siglip": transformers.SiglipModel}.get(
            kind, transformers.AutoModel
        )
        try:
            model = cls.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust
            )
            processor = transformers.AutoImageProcessor.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust
            )
        except load_errors() as exc:
            raise _fail(spec, f"cannot load from {folder}: {offline.one_line(exc)}") from exc
        model.eval().to(device)
        self._model = model
        self._tokenizer = tokenizer
        self._processor = processor
        self._siglip = kind == "siglip"
        text_cfg = getattr(model.config, "text_config", model.config)
        # SigLIP was trained on texts padded to the full length; CLIP pads to the longest text.
        self._padding = "max_length" if self._siglip else True
        self._max_length = int(getattr(text_cfg, "max_position_embeddings", 77))
        self.spec = spec.display
        self.device = device
        self.dim = _dim(model.config, kind)
        self.default_batch_size = batch_size_for(device, 256) if is_cuda(device) else 32
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = None if scale is None else float(scale.detach().float().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().reshape(-1)[0])
        pp = {k: v for k, v in processor.to_dict().items() if k not in ("processor_class",)}
        self.identity = make_identity(
            spec.identity_key,
            weights,
            {
                "image": pp,
                "tokenizer": type(tokenizer).__name__,
                "padding": str(self._padding),
                "max_length": self._max_length,
                "vocab_size": getattr(tokenizer, "vocab_size", None),
            },
        )

    def _vocabulary_tokenizer(self) -> Any:
        return self._tokenizer

    def _preprocess_image(self, image: Image.Image) -> Any:
        return self._processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def _embed_preprocessed(self, batch: list[Any]) -> np.ndarray:
        x = to_device(batch, self.device)
        with inference(self.device):
            feats = _features(self._model.get_image_features(pixel_values=x))
        return to_numpy(feats)

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        bs = self.default_batch_size * 4
        for i in range(0, len(texts), bs):
            enc = self._tokenizer(
                texts[i : i + bs],
                padding=self._padding,
                truncation=True,
                max_length=self._max_length,
                return_tensors="pt",
            )
            inputs = {"input_ids": enc["input_ids"].to(self.device)}
            # SigLIP's text tower was trained without an attention mask: passing one changes
            # the vectors, so it is only given to CLIP.
            if not self._siglip and "attention_mask" in enc:
                inputs["attention_mask"] = enc["attention_mask"].to(self.device)
            with inference(self.device):
                out.append(to_numpy(_features(self._model.get_text_features(**inputs))))
        return np.concatenate(out, axis=0)


def _dim(config: Any, kind: str) -> int:
    if kind == "clip":
        return int(config.projection_dim)
    text = getattr(config, "text_config", None)
    if text is not None:
        return int(getattr(text, "projection_size", None) or text.hidden_size)
    return int(getattr(config, "projection_dim", 0) or config.hidden_size)


def load(spec: ModelSpec, device: str) -> HFDualEncoder:
    return HFDualEncoder(spec, device)
