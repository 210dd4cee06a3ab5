"""Models: one ``load_model(spec)`` in front of one adapter per library (``ADAPTERS``).

Importing this package is cheap and torch-free (the dashboard's view-only mode relies on it);
torch, open_clip, transformers and sentence-transformers load with the first model that needs
them.
"""

from __future__ import annotations

from engine.models.base import IMAGE, TEXT, EmbeddingModel
from engine.models.device import run_with_oom_retry
from engine.models.registry import (
    ADAPTERS,
    clear_cache,
    known_models,
    load_model,
    modalities_of,
)
from engine.models.spec import ModelSpec, aliases, parse_spec, register_alias

__all__ = [
    "ADAPTERS",
    "IMAGE",
    "TEXT",
    "EmbeddingModel",
    "ModelSpec",
    "aliases",
    "clear_cache",
    "known_models",
    "load_model",
    "modalities_of",
    "parse_spec",
    "register_alias",
    "run_with_oom_retry",
]


def _register_shipped_models() -> None:
    """``demo:shapes-clip`` etc.: the CLIP models trained in this repository (``models/``).

    They load through the same open_clip ``local-dir:`` adapter as any user's model; the alias is
    only a short name. A missing folder (a trimmed checkout) registers nothing.
    """
    from engine.settings import SHIPPED_MODELS_DIR

    root = SHIPPED_MODELS_DIR
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        # Hidden folders are a training run's staging area (training/train_clip.py), not models.
        if not folder.name.startswith(".") and (folder / "open_clip_config.json").is_file():
            register_alias(folder.name, f"open_clip:local-dir:{folder}")


_register_shipped_models()
