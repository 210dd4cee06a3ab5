"""What is embedded, and the maps of it: cached vectors, 2-D coordinates and UMAP jobs.

Nothing here loads a model. Derived data goes through ``st.cache_data`` keyed by the engine's
own content-hash keys (a projection's cache key), never by hashing large arrays in Streamlit;
every key comes from ``engine.params`` (the pages restate no recipe).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from dashboard import jobs, viewonly
from dashboard.resources import engine_cache
from engine.params import PCA, ProjectionParams
from engine.store import catalog
from engine.store.cache import Cache, Entry


def embedded_models(dataset: Any, cache: Cache | None = None) -> dict[str, dict[str, Entry]]:
    """``{model spec: {modality: newest finished vectors entry}}`` for this dataset
    (``engine.store.catalog.embeddings``: the fingerprint and the row count must match)."""
    return catalog.embeddings(dataset, cache or engine_cache())


def cached_vectors(dataset: Any, model_spec: str, modality: str | None = None) -> Entry | None:
    """The newest finished vectors entry for (dataset, model[, modality]), or None.

    Loads no model: pages use it to tell what is already embedded and to find the vectors
    the Embed page made.
    """
    for e in catalog.embeddings_by(dataset, model_spec, engine_cache()):
        if modality in (None, e.manifest.get("modality")):
            return e
    return None


@st.cache_data(show_spinner=False, max_entries=32)
def load_coords(projection_key: str, path: str) -> np.ndarray:
    """A finished projection's N x 2 coordinates, keyed by the projection's cache key."""
    return np.load(path, allow_pickle=False)


def coords_path(projection_key: str) -> str:
    """Where the coordinates of the map with this key are (or will be) in the cache."""
    return str(engine_cache().entry_dir("projections", projection_key) / "coords.npy")


@st.cache_resource(show_spinner=False)
def job_runner() -> jobs.JobRunner:
    return jobs.JobRunner()


def projection_job(entry: Entry, method: str = "umap", seed: int = 0) -> jobs.Job:
    """A (possibly finished) background job computing the cached map of a vectors entry.

    The job's result is the engine's ``ProjectionResult``; a map already in the cache finishes
    in milliseconds.
    """
    from engine.maps.project import project

    cache = engine_cache()
    key = f"{cache.root}:{entry.key}:{method}:{seed}"
    return job_runner().submit(
        key, f"{method.upper()} map", lambda: project(entry, method, seed=seed, cache=cache)
    )


def umap_in_cache(entry: Entry, seed: int = 0) -> bool:
    """Whether the UMAP map of ``entry`` (engine defaults) is in the cache; loads nothing."""
    umap = ProjectionParams(method="umap", seed=seed)
    return catalog.cached_map(entry, umap, engine_cache()) is not None


def umap_allowed(entry: Entry, seed: int = 0) -> bool:
    """Whether a UMAP map of ``entry`` may be asked for: always, except in view-only mode,
    where only a map already in the cache (e.g. from a bundle) is used: never computed."""
    return not viewonly.is_view_only() or umap_in_cache(entry, seed)


def pca_coords(entry: Entry, seed: int = PCA.seed) -> tuple[np.ndarray, str]:
    """(coordinates, projection key) of the PCA map of ``entry``, computed here if missing
    (PCA of 100k x 512 takes well under a second)."""
    from engine.maps.project import project

    result = project(entry, "pca", seed=seed, cache=engine_cache())
    return load_coords(result.key, str(result.path)), result.key


def projection_coords(entry: Entry, method: str = "pca", seed: int = 0) -> np.ndarray:
    """The map of a vectors entry computed in the calling thread (PCA; UMAP only when it is
    already in the cache, e.g. installed from a bundle)."""
    from engine.maps.project import project

    result = project(entry, method, seed=seed, cache=engine_cache())
    return load_coords(result.key, str(result.path))
