"""Objects held in memory under one byte bound: opened datasets, loaded models, prompt vectors.

Every in-memory holder of the engine is one ``Held``: least recently used out first once the
bound (bytes, and optionally a count) is passed, one builder per key so two callers asking for
the same new thing wait for one build instead of running two, and failures never remembered
(a fixed folder opens on the next try). The newest entry is always kept, even alone over the
bound: refusing what is too big is the budget's job (``engine.policy``), not the holder's.
Evictions are logged, so an operator can see why memory came back or why a model reloads.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
import weakref
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
        max_idle_s: float | None = None,
    ) -> None:
        self.name = name
        self.max_idle_s = max_idle_s
        self.max_bytes = int(max_bytes)
        self.max_entries = max_entries
        self._size_of = size_of
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}
        self._key_locks: dict[K, threading.Lock] = {}
        self._used: dict[K, float] = {}
        _HOLDERS.add(self)

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self._used[key] = time.monotonic()
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
            self._used[key] = time.monotonic()
            self._shrink()

    def _shrink(self) -> None:
        while len(self._items) > 1 and (
            self._nbytes() > self.max_bytes
            or (self.max_entries is not None and len(self._items) > self.max_entries)
        ):
            old, _ = self._items.popitem(last=False)
            self._used.pop(old, None)
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
            self._used.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()
            self._used.clear()
            self._key_locks.clear()

    def reap(self, now: float | None = None) -> int:
        """Drop entries unused for ``max_idle_s`` (all of them may go); bytes freed."""
        if self.max_idle_s is None:
            return 0
        now = time.monotonic() if now is None else now
        freed = 0
        with self._lock:
            for key in [k for k, t in self._used.items() if now - t >= self.max_idle_s]:
                self._items.pop(key, None)
                self._used.pop(key, None)
                freed += self._sizes.pop(key, 0)
                log.info("%s: released %s after %.0f s unused", self.name, key, self.max_idle_s)
        return freed

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


# Every holder of the process, so that idle entries of all of them are released together.
_HOLDERS: weakref.WeakSet[Held] = weakref.WeakSet()
# What a front end holds per visitor beyond the holders (a web framework's closed sessions):
# called on every tick before the heap is trimmed.
_RELEASE_HOOKS: list[Callable[[], None]] = []


def add_release_hook(hook: Callable[[], None]) -> None:
    """Call ``hook`` on every idle-release tick (once per hook, whoever registers it again)."""
    with _reaper_lock:
        if hook not in _RELEASE_HOOKS:
            _RELEASE_HOOKS.append(hook)


_reaper: threading.Thread | None = None
_reaper_lock = threading.Lock()


def release_idle(now: float | None = None) -> int:
    """Release what every holder has kept unused past its ``max_idle_s``, then hand the freed
    heap back to the operating system (CPython and glibc keep it otherwise, so a server's
    memory would stay at its peak after the visitors leave). Returns the bytes released."""
    freed = sum(h.reap(now) for h in list(_HOLDERS))
    for hook in list(_RELEASE_HOOKS):
        try:
            hook()
        except Exception:  # a front end's hook must not stop the engine's release
            log.exception("release hook %r failed", hook)
    # Collected and trimmed on every tick, not only when a holder let go: what a front end
    # held per visitor (a Streamlit session, its uploaded bytes) goes when the visitor leaves,
    # and without a trim that heap stays mapped at its peak.
    gc.collect()
    trim_heap()
    return freed


def trim_heap() -> None:
    """Hand freed heap back to the operating system: Arrow's own allocator (mimalloc or
    jemalloc keep freed pages for reuse: ~90 MB after one large Parquet here) when pyarrow is
    loaded, then glibc's ``malloc_trim(0)`` (Linux; a no-op elsewhere)."""
    import sys

    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        with contextlib.suppress(Exception):  # an allocator without the call: nothing to do
            arrow.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def start_reaper(every_s: float) -> None:
    """One daemon thread per process that calls ``release_idle`` every ``every_s`` seconds."""
    global _reaper
    with _reaper_lock:
        if _reaper is not None and _reaper.is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(every_s)
                try:
                    release_idle()
                except Exception:  # the reaper must never die: log and keep going
                    log.exception("releasing idle objects failed")

        _reaper = threading.Thread(target=loop, name="parallax-release-idle", daemon=True)
        _reaper.start()
