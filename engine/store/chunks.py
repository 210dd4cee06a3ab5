"""Reading an N x D array a block of rows at a time, with memory bounded by the block.

Vector files are opened memory-mapped (``np.load(mmap_mode="r")``): opening costs nothing, but
every page a process reads stays mapped into it and counts in its resident set until the kernel
needs the memory, so a pass over a 5 GB file leaves a 5 GB process. ``row_chunks`` copies one
block of rows out (converted to the wanted dtype) and then drops the block's pages from this
process with ``madvise(MADV_DONTNEED)``: the OS page cache keeps them (a second pass is still
fast, and other processes share them), but this process's peak is one block, not N rows.
Plain in-memory arrays are sliced the same way, so callers need not know which they hold.

A float16 file is read the same way: each block (and each gathered row) is cast to float32 as
it is copied out, so a float16 ``.npy`` is never upcast whole; ``rows_per_chunk`` counts the
float32 copy's bytes. ``hash_array`` hashes the file's own bytes and dtype, so a float16 copy
of some vectors is cached under a key of its own, never as the float32 vectors.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

CHUNK_BYTES = 64 * 1024 * 1024  # one block: large enough that BLAS and I/O run at full speed


def rows_per_chunk(array: np.ndarray, max_bytes: int | None = None, itemsize: int = 4) -> int:
    """Rows of ``array`` in one block of at most ``max_bytes`` (default ``CHUNK_BYTES``) at
    ``itemsize`` bytes a value."""
    max_bytes = CHUNK_BYTES if max_bytes is None else max_bytes
    width = int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim > 1 else 1
    return max(1, max_bytes // max(1, width * itemsize))


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` behind ``array`` (a ``np.memmap`` or a view of one), or None."""
    seen = array
    for _ in range(16):  # a view of a view of ...: the chain is short
        mm = getattr(seen, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return mm
        if isinstance(seen, mmap.mmap):
            return seen
        seen = getattr(seen, "base", None)
        if seen is None:
            return None
    return None


def is_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` reads from a memory-mapped file."""
    return isinstance(array, np.ndarray) and _mapping(array) is not None


def release(array: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Drop the mapped pages of rows ``start:stop`` of a memory-mapped ``array`` from this
    process (no-op for an in-memory array). The data stay on disk and in the page cache; a later
    read maps them again."""
    mm = _mapping(array)
    if mm is None or not hasattr(mm, "madvise") or not array.flags.c_contiguous:
        return
    stop = len(array) if stop is None else min(stop, len(array))
    if stop <= start:
        return
    base = np.frombuffer(mm, dtype=np.uint8)  # only to learn where the mapping starts
    origin = base.ctypes.data
    del base
    row_bytes = array.strides[0] if array.ndim else array.itemsize
    lo = array.ctypes.data - origin + start * row_bytes
    hi = array.ctypes.data - origin + stop * row_bytes
    lo -= lo % mmap.PAGESIZE
    hi = min(hi, len(mm))
    if hi > lo:
        mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def row_chunks(
    array: np.ndarray,
    rows: int | None = None,
    dtype: np.dtype | type = np.float32,
    max_bytes: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, block)`` for consecutive blocks of rows, each an in-memory ``dtype`` copy;
    the pages of a memory-mapped ``array`` are released after each block is copied."""
    n = len(array)
    step = rows or rows_per_chunk(array, max_bytes, np.dtype(dtype).itemsize)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = np.array(array[start:stop], dtype=dtype, copy=True)
        release(array, start, stop)
        yield start, block


def gather_rows(
    array: np.ndarray, rows: np.ndarray, dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """``array[rows]`` as an in-memory ``dtype`` copy (``rows`` sorted), read a block at a time
    so a memory-mapped array never holds more than one block of its pages in this process."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), *array.shape[1:]), dtype=dtype)
    step = rows_per_chunk(array, None, array.dtype.itemsize)
    done = 0
    for start in range(0, len(array), step):
        stop = start + step
        take = rows[done : done + int(np.searchsorted(rows[done:], stop))]
        if len(take):
            out[done : done + len(take)] = array[take]
            done += len(take)
            release(array, start, stop)
        if done == len(rows):
            break
    return out


def row_blocks(array: np.ndarray, max_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, view)`` for consecutive blocks of rows of ``array`` as they are (no copy, no
    conversion): for a pass that only reads, e.g. checks and hashes. The pages of a
    memory-mapped ``array`` are released once the caller asks for the next block, so the view
    must not be used after that."""
    n = len(array)
    step = rows_per_chunk(array, max_bytes, array.dtype.itemsize)
    for start in range(0, n, step):
        stop = min(n, start + step)
        yield start, array[start:stop]
        release(array, start, stop)


def copy_file_bytes(
    source: str | os.PathLike[str],
    target: BinaryIO,
    count: int,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """The first ``count`` bytes of the file ``source`` appended to ``target`` by the kernel
    (``copy_file_range``: no pass through this process, a reflink where the file system has
    them), falling back to a plain copy a block at a time where the call is not supported.
    ``stop()`` is asked between blocks (256 MB): True ends the copy early (returns False)."""
    target.flush()
    step_bytes = 4 * CHUNK_BYTES
    with open(source, "rb") as src:
        done = 0
        try:
            while done < count:
                if stop is not None and stop():
                    return False
                step = os.copy_file_range(
                    src.fileno(), target.fileno(), min(count - done, step_bytes)
                )
                if step == 0:
                    break  # the source is shorter than it said
                done += step
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            src.seek(done)
            target.seek(0, os.SEEK_END)
            while done < count and (block := src.read(min(count - done, CHUNK_BYTES))):
                if stop is not None and stop():
                    return False
                target.write(block)
                done += len(block)
        if done != count:
            raise OSError(errno.EIO, f"{source}: {done} bytes copied, expected {count}")
    return True
