"""Objects held in memory under one byte bound: opened datasets, loaded models, prompt vectors.

Every in-memory holder of the engine is one ``Held``: least recently used out first once the
bound (bytes, and optionally a count) is passed, one builder per key so two callers asking for
the same new thing wait for one build instead of running two, and failures never remembered
(a fixed folder opens on the next try). The newest entry is always kept, even alone over the
bound: refusing what is too big is the budget's job (``engine.policy``), not the holder's.
Evictions are logged, so an operator can see why memory came back or why a model reloads.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)


class Held(Generic[K, V]):
    """A least-recently-used map bounded by approximate bytes (``size_of``) and entries."""

    def __init__(
        self,
        name: str,
        max_bytes: int,
        *,
        size_of: Callable[[V], int],
        max_entries: int | None = None,
    ) -> None:
        self.name = name
        self.max_bytes = int(max_bytes)
        self.max_entries = max_entries
        self._size_of = size_of
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}
        self._key_locks: dict[K, threading.Lock] = {}

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """The held value for ``key``, built (once, whoever else asks meanwhile) when absent."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            hit = self.get(key)
            if hit is not None:
                return hit
            try:
                value = build()
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            self.put(key, value)
            return value

    def put(self, key: K, value: V) -> None:
        size = max(0, int(self._size_of(value)))
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            self._sizes[key] = size
            self._shrink()

    def _shrink(self) -> None:
        while len(self._items) > 1 and (
            self._nbytes() > self.max_bytes
            or (self.max_entries is not None and len(self._items) > self.max_entries)
        ):
            old, _ = self._items.popitem(last=False)
            freed = self._sizes.pop(old, 0)
            log.info(
                "%s: evicted %s (%.1f MB) to stay under %.0f MB",
                self.name,
                old,
                freed / 1e6,
                self.max_bytes / 1e6,
            )

    def _nbytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def nbytes(self) -> int:
        """Approximate bytes held now."""
        with self._lock:
            return self._nbytes()

    def discard(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._sizes.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._key_locks.clear()

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items
