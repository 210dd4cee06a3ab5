"""Read-through cache entries: look up; else lock, look up again, compute, write atomically.

Every artefact the engine computes once and keeps (vectors, maps, comparison reports, fusion
heads, extracted archives, model identities) follows the same steps, so they are written once
here:

1. the caller turns its key material into a key (``make_key`` or a params object's
   ``cache_key``: the keys themselves are the caller's, pinned by tests/test_params.py);
2. ``read(path)`` looks the entry up: a hit is a use (``touch``: prune keeps recently used
   entries) and is returned as is;
3. a miss takes the key's cross-process writer lock (``engine.store.locks.locked``) and looks
   again: another process may have finished the same work while this one waited;
4. still missing, ``make(path)`` computes and writes the entry through ``engine.store.atomic``
   (temp name, fsync, rename), so a reader never sees half of it.

``read_through`` is the helper; ``json_entry`` and ``array_entry`` are it with the reading and
writing of the two common entry shapes filled in. ``claim`` is steps 2-3 alone, for a job that
writes its entry in several steps under the lock (resumable vectors).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engine.store.atomic import ReadOnlyCache, atomic_write_json
from engine.store.locks import locked
from engine.store.space import touch

if TYPE_CHECKING:
    import numpy as np

    from engine.store.cache import Cache, Entry

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Memo(Generic[T]):
    """What ``read_through`` found or made: the value, whether it came from the cache, where."""

    value: T
    cached: bool
    path: Path


@contextlib.contextmanager
def claim(
    cache: Cache, kind: str, key: str, read: Callable[[Path], T | None]
) -> Iterator[T | None]:
    """The stored value of ``(kind, key)``, or None while this process holds the key's writer
    lock to make it (looked up again under the lock). The lock is released on leaving."""
    path = cache.path(kind, key)
    found = read(path)
    if found is None:
        with locked(cache.root, key):
            found = read(path)
            if found is None:
                log.debug("cache miss: %s %s", kind, key[:12])
                yield None
                return
    touch(path)
    yield found


def read_through(
    cache: Cache,
    kind: str,
    key: str,
    *,
    read: Callable[[Path], T | None],
    make: Callable[[Path], T],
) -> Memo[T]:
    """The entry ``(kind, key)``: ``read(path)`` when it is there (None: missing or unreadable),
    else ``make(path)``, which computes it and writes it under ``path`` atomically, once across
    processes (under the key's writer lock)."""
    with claim(cache, kind, key, read) as found:
        path = cache.path(kind, key)
        if found is not None:
            return Memo(found, True, path)
        return Memo(make(path), False, path)


def _json_or_none(path: Path) -> Any:
    """The JSON at ``path``; None when it is missing or torn (then it is made again)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("recomputing unreadable cache entry %s: %s", path, exc)
        return None


def json_entry(
    cache: Cache,
    kind: str,
    key: str,
    compute: Callable[[], T],
    *,
    decode: Callable[[Any], T | None] = lambda obj: obj,
    encode: Callable[[T], Any] = lambda value: value,
    keep: Callable[[T], bool] = lambda value: True,
) -> Memo[T]:
    """A JSON file entry (``<kind>/<key>.json``): ``decode(obj)`` of the stored JSON (None, or
    a ``KeyError`` / ``TypeError`` / ``ValueError``, counts as missing), else ``compute()``,
    stored as ``encode(value)`` when ``keep(value)`` (a result built from failures is not)
    and the cache is writable (on a read-only cache the value is returned unstored)."""

    def read(path: Path) -> T | None:
        obj = _json_or_none(path)
        if obj is None:
            return None
        try:
            return decode(obj)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("recomputing cache entry %s of another shape: %s", path, exc)
            return None

    def make(path: Path) -> T:
        value = compute()
        if keep(value):
            try:
                atomic_write_json(path, encode(value))
            except ReadOnlyCache:  # a JSON entry only saves time: the value is still right
                log.info("read-only cache: %s %s computed, not stored", kind, key[:12])
        return value

    return read_through(cache, kind, key, read=read, make=make)


def array_entry(
    cache: Cache,
    kind: str,
    key: str,
    compute: Callable[[], tuple[np.ndarray, dict[str, Any]]],
) -> Memo[Entry]:
    """An array entry (``vectors`` / ``projections``: the array, then its manifest last):
    the finished ``Entry``, else ``compute()`` -> (array, manifest) stored with ``Cache.put``."""
    return read_through(
        cache,
        kind,
        key,
        read=lambda path: cache.get(kind, key),
        make=lambda path: cache.put(kind, key, *compute()),
    )
