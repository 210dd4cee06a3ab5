"""The one way the engine writes a file or a folder that others may read at the same time.

A file is written to a temp file in the same directory, flushed and fsynced, then renamed over
its final name with ``os.replace``; a folder is filled under a temp name and renamed whole. A
reader sees the old version or the complete new one, never a torn one, and a crash leaves only
a temp name that ``Cache.prune`` recognises and removes.

Temp names are ``.tmp-<final name>-<random>`` beside the final path (hidden, so dataset scans
skip them). This is the only module in ``engine/`` that calls ``os.fsync``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from engine.errors import CacheError

TEMP_PREFIX = ".tmp-"


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (``os.umask`` can only
    be read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


# A write refused because the file system or the folder is read-only (not a full disk).
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class ReadOnlyCache(CacheError):
    """A write to a cache that cannot be written at all (a read-only mount, a folder this user
    may not write): reading what is cached still works; computing something new does not."""

    http_status = 503
    code = "read_only_cache"


def is_read_only(exc: OSError) -> bool:
    """Whether ``exc`` says the cache cannot be written at all (not a full disk)."""
    return exc.errno in READ_ONLY_ERRNOS


def write_error(path: Path, exc: OSError) -> CacheError:
    """The one-line error for a failed cache write (full disk, read-only, no permission)."""
    cls = CacheError
    if exc.errno in DISK_FULL_ERRNOS:
        why = "the disk is full"
    elif is_read_only(exc):
        why, cls = "the cache directory is not writable", ReadOnlyCache
    else:
        why = exc.strerror or str(exc)
    return cls(
        f"cannot write cache entry {path}: {why} (set PARALLAX_CACHE or --cache-dir to another "
        "directory)"
    )


def temp_prefix(path: Path) -> str:
    """The temp-name prefix used for ``path``: ``.tmp-<name>-`` (a random tail follows)."""
    return f"{TEMP_PREFIX}{path.name}-"


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file that was written through another handle (e.g. a memory map) to disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on a clean exit fsync it and rename it to ``path``.

    For writers that need a path rather than a file object (``np.lib.format.open_memmap``).
    On an error the temp file is removed; an ``OSError`` becomes a one-line ``CacheError``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path))
        # mkstemp makes the file 0600; the finished file gets what ``open(path, "w")`` would
        # give (0666 less the umask: 0644 under the usual 022), so exports are readable.
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        yield Path(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise write_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` (streamed, no pickle) through the atomic temp-file path."""
    from engine.store.chunks import is_mapped, row_chunks

    def write(f: BinaryIO) -> None:
        if not (is_mapped(array) and array.flags.c_contiguous):
            np.save(f, array, allow_pickle=False)
            return
        # A memory-mapped source is copied a block at a time: ``np.save`` would map every page
        # of it into this process (the same bytes either way).
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        for _, block in row_chunks(array, dtype=array.dtype):
            f.write(np.ascontiguousarray(block).tobytes())

    atomic_write(path, write)


@contextlib.contextmanager
def atomic_dir(path: Path, replace: bool = False, durable: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on a clean exit rename it to ``path``.

    With ``durable`` every file in it is fsynced before the rename (uploads: a few files that
    exist nowhere else); without it (extracted archives: thousands of files that can be
    unpacked again) only the rename is atomic.

    With ``replace`` an existing ``path`` (e.g. a damaged leftover) is removed first; without
    it, a folder that another writer finished first is kept and the temp folder dropped. On an
    error the temp folder is removed; an ``OSError`` becomes a one-line ``CacheError``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path)))
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        yield tmp
        if durable:
            files = [f for f in tmp.rglob("*") if f.is_file() and not f.is_symlink()]
            # Concurrent fsyncs share journal commits (500 small files, ext4 here: 3.0 s one by
            # one, 0.35 s eight at a time).
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(fsync_file, files))
        if replace and path.exists():
            shutil.rmtree(path)
        try:
            os.replace(tmp, path)
        except OSError as exc:  # a non-empty folder is already there: someone finished first
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or replace:
                raise
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
