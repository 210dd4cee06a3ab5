"""Model registry: one ``load_model(spec)`` in front of one adapter per library.

Importing this package is cheap and torch-free (the dashboard's view-only mode relies on it);
torch, open_clip, transformers and sentence-transformers load with the first model that needs
them.
"""

from __future__ import annotations

from engine.models.base import IMAGE, TEXT, EmbeddingModel
from engine.models.device import run_with_oom_retry
from engine.models.registry import (
    ModelSpec,
    aliases,
    clear_cache,
    known_models,
    load_model,
    parse_spec,
    register_alias,
)

__all__ = [
    "IMAGE",
    "TEXT",
    "EmbeddingModel",
    "ModelSpec",
    "aliases",
    "clear_cache",
    "known_models",
    "load_model",
    "parse_spec",
    "register_alias",
    "run_with_oom_retry",
]
