"""Cross-process locks on cache entries: one writer per key, and "in use" leases.

Two kinds of lock file live under ``<cache root>/locks/``:

* ``<key>.lock`` - the writer lock (``locked``): one process builds an entry at a time; the
  others wait, then find it finished.
* ``use/<kind>.<name>.lock`` - a use lease (``Lease``): a *shared* ``flock`` held while an entry
  is read or while a dataset built on it is open. Any number of readers hold it at once;
  ``Cache.prune`` takes it *exclusively and without waiting* before deleting the entry, so an
  entry in use is skipped, never deleted under its reader.

Both are ``flock`` locks: the OS drops them when the holder exits or is killed, so a crash never
leaves an entry locked. Where ``fcntl`` does not exist (Windows), leases are no-ops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from engine.errors import CacheError
from engine.store.atomic import is_read_only, write_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 6 * 3600  # a waiting process gives up only after a very long foreign job
LOCKS_DIR = "locks"
USE_DIR = "use"


def writer_lock_path(root: Path, key: str) -> Path:
    return root / LOCKS_DIR / f"{key}.lock"


def use_lock_path(root: Path, kind: str, names: tuple[str, ...]) -> Path:
    return Path(f"{root}/{LOCKS_DIR}/{USE_DIR}/{'.'.join((kind, *names))}.lock")


@contextlib.contextmanager
def locked(root: Path, key: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the cross-process writer lock for ``key`` (a checked cache key).

    On a read-only cache this process can write nothing, so it only waits for a writer that
    sees the same files writable elsewhere (a shared hold on the existing lock file; none if
    there is no lock file): the caller then reads the finished entry, and a write it still
    tries fails as one ``CacheError`` line."""
    from filelock import FileLock, Timeout

    path = writer_lock_path(root, key)
    lock = FileLock(str(path), timeout=timeout_s)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout as exc:
        raise CacheError(f"timed out waiting for another process to finish {key[:12]}") from exc
    except OSError as exc:
        # Only a cache this process cannot write at all: a writable cache with one lock file
        # it may not open is an error (two writers would both go ahead).
        if not is_read_only(exc) or os.access(root, os.W_OK):
            raise write_error(path.parent, exc) from exc
        with _shared_if_present(path, key, timeout_s):
            yield
        return
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _shared_if_present(path: Path, key: str, timeout_s: float) -> Iterator[None]:
    """A shared ``flock`` on ``path`` through a read-only descriptor (a read-only cache), held
    while the caller reads; nothing when the file is missing or ``flock`` does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        fd = None
    if fd is None or fcntl is None:
        yield
        return
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CacheError(
                        f"timed out waiting for another process to finish {key[:12]}"
                    ) from None
                time.sleep(0.05)  # a writer elsewhere holds it: poll, as filelock does
        yield
    finally:
        os.close(fd)


def _open_creating(path: Path) -> int | None:
    """A descriptor of ``path``'s lock file, made if needed; None on a read-only cache where
    the file does not exist (and cannot be made)."""
    try:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the first lease in this cache: make the folder once
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if not is_read_only(exc):
            raise
    # A read-only cache (a read-only mount, or a folder this user may not write): a shared
    # flock needs only a read descriptor, so an existing lock file still guards the entry
    # against a writer that sees the same files writable elsewhere (another mount, another
    # user). Without one there is nothing to hold, and nothing here can prune either.
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


class Lease:
    """A shared hold on one cache entry: while it is held, ``prune`` skips the entry.

    ``bind(obj)`` ties the lease to an object's lifetime (a dataset reading files from the
    entry): it is released when the object is garbage-collected, or by ``release()``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()
        if fcntl is None:
            return
        while True:
            try:
                fd = _open_creating(path)
            except OSError as exc:
                raise write_error(path, exc) from exc
            if fd is None:
                log.debug("read-only cache: no lease file %s, reading without one", path.name)
                return
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a prune is deleting this entry
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # prune removed the entry and its lock file meanwhile: take the new one

    def release(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def bind(self, obj: object) -> Lease:
        weakref.finalize(obj, self.release)
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


@contextlib.contextmanager
def exclusive_or_skip(path: Path, create: bool = True) -> Iterator[bool]:
    """Try to take ``path``'s lock exclusively without waiting; yield whether it was taken.

    Used by prune around a deletion: an entry whose lease or writer lock anyone holds is
    skipped, and while prune holds it, a new reader or writer waits until the deletion is done
    (with ``create`` the lock file is made if needed, so nobody can slip in between the check
    and the deletion; without it, a missing lock file means nobody holds it).
    """
    if fcntl is None or (not create and not path.exists()):
        yield True
        return
    try:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        yield True
        return
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def drop_lock_file(path: Path) -> None:
    """Remove a use-lock file of a deleted entry (called while holding it exclusively; a
    reader that opened the old file notices the changed inode and retries)."""
    with contextlib.suppress(OSError):
        path.unlink()
