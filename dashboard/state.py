"""Session state and shared resources for every page.

Datasets and models are shared across sessions with ``st.cache_resource``: the engine's own
model registry is already thread-safe, and datasets are read-only once opened. Anything a user
uploads lives under ``cache/uploads/<session id>/`` so one session never sees another's files.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st

from engine.cache import Cache
from engine.config import cache_dir

DEFAULT_DATASET = "demo:digits"
DEFAULT_MODELS = ["baseline:pixels"]


@st.cache_resource(show_spinner=False)
def engine_cache() -> Cache:
    return Cache(cache_dir())


@st.cache_resource(show_spinner="Opening dataset…", max_entries=16)
def get_dataset(spec: str):  # -> Dataset
    """One opened dataset per spec, shared by all sessions (datasets are read-only)."""
    from engine.datasets import open_dataset

    return open_dataset(spec, cache_root=engine_cache().root)


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def get_model(spec: str):  # -> EmbeddingModel
    """One loaded model per spec, shared by all sessions (forward passes are locked inside)."""
    from engine.models import load_model

    return load_model(spec)


def session_id() -> str:
    if "_parallax_session" not in st.session_state:
        st.session_state["_parallax_session"] = uuid.uuid4().hex
    return st.session_state["_parallax_session"]


def session_upload_dir() -> Path:
    """This session's private upload folder, inside the cache."""
    path = engine_cache().root / "uploads" / session_id()
    path.mkdir(parents=True, exist_ok=True)
    return path


def dataset_spec() -> str:
    return st.session_state.get("dataset_spec", DEFAULT_DATASET)


def set_dataset_spec(spec: str) -> None:
    st.session_state["dataset_spec"] = spec


def model_specs() -> list[str]:
    return list(st.session_state.get("model_specs", DEFAULT_MODELS))


def set_model_specs(specs: list[str]) -> None:
    st.session_state["model_specs"] = list(specs)
