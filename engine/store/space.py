"""The cache's namespaces (one per artefact kind) and the space they take: list, prune, quotas.

Every artefact the engine stores lives in one namespace folder under the cache root, as one
*entry* per key (a file or a folder); uploads add one level, the owner::

    <root>/<kind>/<key>[suffix]             most kinds
    <root>/uploads/<owner>/<upload id>/     uploads: one namespace per owner (session / visitor)

``KINDS`` is the table of namespaces. An entry's *last use* is its modification time, set again
(``touch``) whenever the engine reads it, so ``prune`` removes least-recently-used entries
first. An entry in use holds a shared lease (``engine.store.locks.Lease``) and is never removed.
Temp names (``.tmp-*``, see ``engine.store.atomic``) and unfinished ``<key>.partial`` jobs older
than
``settings.ORPHAN_AGE_S`` whose writer is gone are removed by ``prune`` too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine import settings
from engine.errors import CacheError, QuotaError
from engine.store.atomic import TEMP_PREFIX, ReadOnlyCache
from engine.store.locks import (
    Lease,
    drop_lock_file,
    exclusive_or_skip,
    use_lock_path,
    writer_lock_path,
)

log = logging.getLogger(__name__)

# A key becomes a folder or file name: no separators, no dots (keys may come from a bundle).
SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
TOUCH_EVERY_S = 10.0  # record a use at most this often per entry and process


def check_key(key: str) -> str:
    """``key`` if it is safe as one path component, else ``CacheError`` (never a traversal)."""
    if not isinstance(key, str) or not SAFE_KEY.match(key):
        raise CacheError(f"invalid cache key {str(key)[:80]!r}")
    return key


@dataclass(frozen=True)
class Kind:
    """One namespace of the cache."""

    name: str  # the folder under the cache root
    holds: str  # one line for ``cache ls`` and the docs
    suffix: str = ""  # file entries: the file name is ``<key><suffix>``
    depth: int = 1  # uploads: 2 (owner, then upload)
    user_content: bool = False  # holds files a user supplied: never scanned for temp names
    foreign_names: bool = False  # names chosen by another library (numba), not by the engine


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("vectors", "embeddings (N x D float32) + manifest; <key>.partial/ while running"),
        Kind("projections", "2-D maps (N x 2 float32) + manifest"),
        Kind("compare", "comparison reports", suffix=".json"),
        Kind(
            "findings",
            "findings: label errors, duplicates, outliers, leaks, clusters",
            suffix=".json",
        ),
        Kind("heads", "fusion classifier heads (safetensors + sidecar)"),
        Kind("thumbs", "thumbnail sprite sheets, per dataset fingerprint"),
        Kind("checks", "per-file image checks of a folder or manifest", suffix=".json"),
        Kind("extracted", "archives unpacked safely, by content hash", user_content=True),
        Kind("downloads", "images downloaded from manifest URLs, one folder per manifest"),
        Kind("bundles", "neighbour lists installed from bundles"),
        Kind("identities", "a built model's identity, by the hash of its files", suffix=".json"),
        Kind("subsets", "named subsets of rows, per dataset fingerprint", suffix=".json"),
        Kind("jobs", "the HTTP service's embed-job records (engine.http.jobs)", suffix=".json"),
        Kind("links", "upload links: a random token -> an upload and its name", suffix=".json"),
        Kind(
            "uploads", "staged uploads, per owner (session / visitor)", depth=2, user_content=True
        ),
        Kind(
            "numba",
            "numba kernels of umap-learn, from before engine.maps.umap_layout (safe to remove)",
            user_content=True,
            foreign_names=True,
        ),
    )
}


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise CacheError(f"unknown cache kind {name!r}: one of {', '.join(KINDS)}") from None


def format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _entry_names(kind: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The on-disk names of an entry of ``kind`` named by ``keys`` (each checked)."""
    k = kind_of(kind)
    if len(keys) != k.depth:
        raise CacheError(f"a {kind} entry is named by {k.depth} key(s), got {len(keys)}")
    names = [check_key(x) for x in keys]
    names[-1] += k.suffix
    return tuple(names)


@dataclass(frozen=True)
class StoredEntry:
    """One entry of any kind, as found on disk."""

    kind: str
    names: tuple[str, ...]  # (name,) or (owner, name) for uploads; names as on disk
    path: Path
    bytes: int
    last_used: float  # seconds since the epoch

    @property
    def key(self) -> str:
        """The entry's key (its last name without the kind's suffix)."""
        return self.names[-1].removesuffix(KINDS[self.kind].suffix)

    @property
    def name(self) -> str:
        return "/".join(self.names)


@dataclass(frozen=True)
class KindUsage:
    kind: str
    holds: str
    entries: int
    bytes: int  # finished entries
    other_bytes: int  # unfinished jobs and temp files in the namespace


@dataclass
class PruneReport:
    max_bytes: int
    bytes_before: int
    bytes_after: int
    removed: list[StoredEntry]
    in_use: list[StoredEntry]  # over the limit but skipped: leased or being written
    orphans: list[Path]  # temp names and abandoned .partial jobs removed


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (or of the file), each inode once, no links
    followed."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_size if not path.is_symlink() else 0
    total, seen = 0, set()
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(Path(e.path))
                        elif e.is_file(follow_symlinks=False):
                            s = e.stat(follow_symlinks=False)
                            if (s.st_dev, s.st_ino) not in seen:
                                seen.add((s.st_dev, s.st_ino))
                                total += s.st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _children(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _newest_mtime(path: Path) -> float:
    newest = 0.0
    with contextlib.suppress(OSError):
        newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for p in path.rglob("*"):
            with contextlib.suppress(OSError):
                newest = max(newest, p.lstat().st_mtime)
    return newest


def _delete(path: Path) -> None:
    """Remove a file or folder; a folder is first renamed to a temp name, so it disappears at
    once for readers (a failed ``rmtree`` leaves an orphan that the next prune removes)."""
    if path.is_dir() and not path.is_symlink():
        doomed = path.with_name(f"{TEMP_PREFIX}{path.name}-deleted-{os.getpid()}")
        try:
            os.replace(path, doomed)
        except OSError:
            doomed = path
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _is_temp(name: str) -> bool:
    # ``.tmp-*`` is the engine's temp name; the others are the names older versions used.
    return name.startswith(TEMP_PREFIX) or (
        name.startswith(".") and (name.endswith(".tmp") or name.startswith(".download."))
    )


def _temp_key(name: str) -> str:
    """The key a temp name was made for (``.tmp-<key>-<random>``), or "" if none."""
    stem = name.removeprefix(TEMP_PREFIX).rsplit("-", 1)[0].split(".", 1)[0]
    return stem if SAFE_KEY.match(stem) else ""


_touched: dict[str, float] = {}
_touched_lock = threading.Lock()


def touch(path: Path) -> None:
    """Record a use of the entry at ``path`` (its mtime), at most once per ``TOUCH_EVERY_S``."""
    now = time.monotonic()
    key = str(path)
    with _touched_lock:
        if now - _touched.get(key, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        _touched[key] = now
    with contextlib.suppress(OSError):  # a read-only cache still reads fine
        os.utime(path)


# How a quota error names what fills the namespace.
_QUOTA_OWNERS = {
    "uploads": "your uploads",
    "extracted": "extracted archives",
    "downloads": "downloaded images",
}


class SpaceBudget:
    """A quota on one namespace (or one owner's), charged write by write.

    The namespace is measured once; each ``charge`` adds to the running total and, when the
    quota would be passed, removes least-recently-used entries not in use (``make_room``) or
    raises ``QuotaError``.
    """

    def __init__(
        self, space: CacheSpace, kind: str, quota: int, under: tuple[str, ...], setting: str
    ) -> None:
        self.space, self.kind, self.quota = space, kind, quota
        self.under, self.setting = under, setting
        self._lock = threading.Lock()
        self.used = sum(e.bytes for e in space.stored(kind, under=under))

    def charge(self, nbytes: int, what: str) -> None:
        with self._lock:
            if self.used + nbytes > self.quota:
                self.used = self.space.make_room(
                    self.kind, nbytes, self.quota, under=self.under, setting=self.setting, what=what
                )
            self.used += nbytes


class CacheSpace:
    """Namespaces, leases, listing, pruning and quotas of the cache at ``self.root``."""

    root: Path

    # -- names ------------------------------------------------------------------------------
    def kind_dir(self, kind: str) -> Path:
        return self.root / kind_of(kind).name

    def path(self, kind: str, *keys: str) -> Path:
        """The path of an entry: ``<root>/<kind>/<key><suffix>`` (uploads: owner, then id).
        Every key is checked, so a key from a bundle or a visitor can never leave the cache."""
        return self.root.joinpath(kind, *_entry_names(kind, keys))

    def lease(self, kind: str, *keys: str) -> Lease:
        """Hold the entry ``(kind, keys)`` in use (shared): ``prune`` skips it meanwhile."""
        return Lease(use_lock_path(self.root, kind, _entry_names(kind, keys)))

    def lease_path(self, path: str | os.PathLike[str]) -> Lease | None:
        """A lease on the entry that holds ``path`` (and a recorded use of it), or None when
        ``path`` is outside every namespace of this cache (a server folder, say)."""
        try:
            rel = Path(path).expanduser().resolve().relative_to(self.root)
        except (ValueError, OSError, RuntimeError):
            return None
        if not rel.parts or rel.parts[0] not in KINDS:
            return None
        k = KINDS[rel.parts[0]]
        names = rel.parts[1 : 1 + k.depth]
        if len(names) < k.depth or any(n.startswith(".") for n in names):
            return None
        lease = Lease(use_lock_path(self.root, k.name, tuple(names)))
        touch(self.root.joinpath(k.name, *names))
        return lease

    def touch(self, path: Path) -> None:
        touch(path)

    @property
    def writable(self) -> bool:
        """Whether this process may write the cache: False on a read-only mount or a folder
        it may not write (``access(2)`` answers both), where what is cached is still read and
        a write fails as one ``ReadOnlyCache`` line. Asked each time: a remount shows at once."""
        return os.access(self.root, os.W_OK)

    # -- listing ----------------------------------------------------------------------------
    def _entry_names(self, k: Kind, base: Path) -> list[str]:
        try:
            children = sorted(os.listdir(base))
        except OSError:
            return []
        out = []
        for name in children:
            if name.startswith("."):
                continue
            if k.foreign_names or (
                name.endswith(k.suffix) and SAFE_KEY.match(name.removesuffix(k.suffix) or "-.")
            ):
                out.append(name)
        return out

    def _owners(self, k: Kind, under: tuple[str, ...]) -> list[tuple[str, ...]]:
        """The folders entries of ``k`` sit in: () for most kinds; each owner for uploads."""
        if k.depth == 1:
            return [()]
        if under:
            return [under]
        base = self.root / k.name
        try:
            names = sorted(os.listdir(base))
        except OSError:
            return []
        return [(n,) for n in names if SAFE_KEY.match(n) and (base / n).is_dir()]

    def stored(self, kind: str | None = None, under: tuple[str, ...] = ()) -> list[StoredEntry]:
        """Every entry of ``kind`` (default: all kinds), optionally only under an owner."""
        kinds = [kind_of(kind)] if kind else list(KINDS.values())
        found: list[StoredEntry] = []
        for k in kinds:
            prefixes = self._owners(k, tuple(under))
            for prefix in prefixes:
                base = self.root.joinpath(k.name, *prefix)
                for name in self._entry_names(k, base):
                    path = base / name
                    try:
                        last = path.lstat().st_mtime
                    except OSError:
                        continue
                    found.append(StoredEntry(k.name, (*prefix, name), path, tree_size(path), last))
        return found

    def survey(self) -> tuple[list[StoredEntry], list[KindUsage]]:
        """Every entry, and per kind: entry count, bytes of finished entries, bytes of
        everything else there (unfinished jobs, temp files). One walk of the cache."""
        entries = self.stored()
        out = []
        for k in KINDS.values():
            mine = [e for e in entries if e.kind == k.name]
            loose = self._loose_bytes(k, {e.names for e in mine})
            out.append(KindUsage(k.name, k.holds, len(mine), sum(e.bytes for e in mine), loose))
        return entries, out

    def _loose_bytes(self, k: Kind, entry_names: set[tuple[str, ...]]) -> int:
        """Bytes in ``k``'s namespace that belong to no entry (unfinished jobs, temp files)."""
        base = self.root / k.name
        owners = self._owners(k, ()) if k.depth == 2 else []
        total = 0
        for prefix in [(), *owners]:
            folder = base.joinpath(*prefix)
            for name in _children(folder):
                if (*prefix, name) in entry_names or (not prefix and (name,) in owners):
                    continue  # an entry, or an owner's folder (looked into on its own)
                total += tree_size(folder / name)
        return total

    def usage(self) -> list[KindUsage]:
        """Per kind: entry count, bytes of finished entries, bytes of everything else there."""
        return self.survey()[1]

    # -- removing ---------------------------------------------------------------------------
    def remove_unless_in_use(self, entry: StoredEntry) -> bool:
        """Delete ``entry`` unless someone holds its lease or its writer lock."""
        use_lock = use_lock_path(self.root, entry.kind, entry.names)
        with exclusive_or_skip(use_lock) as free:
            if not free:
                return False
            writer = writer_lock_path(self.root, entry.key)
            with exclusive_or_skip(writer, create=False) as writer_free:
                if not writer_free:
                    return False
                _delete(entry.path)
            drop_lock_file(use_lock)
        return True

    def remove_orphans(self, older_than_s: float) -> list[Path]:
        """Remove temp names and abandoned ``.partial`` jobs older than ``older_than_s`` whose
        writer lock (and enclosing entry's lease) nobody holds: what a killed job leaves."""
        now = time.time()
        removed: list[Path] = []
        for k in KINDS.values():
            base = self.root / k.name
            if not base.is_dir():
                continue
            for candidate, entry_names in self._orphan_candidates(k, base):
                if now - _newest_mtime(candidate) < older_than_s:
                    continue
                name = candidate.name
                key = name.removesuffix(".partial") if name.endswith(".partial") else ""
                keys = {key or _temp_key(name), *(n.removesuffix(k.suffix) for n in entry_names)}
                with contextlib.ExitStack() as stack:
                    locks = [
                        stack.enter_context(
                            exclusive_or_skip(writer_lock_path(self.root, x), create=False)
                        )
                        for x in keys
                        if x and SAFE_KEY.match(x)
                    ]
                    if entry_names:
                        locks.append(
                            stack.enter_context(
                                exclusive_or_skip(
                                    use_lock_path(self.root, k.name, entry_names), create=False
                                )
                            )
                        )
                    if all(locks):
                        _delete(candidate)
                        removed.append(candidate)
        return removed

    def _orphan_candidates(self, k: Kind, base: Path):  # -> Iterator[(Path, tuple[str, ...])]
        """Temp names at the namespace level (and an owner's level), ``.partial`` jobs, and,
        inside entries the engine wrote itself, temp files at any depth."""
        levels = [(base, ())] + [(base / o[0], o) for o in self._owners(k, ()) if o]
        for folder, prefix in levels:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            for name in names:
                if _is_temp(name) or name.endswith(".partial"):
                    # The entry it was meant to become: its lease is held while it is written
                    # (an extraction, an upload being staged).
                    key = _temp_key(name) if _is_temp(name) else name.removesuffix(".partial")
                    meant = len(prefix) + 1 == k.depth and SAFE_KEY.match(key)
                    yield folder / name, (*prefix, key + k.suffix) if meant else ()
                elif not k.user_content and len(prefix) + 1 == k.depth and name[0] != ".":
                    entry = folder / name
                    if entry.is_dir() and not entry.is_symlink():
                        for root, dirs, files in os.walk(entry):
                            for n in [*dirs, *files]:
                                if _is_temp(n):
                                    yield Path(root) / n, (*prefix, name)
                            dirs[:] = [d for d in dirs if not _is_temp(d)]

    def prune(self, max_bytes: int, orphan_age_s: float | None = None) -> PruneReport:
        """Remove orphans, then least-recently-used entries of every kind until the cache fits
        in ``max_bytes``. Entries in use (leased, or being written) are skipped."""
        if not self.writable:
            raise ReadOnlyCache(f"cannot prune {self.root}: the cache directory is read-only")
        age = settings.ORPHAN_AGE_S if orphan_age_s is None else orphan_age_s
        before = sum(u.bytes + u.other_bytes for u in self.survey()[1])
        orphans = self.remove_orphans(age)
        entries, usage = self.survey()
        entries.sort(key=lambda e: e.last_used)
        total = sum(u.bytes + u.other_bytes for u in usage)
        removed: list[StoredEntry] = []
        in_use: list[StoredEntry] = []
        for entry in entries:
            if total <= max_bytes:
                break
            if self.remove_unless_in_use(entry):
                removed.append(entry)
                total -= entry.bytes
            else:
                in_use.append(entry)
        self._drop_empty_owners()
        for entry in removed:
            log.debug("prune removed %s/%s (%s)", entry.kind, entry.name, format_bytes(entry.bytes))
        log.info(
            "prune %s: %s -> %s (limit %s); removed %d entries and %d orphans, kept %d in use",
            self.root,
            format_bytes(before),
            format_bytes(total),
            format_bytes(max_bytes),
            len(removed),
            len(orphans),
            len(in_use),
        )
        return PruneReport(max_bytes, before, total, removed, in_use, orphans)

    def _drop_empty_owners(self) -> None:
        for k in KINDS.values():
            if k.depth == 2 and (self.root / k.name).is_dir():
                for owner in (self.root / k.name).iterdir():
                    with contextlib.suppress(OSError):
                        owner.rmdir()  # only succeeds when empty

    # -- quotas -----------------------------------------------------------------------------
    def make_room(
        self,
        kind: str,
        nbytes: int,
        quota: int,
        *,
        under: tuple[str, ...] = (),
        setting: str,
        what: str,
    ) -> int:
        """Make ``nbytes`` fit in ``quota`` for ``kind`` (optionally one owner's part of it) by
        removing its least-recently-used entries not in use; returns the bytes still used.
        ``QuotaError`` (one line) when even that is not enough."""
        entries = sorted(self.stored(kind, under=under), key=lambda e: e.last_used)
        used = sum(e.bytes for e in entries)
        if nbytes <= quota:
            for entry in entries:
                if used + nbytes <= quota:
                    break
                if self.remove_unless_in_use(entry):
                    used -= entry.bytes
                    log.info(
                        "quota %s (%s): removed least-recently-used %s/%s (%s) for %s",
                        setting,
                        format_bytes(quota),
                        kind,
                        entry.name,
                        format_bytes(entry.bytes),
                        what,
                    )
        if used + nbytes <= quota:
            return used
        whose = _QUOTA_OWNERS.get(kind, f"cached {kind}")
        if nbytes > quota:
            raise QuotaError(
                f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(quota)} quota "
                f"for {whose}: use a smaller one, or ask the operator to raise {setting}"
            )
        raise QuotaError(
            f"{what} needs {format_bytes(nbytes)}, but {whose} already hold "
            f"{format_bytes(used)} in use of the {format_bytes(quota)} quota: close what uses "
            f"them and try again, or ask the operator to raise {setting}"
        )

    def budget(
        self, kind: str, quota: int, *, setting: str, under: tuple[str, ...] = ()
    ) -> SpaceBudget:
        """A running quota on ``kind`` (or one owner's part), measured once, charged per write."""
        return SpaceBudget(self, kind, quota, tuple(under), setting)
