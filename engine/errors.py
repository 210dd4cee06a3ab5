"""User-facing errors: each carries one clear line meant to be shown as-is.

The CLI prints ``str(err)`` on stderr and exits non-zero; the pages show it with
``st.error``. Anything that is *not* a ``ParallaxError`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class ParallaxError(Exception):
    """Base class for errors caused by user input or the environment (not by bugs)."""


class DatasetError(ParallaxError):
    """A dataset spec cannot be opened at all (missing path, unknown kind, empty dataset)."""


class ItemError(ParallaxError):
    """One item of a dataset is unusable; the dataset skips it and records the reason."""


class ModelUnavailable(ParallaxError):
    """A model spec cannot be loaded: unknown kind, weights not on disk and no network, ..."""


class CacheError(ParallaxError):
    """The cache directory cannot be written (read-only, disk full) or an entry is corrupt."""


class QuotaError(ParallaxError):
    """A write would take a namespace of the cache past its disk quota (``engine.settings``)."""
