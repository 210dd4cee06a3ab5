"""Resources shared by every session: the engine cache, opened datasets, loaded models.

Datasets and models are shared across sessions with ``st.cache_resource``: the engine's own
model registry is already thread-safe, and datasets are read-only once opened. Every shared
resource is keyed by the cache root as well as by its spec, so a process whose
``PARALLAX_CACHE`` changes (tests do this) never reuses a dataset extracted into another cache.
Per-session checks (view-only mode, the visitor policy) are ``dashboard.state``'s, in front of
``load_model_shared``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import streamlit as st

from engine.data.base import approx_nbytes
from engine.settings import cache_dir
from engine.store.cache import Cache


@st.cache_resource(show_spinner=False, max_entries=4)
def _engine_cache(root: str) -> Cache:
    return Cache(root)


def engine_cache() -> Cache:
    """The engine cache under the current cache root (``PARALLAX_CACHE`` or ``./cache``)."""
    return _engine_cache(str(cache_dir()))


class DatasetRegistry:
    """Opened datasets shared by every session: an LRU keyed by (spec, cache root), bounded by
    count and by ``settings.DATASET_CACHE_BYTES`` (approximate bytes held; the newest dataset is
    always kept), so one visitor's large upload is released instead of held for everyone.

    Not ``st.cache_resource`` itself, because opening reports progress into the calling page
    (a cached function must not draw). One lock per key: two sessions asking for the same new
    folder wait for one scan instead of running two. Failures are not remembered.
    """

    def __init__(self, max_entries: int = 16, max_bytes: int | None = None) -> None:
        from engine.settings import DATASET_CACHE_BYTES

        self.max_entries = max_entries
        self.max_bytes = DATASET_CACHE_BYTES if max_bytes is None else max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._sizes: dict[tuple[str, str], int] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    def get(self, spec: str, root: Path, progress=None):  # -> Dataset
        key = (spec, str(root))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            from engine.data import open_dataset

            ds = open_dataset(spec, cache_root=root, progress=progress)
            size = approx_nbytes(ds)
            with self._lock:
                self._items[key] = ds
                self._sizes[key] = size
                while len(self._items) > 1 and (
                    len(self._items) > self.max_entries or self.nbytes > self.max_bytes
                ):
                    old, _ = self._items.popitem(last=False)
                    self._sizes.pop(old, None)
                self._key_locks.pop(key, None)
            return ds

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by the datasets kept now."""
        return sum(self._sizes.values())


@st.cache_resource(show_spinner=False)
def dataset_registry() -> DatasetRegistry:
    return DatasetRegistry()


def get_dataset(spec: str, progress=None):  # -> Dataset
    """One opened dataset per spec, shared by all sessions (datasets are read-only).

    ``progress`` (an engine progress callback, e.g. ``ui.ProgressBar``) reports the up-front
    image checks of a folder / manifest / archive the first time it is opened. Raises the
    engine's ``DatasetError`` (a ``ParallaxError``) for a spec that cannot be opened; failures
    are not cached, so a fixed folder opens on the next try.
    """
    return dataset_registry().get(spec, engine_cache().root, progress)


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def load_model_shared(spec: str):  # -> EmbeddingModel
    """One loaded model per spec, shared by all sessions (forward passes are locked inside).
    Pages go through ``state.get_model``, which checks first whether this session may load it."""
    from engine.models import load_model

    return load_model(spec)


@st.cache_data(show_spinner=False, ttl=300)
def known_models() -> list[dict[str, Any]]:
    """The engine's model registry (spec, kind, modalities, description, available_offline)."""
    from engine.models import known_models as _known

    return [dict(m) for m in _known()]


@st.cache_data(show_spinner=False, ttl=300)
def list_demos() -> list[dict[str, Any]]:
    from engine.data import list_demos as _list

    return [dict(d) for d in _list()]
