"""Parallax engine: datasets -> models -> cached vectors -> 2-D maps and comparisons.

Pure Python, no Streamlit. Heavy libraries (torch, open_clip, transformers, umap) are imported
inside the functions that need them, so browsing cached results never pays for them. The public
API below is importable from ``engine`` directly; each name loads its module on first use, so
``import engine`` itself stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that owns it.
_PUBLIC = {
    "open_dataset": "engine.data",
    "list_demos": "engine.data",
    "load_model": "engine.models",
    "known_models": "engine.models",
    "parse_spec": "engine.models",
    "Cache": "engine.store.cache",
    "embed_dataset": "engine.embed.local",
    "EmbeddingResult": "engine.embed.local",
    "project": "engine.maps.project",
    "ProjectionResult": "engine.maps.project",
    "map_quality": "engine.maps.project",
    "compare_models": "engine.analysis.compare",
    "ComparisonReport": "engine.analysis.compare",
    "predict_each": "engine.analysis.predict",
    "write_bundle": "engine.outputs.bundle",
    "open_bundle": "engine.data.bundle",
    "ParallaxError": "engine.errors",
    "DatasetError": "engine.errors",
    "ModelUnavailable": "engine.errors",
    "CacheError": "engine.errors",
    "QuotaError": "engine.errors",
    "stage_upload": "engine.store.uploads",
    "UploadFile": "engine.store.uploads",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value
