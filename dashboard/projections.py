"""What is embedded, and the maps of it: cached vectors, 2-D coordinates and UMAP jobs.

Nothing here loads a model. Derived data goes through ``st.cache_data`` keyed by the engine's
own content-hash keys (a projection's cache key), never by hashing large arrays in Streamlit;
every key comes from ``engine.params`` (the pages restate no recipe). The work is the
workspace's (``dashboard.resources``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from dashboard import jobs, resources, viewonly
from engine.params import PCA, ProjectionParams


def embedded_models(dataset: Any) -> dict[str, dict[str, Any]]:
    """``{model spec: {modality: newest finished vectors entry}}`` for this dataset (the
    fingerprint and the row count must match)."""
    return resources.workspace().embeddings(dataset)


def cached_vectors(dataset: Any, model_spec: str, modality: str | None = None) -> Any | None:
    """The newest finished vectors entry for (dataset, model[, modality]), or None.

    Loads no model: pages use it to tell what is already embedded and to find the vectors
    the Embed page made.
    """
    for e in resources.workspace().vectors_of(dataset, model_spec):
        if modality in (None, e.manifest.get("modality")):
            return e
    return None


@st.cache_data(show_spinner=False, max_entries=32)
def load_coords(projection_key: str, path: str) -> np.ndarray:
    """A finished projection's N x 2 coordinates, keyed by the projection's cache key."""
    return np.load(path, allow_pickle=False)


def coords_path(projection_key: str) -> str:
    """Where the coordinates of the map with this key are (or will be) in the cache."""
    return str(resources.engine_cache().entry_dir("projections", projection_key) / "coords.npy")


def job_runner() -> jobs.JobRunner:
    return jobs.job_runner()


def projection_job(entry: Any, method: str = "umap", seed: int = 0) -> jobs.Job:
    """A (possibly finished) background job computing the cached map of a vectors entry.

    The job's result is the engine's ``ProjectionResult``; a map already in the cache finishes
    in milliseconds.
    """
    ws = resources.workspace()
    key = f"{ws.root}:{entry.key}:{method}:{seed}"
    params = ProjectionParams(method=method, seed=seed)
    return job_runner().submit(key, f"{method.upper()} map", lambda: ws.map(entry, params))


def umap_in_cache(entry: Any, seed: int = 0) -> bool:
    """Whether the UMAP map of ``entry`` (engine defaults) is in the cache; loads nothing."""
    umap = ProjectionParams(method="umap", seed=seed)
    return resources.workspace().cached_map(entry, umap) is not None


def umap_allowed(entry: Any, seed: int = 0) -> bool:
    """Whether a UMAP map of ``entry`` may be asked for: always, except in view-only mode,
    where only a map already in the cache (e.g. from a bundle) is used: never computed."""
    return not viewonly.is_view_only() or umap_in_cache(entry, seed)


def map_coords(entry: Any, method: str = "pca", seed: int | None = None) -> tuple[np.ndarray, str]:
    """(coordinates, projection key) of the ``method`` map of ``entry``, computed here when
    missing (PCA of 100k x 512 takes well under a second; UMAP only when it is cached)."""
    params = ProjectionParams(method=method, seed=PCA.seed if seed is None else seed)
    result = resources.workspace().map(entry, params)
    return load_coords(result.key, str(result.path)), result.key


def pca_coords(entry: Any, seed: int = PCA.seed) -> tuple[np.ndarray, str]:
    """(coordinates, projection key) of the PCA map of ``entry``, computed here if missing."""
    return map_coords(entry, "pca", seed)
