"""``open_clip:...``: OpenCLIP models from a pretrained tag, the hub, a folder or a checkpoint.

Every form is reduced to the same three things before open_clip sees them: a model config
(built-in name or a folder with ``open_clip_config.json``), a local weights file and the
preprocessing overrides of the tag. The model is then created *without* weights and the
checkpoint loaded explicitly, because open_clip on its own falls back to random weights with
only a log warning when a checkpoint is missing, and would reach the network for tags and
``hf-hub:`` names. Here, missing weights are a ``ModelUnavailable``; random weights happen only
for an explicit ``open_clip:ARCH/random`` (seeded, so they are reproducible).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ModelUnavailable
from engine.models import offline
from engine.models.base import (
    IMAGE,
    TEXT,
    Adapter,
    file_digest,
    folder_digest,
    load_errors,
    make_identity,
)
from engine.models.device import (
    batch_size_for,
    inference,
    is_cuda,
    prepare_module,
    to_device,
    to_numpy,
)

if TYPE_CHECKING:
    from PIL import Image

    from engine.models.spec import ModelSpec

RANDOM_SEED = 0
WEIGHT_NAMES = [
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
]


@dataclass
class _Plan:
    """What to build: open_clip model name, weights file, overrides, identity parts."""

    model_name: str  # a built-in architecture or "local-dir:<folder holding the config>"
    model_cfg: dict[str, Any]
    checkpoint: Path | None
    weights_id: str
    tokenizer_dir: Path | None = None  # folder with HF tokenizer files, when the config needs one
    overrides: dict[str, Any] = field(default_factory=dict)


def _fail(spec: ModelSpec, why: str) -> ModelUnavailable:
    return ModelUnavailable(f"model {spec.display}: {why}")


def _read_config(folder: Path, spec: ModelSpec) -> dict[str, Any]:
    path = folder / "open_clip_config.json"
    if not path.is_file():
        raise _fail(spec, f"{path} is missing (an open_clip folder holds open_clip_config.json)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(spec, f"cannot read {path}: {offline.one_line(exc)}") from exc
    if not isinstance(config, dict) or "model_cfg" not in config:
        raise _fail(spec, f"{path} has no model_cfg")
    return config


def _find_weights(folder: Path) -> Path | None:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return found[0] if found else None


def _tag_overrides(cfg: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing and activation a pretrained tag was trained with."""
    out: dict[str, Any] = {}
    for key, arg in (
        ("mean", "image_mean"),
        ("std", "image_std"),
        ("interpolation", "image_interpolation"),
        ("resize_mode", "image_resize_mode"),
    ):
        if cfg.get(key) is not None:
            out[arg] = cfg[key]
    if cfg.get("quick_gelu"):
        # open_clip only warns on a QuickGELU mismatch; loading such weights into a GELU model
        # gives subtly wrong vectors, so follow the tag.
        out["force_quick_gelu"] = True
    return out


def _tag_weights(spec: ModelSpec, arch: str, tag: str, cfg: dict[str, Any]) -> tuple[Path, str]:
    if cfg.get("file"):
        path = Path(cfg["file"])
        return path, f"file:{file_digest(path)}"
    hub = cfg.get("hf_hub") or ""
    if hub:
        # open_clip's convention: "org/repo/" means the default file, "org/repo/file" a file.
        repo_id, filename = posixpath.split(hub)
        filename = filename or "open_clip_pytorch_model.bin"
        names = [filename]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")  # open_clip prefers these too
        if filename == "open_clip_pytorch_model.bin":
            names.insert(0, "open_clip_model.safetensors")
        path = offline.hub_file(repo_id, names, spec=spec.display)
        return path, f"hub:{repo_id}@{offline.commit_of(path) or file_digest(path)}"
    url = cfg.get("url") or ""
    if url:
        local = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if local.is_file():
            return local, f"file:{file_digest(local)}"
        if not offline.hub_reachable():
            raise ModelUnavailable(
                f"model {spec.display} is not available: {local} does not exist and the "
                f"download ({url}) needs a network; pass a local checkpoint "
                f"(open_clip:{arch}/path/to/weights.pt) or copy the file there"
            )
        try:
            from open_clip.pretrained import download_pretrained_from_url

            path = Path(download_pretrained_from_url(url))
        except OSError as exc:  # URLError and friends, a full disk
            raise _fail(spec, f"download of {url} failed: {offline.one_line(exc)}") from exc
        except RuntimeError as exc:  # open_clip's checksum check
            raise _fail(spec, f"download of {url} failed: {offline.one_line(exc)}") from exc
        return path, f"file:{file_digest(path)}"
    raise _fail(spec, f"the tag {tag} of {arch} names no weights")


# Distributions whose versions decide what the identity's preprocessing part resolves to.
LIBRARIES = ("open_clip_torch", "torch", "timm", "transformers", "tokenizers")


def weights_source(spec: ModelSpec) -> str | None:
    """The weights part of the identity from files already on disk, without importing
    open_clip (None when that cannot be known so: a pretrained tag is resolved by open_clip's
    own table, and hub files may not be downloaded yet)."""
    if spec.name == "local-dir":
        folder = Path(spec.path or "")
        return f"local:{folder_digest(folder)}" if folder.is_dir() else None
    if spec.path is None and spec.pretrained is None:  # open_clip:hf-hub:ORG/REPO
        config = offline.cached_snapshot(spec.name, ["open_clip_config.json"])
        weights = offline.cached_hub_file(spec.name, WEIGHT_NAMES[:3])
        if config is None or weights is None:
            return None
        return f"hub:{spec.name}@{offline.commit_of(weights) or file_digest(weights)}"
    if spec.pretrained == "random":
        return f"random:seed{RANDOM_SEED}"
    if spec.path is not None:
        path = Path(spec.path)
        return f"file:{file_digest(path)}" if path.is_file() else None
    return None


def _plan(spec: ModelSpec) -> _Plan:
    import open_clip

    if spec.name == "local-dir":
        folder = Path(spec.path or "")
        if not folder.is_dir():
            raise _fail(spec, f"{folder} is not a folder")
        config = _read_config(folder, spec)
        weights = _find_weights(folder)
        if weights is None:
            raise _fail(spec, f"no weights in {folder} (expected open_clip_model.safetensors)")
        return _Plan(
            f"local-dir:{folder}",
            config["model_cfg"],
            weights,
            f"local:{folder_digest(folder)}",
            tokenizer_dir=folder,
        )
    if spec.path is None and spec.pretrained is None:  # open_clip:hf-hub:ORG/REPO
        repo = spec.name
        folder = offline.hub_snapshot(
            repo,
            spec=spec.display,
            patterns=["open_clip_config.json", *offline.TOKENIZER_PATTERNS],
            required=["open_clip_config.json"],
        )
        config = _read_config(folder, spec)
        weights = offline.hub_file(repo, WEIGHT_NAMES[:3], spec=spec.display)
        return _Plan(
            f"local-dir:{folder}",
            config["model_cfg"],
            weights,
            f"hub:{repo}@{offline.commit_of(weights) or file_digest(weights)}",
            tokenizer_dir=folder,
        )
    arch = spec.name
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise _fail(spec, f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
    if spec.pretrained == "random":
        return _Plan(arch, model_cfg, None, f"random:seed{RANDOM_SEED}")
    if spec.path is not None:
        path = Path(spec.path)
        if not path.is_file():
            raise _fail(spec, f"checkpoint {path} does not exist")
        return _Plan(arch, model_cfg, path, f"file:{file_digest(path)}")
    tag = spec.pretrained or ""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        tags = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "") if known else "none"
        raise _fail(spec, f"unknown pretrained tag {tag!r} for {arch} (known: {tags})")
    weights, weights_id = _tag_weights(spec, arch, tag, cfg)
    return _Plan(arch, model_cfg, weights, weights_id, overrides=_tag_overrides(cfg))


def _tokenizer(spec: ModelSpec, plan: _Plan) -> tuple[Any, dict[str, Any]]:
    """The text tokenizer, built from local files only; plus its description for the identity."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer, SimpleTokenizer

    text_cfg = dict(plan.model_cfg.get("text_cfg", {}))
    ctx = int(text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH))
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:
        folder = plan.tokenizer_dir
        if folder is None or not any(folder.glob("tokenizer*")):
            folder = offline.hub_snapshot(
                hf_name, spec=spec.display, patterns=offline.TOKENIZER_PATTERNS
            )
        try:
            tok = HFTokenizer(
                str(folder),
                context_length=ctx,
                tokenizer_mode=text_cfg.get("tokenizer_mode"),
                **kwargs,
            )
        except load_errors() as exc:
            raise _fail(
                spec, f"cannot build the tokenizer {hf_name} from {folder}: {offline.one_line(exc)}"
            ) from exc
        desc = {"tokenizer": f"hf:{hf_name}", "context_length": ctx, "kwargs": kwargs}
        return tok, desc
    if "siglip" in plan.model_name.lower() and not plan.model_name.startswith("local-dir:"):
        raise _fail(spec, "this SigLIP config names no hf_tokenizer_name; use open_clip:hf-hub:")
    # open_clip's default BPE tokenizer ships its vocabulary with the package: no network.
    tok = SimpleTokenizer(context_length=ctx, **kwargs)
    return tok, {"tokenizer": "open_clip.SimpleTokenizer", "context_length": ctx, "kwargs": kwargs}


class _DropRandomInitWarnings(logging.Filter):
    # open_clip warns "initialized randomly" because we create the model without weights and
    # load the checkpoint right after; the warning would mislead users reading the logs.
    PREFIXES = ("No pretrained weights loaded for model", "Local config loaded, but no CLIP")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


@contextlib.contextmanager
def _quiet_random_init_warnings() -> Iterator[None]:
    root = logging.getLogger()  # open_clip logs through the root logger
    f = _DropRandomInitWarnings()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


class OpenClipModel(Adapter):
    modalities = frozenset({IMAGE, TEXT})

    def __init__(self, spec: ModelSpec, device: str) -> None:
        super().__init__()
        try:
            import open_clip
            import torch
        except ImportError:
            raise ModelUnavailable(
                f"model {spec.display} needs open_clip: pip install open_clip_torch"
            ) from None
        plan = _plan(spec)
        tokenizer, tok_desc = _tokenizer(spec, plan)
        try:
            # fork_rng: the seeded random init (and any init) leaves the caller's RNG alone.
            with torch.random.fork_rng(devices=[]), _quiet_random_init_warnings():
                torch.manual_seed(RANDOM_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    plan.model_name,
                    load_weights=False,
                    pretrained_image=False,
                    pretrained_text=False,  # never fetch tower weights from the hub
                    device="cpu",
                    **plan.overrides,
                )
            if plan.checkpoint is not None:
                open_clip.load_checkpoint(
                    model, str(plan.checkpoint), strict=True, weights_only=True
                )
        except load_errors() as exc:
            where = f" from {plan.checkpoint}" if plan.checkpoint else ""
            raise _fail(spec, f"cannot build the model{where}: {offline.one_line(exc)}") from exc
        model.eval().to(device)
        model.visual = prepare_module(model.visual, device)  # CUDA: channels_last (+ compile)
        self._model = model
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self.spec = spec.display
        self.device = device
        self.dim = int(_embed_dim(model, plan.model_cfg))
        self.default_batch_size = batch_size_for(device, 256) if is_cuda(device) else 32
        self.logit_scale = float(model.logit_scale.detach().float().exp().item())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float().reshape(-1)[0])
        pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        self.pixel_config = pp  # what engine.embed.gpu_decode repeats on the device
        self.identity = make_identity(
            spec.identity_key,
            plan.weights_id,
            {
                "image": pp,
                "text": tok_desc,
                "quick_gelu": bool(plan.overrides.get("force_quick_gelu")),
            },
        )

    def _preprocess_image(self, image: Image.Image) -> Any:
        return self._preprocess(image)

    def _embed_preprocessed(self, batch: list[Any]) -> np.ndarray:
        x = to_device(batch, self.device)
        with inference(self.device):
            feats = self._model.encode_image(x)
        return to_numpy(feats)

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """Embed an N x 3 x S x S tensor already preprocessed on ``self.device``."""
        with self._lock, inference(self.device):
            return to_numpy(self._model.encode_image(pixels))

    def _vocabulary_tokenizer(self) -> Any:
        return getattr(self._tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps one

    def _embed_texts(self, texts: list[str]) -> np.ndarray:
        out = []
        bs = self.default_batch_size * 4  # text towers are cheaper than image towers
        for i in range(0, len(texts), bs):
            tokens = to_device(self._tokenizer(texts[i : i + bs]), self.device)
            with inference(self.device):
                out.append(to_numpy(self._model.encode_text(tokens)))
        return np.concatenate(out, axis=0)


def _embed_dim(model: Any, model_cfg: dict[str, Any]) -> int:
    if model_cfg.get("embed_dim"):
        return int(model_cfg["embed_dim"])
    return int(getattr(model, "embed_dim", 0) or model.text_projection.shape[1])


def load(spec: ModelSpec, device: str) -> OpenClipModel:
    return OpenClipModel(spec, device)
