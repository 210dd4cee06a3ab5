"""The on-disk cache: content-hash keys, finished array entries, resumable shards.

One namespace per artefact kind (the table is ``engine.store.space.KINDS``; listing, pruning
and quotas live there too). The array entries this module writes::

    vectors/<key>/vectors.npy        N x D float32, rows in dataset order (readable by any NumPy)
    vectors/<key>/manifest.json      what produced it: dataset, model, modality, n, dim, seconds
    vectors/<key>.partial/           shards of an unfinished job (resume picks them up)
    projections/<key>/coords.npy     N x 2 float32
    projections/<key>/manifest.json
    locks/<key>.lock                 one writer per key across processes (``engine.store.locks``)

A key is the SHA-256 of a JSON description of everything that determines the bytes: the dataset's
full content fingerprint, the model's identity (weights + preprocessing), the modality, and the
engine's format version. A finished entry is never modified; a changed input is a new key.
Files are written through ``engine.store.atomic`` (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import CacheError
from engine.settings import cache_dir
from engine.store.atomic import (
    DISK_FULL_ERRNOS,
    atomic_save_npy,
    atomic_write_bytes,
    atomic_write_json,
    is_read_only,
    write_error,
)
from engine.store.chunks import release
from engine.store.locks import LOCK_TIMEOUT_S, Lease, locked
from engine.store.space import SAFE_KEY, CacheSpace, check_key, format_bytes, touch, tree_size

__all__ = [
    "FORMAT_VERSION",
    "LOCK_TIMEOUT_S",
    "Cache",
    "Entry",
    "Lease",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_key",
    "hash_array",
    "locked",
    "make_key",
]

log = logging.getLogger(__name__)

# Bump when the meaning of stored bytes changes (e.g. normalisation): old entries become misses.
FORMAT_VERSION = 1


def make_key(**parts: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``parts`` plus the cache format version."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def hash_array(array: np.ndarray) -> str:
    """Full content hash of an array (shape, dtype and every byte: never a sample)."""
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((array.shape, str(array.dtype))).encode())
    contiguous = np.ascontiguousarray(array)
    # Hash in slices so a memory-mapped array is streamed, not copied whole.
    flat = contiguous.reshape(-1)
    step = max(1, (64 * 1024 * 1024) // max(1, contiguous.itemsize))
    for start in range(0, flat.size, step):
        h.update(flat[start : start + step])  # a contiguous view: hashed without a copy
        release(flat, start, start + step)  # a mapped file's pages leave this process again
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    """A finished cache entry: a directory holding one array file and its manifest."""

    kind: str  # "vectors" or "projections"
    key: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def array_path(self) -> Path:
        return self.directory / ("vectors.npy" if self.kind == "vectors" else "coords.npy")

    def load(self, mmap: bool = True) -> np.ndarray:
        """The stored array (memory-mapped by default: opening a 1M x 512 entry costs no RAM).
        Loading counts as a use (``prune`` removes least-recently-used entries first)."""
        touch(self.directory)
        try:
            return np.load(self.array_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CacheError(f"cache entry {self.directory} is unreadable: {exc}") from exc

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())


class Cache(CacheSpace):
    """Finished entries and in-progress shards under one root (namespaces, leases, listing,
    pruning and quotas: ``CacheSpace``)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = cache_dir(root)

    @classmethod
    def or_default(cls, cache: Cache | None) -> Cache:
        """``cache`` itself, or the default cache (``PARALLAX_CACHE`` / ``./cache``): the one
        spelling of an optional ``cache: Cache | None`` parameter."""
        return cache if cache is not None else cls()

    # -- finished entries -------------------------------------------------------------------
    def entry_dir(self, kind: str, key: str) -> Path:
        return self.path(kind, key)

    def get(self, kind: str, key: str) -> Entry | None:
        """The finished entry for ``key``, or None. A half-written entry never shows up here
        because the manifest is written last, after the array is in place. Asking for one
        entry counts as a use of it (listing with ``entries`` does not)."""
        entry = self._read(kind, key)
        if entry is not None:
            touch(entry.directory)
        return entry

    def _read(self, kind: str, key: str) -> Entry | None:
        directory = self.entry_dir(kind, key)
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            return None
        entry = Entry(kind, key, directory, manifest)
        return entry if entry.array_path.is_file() else None

    def put(self, kind: str, key: str, array: np.ndarray, manifest: dict[str, Any]) -> Entry:
        """Store a finished array. Array first, manifest last: the manifest marks completeness."""
        directory = self.entry_dir(kind, key)
        name = "vectors.npy" if kind == "vectors" else "coords.npy"
        atomic_save_npy(directory / name, array)
        return self.put_manifest_only(kind, key, manifest)

    def put_manifest_only(self, kind: str, key: str, manifest: dict[str, Any]) -> Entry:
        """Mark an entry whose array file is already in place as finished."""
        directory = self.entry_dir(kind, key)
        entry = Entry(kind, key, directory, {})
        array = np.load(entry.array_path, mmap_mode="r", allow_pickle=False)
        full = {
            **manifest,
            "key": key,
            "kind": kind,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "format": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        del array
        atomic_write_json(directory / "manifest.json", full)
        return Entry(kind, key, directory, full)

    def entries(self, kind: str | None = None) -> list[Entry]:
        """Every finished entry (optionally of one kind), newest first."""
        kinds = [kind] if kind else ["vectors", "projections"]
        found: list[Entry] = []
        for k in kinds:
            base = self.root / k
            if not base.is_dir():
                continue
            for directory in base.iterdir():
                if directory.is_dir() and SAFE_KEY.match(directory.name):  # not *.partial
                    entry = self._read(k, directory.name)
                    if entry is not None:
                        found.append(entry)
        found.sort(key=lambda e: e.manifest.get("created", ""), reverse=True)
        return found

    # -- resumable shards ---------------------------------------------------------------------
    def partial_dir(self, kind: str, key: str) -> Path:
        return self.kind_dir(kind) / f"{check_key(key)}.partial"

    def read_partial_plan(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self.partial_dir(kind, key) / "plan.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_partial_plan(self, kind: str, key: str, plan: dict[str, Any]) -> None:
        atomic_write_json(self.partial_dir(kind, key) / "plan.json", plan)

    def shard_path(self, kind: str, key: str, index: int) -> Path:
        return self.partial_dir(kind, key) / f"shard-{index:06d}.npy"

    def completed_shards(self, kind: str, key: str, n_shards: int) -> int:
        """How many leading shards are complete (each was written atomically)."""
        done = 0
        while done < n_shards and self.shard_path(kind, key, done).is_file():
            done += 1
        return done

    def drop_partial(self, kind: str, key: str) -> None:
        shutil.rmtree(self.partial_dir(kind, key), ignore_errors=True)

    def abandon_partial(
        self, kind: str, key: str, exc: BaseException, need_bytes: int, what: str
    ) -> CacheError | None:
        """After a failed write of an unfinished job (``exc``: an ``OSError``, or the
        ``CacheError`` made of one), remove its shards and return the one line to raise; None
        when ``exc`` is not a failed write (the shards stay, and the job resumes from them).

        A full disk must not stay full because of the job that filled it: on a shared
        deployment nothing else frees its shards before ``prune``'s orphan age. The line says
        how much the job needs: ``need_bytes`` for the finished entry, twice that at peak
        while the shards are joined into it. On a read-only cache nothing was written and
        nothing can be removed: the ``ReadOnlyCache`` line is returned as it is."""
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if not isinstance(cause, OSError) or not isinstance(exc, OSError | CacheError):
            return None
        if is_read_only(cause):
            return exc if isinstance(exc, CacheError) else write_error(self.root, cause)
        partial = self.partial_dir(kind, key)
        held = tree_size(partial)
        self.drop_partial(kind, key)
        unfinished = self.entry_dir(kind, key)  # the joined array whose manifest never came
        if unfinished.is_dir() and not (unfinished / "manifest.json").is_file():
            held += tree_size(unfinished)
            shutil.rmtree(unfinished, ignore_errors=True)
        log.warning("%s failed (%s): removed its unfinished shards", what, cause)
        try:
            free = f"; {format_bytes(shutil.disk_usage(self.root).free)} free"
        except OSError:
            free = ""
        why = cause.strerror or str(cause)
        if cause.errno in DISK_FULL_ERRNOS:
            why = "the disk is full"
        return CacheError(
            f"{what} stopped: {why} (it needs {format_bytes(need_bytes)} for its {kind}, "
            f"{format_bytes(2 * need_bytes)} while its shards are joined{free}); its "
            f"unfinished shards ({format_bytes(held)}) were removed: free some space or set "
            "PARALLAX_CACHE to a bigger disk"
        )
