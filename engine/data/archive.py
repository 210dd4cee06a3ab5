"""``zip:PATH`` (and ``tar:PATH``): an archive of a folder or of a manifest with its images.

The archive is untrusted. Every member is checked *before* it is inflated: names that could
escape the target (``..``, absolute paths, drive letters), links, special files, nested
archives, and members whose declared compression ratio looks like a bomb are skipped with a
reason; a member count or total size over the limits refuses the whole archive. While
inflating, the bytes actually written are counted too, since declared sizes can lie.

Extraction goes to the cache's ``extracted`` namespace, ``extracted/<sha256 of archive>/``, via a
temp folder and an atomic rename (``engine.store.atomic.atomic_dir``), under a file lock, with a
``.complete`` marker written last; a complete folder is reused. The namespace has a disk quota
(``settings.QUOTA_EXTRACTED``, checked against the declared sizes before anything is inflated),
and a dataset opened from an extracted folder holds a lease on it, so ``prune`` never removes
it while the dataset is open.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from engine import settings
from engine.data.base import Dataset, SkippedItem
from engine.data.folder import FolderDataset, is_hidden, is_within
from engine.data.manifest import ManifestDataset
from engine.errors import CacheError, DatasetError
from engine.store.atomic import atomic_dir
from engine.store.cache import Cache, Lease
from engine.store.memo import read_through
from engine.store.progress import ProgressCallback

COMPLETE_MARKER = ".complete"
SKIPPED_FILE = ".skipped.json"
NESTED_ARCHIVE_SUFFIXES = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".whl", ".jar"}
)
ROOT_MANIFEST_SUFFIXES = frozenset({".csv", ".parquet", ".jsonl"})
ARCHIVE_SUFFIXES = frozenset({".zip", ".tar", ".tgz"})  # what zip:PATH / tar:PATH unpack
_CHUNK = 1024 * 1024
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Member:
    """An archive entry that passed the checks: where it goes and how big it claims to be."""

    name: PurePosixPath  # safe relative path inside the target
    declared_size: int
    handle: object  # zipfile.ZipInfo or tarfile.TarInfo


def safe_member_name(raw: str) -> PurePosixPath | str:
    """A clean relative path for an archive member name, or the reason it is refused."""
    if "\x00" in raw:
        return "name contains a NUL character"
    name = raw.replace("\\", "/")  # zips made on Windows
    if name.startswith("/"):
        return "absolute path in archive"
    if _DRIVE.match(name):
        return "drive letter in archive path"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return "path escapes the archive ('..')"
    if not parts:
        return "empty name"
    return PurePosixPath(*parts)


def _ratio_too_high(size: int, compressed: int) -> bool:
    # Tiny members compress "infinitely" (an empty file has ratio 0/0): only judge real payloads.
    return size > 64 * 1024 and size > settings.MAX_ARCHIVE_RATIO * max(compressed, 1)


# -- planning: check every member before anything is inflated --------------------------------
def _plan_zip(zf: zipfile.ZipFile, skipped: list[SkippedItem]) -> list[Member]:
    infos = zf.infolist()
    if len(infos) > settings.MAX_ARCHIVE_MEMBERS:
        raise DatasetError(
            f"archive has {len(infos):,} members, "
            f"over the limit of {settings.MAX_ARCHIVE_MEMBERS:,}"
        )
    total = sum(i.file_size for i in infos)
    if total > settings.MAX_ARCHIVE_BYTES:
        raise DatasetError(
            f"archive would unpack to {total / 1024**3:.2f} GB, over the limit of "
            f"{settings.MAX_ARCHIVE_BYTES / 1024**3:.2f} GB"
        )
    members: list[Member] = []
    for info in infos:
        name = safe_member_name(info.filename)
        if isinstance(name, str):
            skipped.append(SkippedItem(info.filename, name))
            continue
        if info.is_dir():
            continue  # folders are created as their files need them
        mode = info.external_attr >> 16  # Unix mode bits, when the zip was made on Unix
        if stat.S_ISLNK(mode):
            reason = "symlink member not extracted"
        elif mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            reason = "special file member not extracted"
        elif info.flag_bits & 0x1:
            reason = "encrypted member"
        elif name.suffix.lower() in NESTED_ARCHIVE_SUFFIXES:
            reason = "nested archive not extracted"
        elif _ratio_too_high(info.file_size, info.compress_size):
            reason = (
                f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 over "
                f"the limit of {settings.MAX_ARCHIVE_RATIO}:1 (possible zip bomb)"
            )
        else:
            members.append(Member(name, info.file_size, info))
            continue
        skipped.append(SkippedItem(info.filename, reason))
    return members


def _plan_tar(tf: tarfile.TarFile, skipped: list[SkippedItem], packed_size: int) -> list[Member]:
    members: list[Member] = []
    total = 0
    for count, info in enumerate(tf, start=1):  # streamed: a huge member list is caught early
        if count > settings.MAX_ARCHIVE_MEMBERS:
            raise DatasetError(
                f"archive has over {settings.MAX_ARCHIVE_MEMBERS:,} members, over the limit"
            )
        name = safe_member_name(info.name)
        if isinstance(name, str):
            skipped.append(SkippedItem(info.name, name))
            continue
        if info.isdir():
            continue
        if info.issym() or info.islnk():
            reason = "link member not extracted"
        elif not info.isfile():
            reason = "special file member not extracted"
        elif name.suffix.lower() in NESTED_ARCHIVE_SUFFIXES:
            reason = "nested archive not extracted"
        else:
            total += info.size
            if total > settings.MAX_ARCHIVE_BYTES:
                raise DatasetError(
                    f"archive would unpack to over {settings.MAX_ARCHIVE_BYTES / 1024**3:.2f} GB, "
                    "over the limit"
                )
            members.append(Member(name, info.size, info))
            continue
        skipped.append(SkippedItem(info.name, reason))
    # A .tar.gz compresses the stream, not each member, so the ratio is judged as a whole.
    if _ratio_too_high(total, packed_size):
        raise DatasetError(
            f"archive would expand {total / max(packed_size, 1):.0f}:1, over the limit of "
            f"{settings.MAX_ARCHIVE_RATIO}:1 (possible archive bomb)"
        )
    return members


# -- inflating --------------------------------------------------------------------------------
class _TooBig(Exception):
    pass


def _copy_counted(src: IO[bytes], dest: Path, declared: int) -> int:
    """Copy ``src`` to a new file ``dest``, stopping as soon as it outgrows ``declared``."""
    written = 0
    # "xb": never overwrite, never follow a link that is already there.
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > declared:
                raise _TooBig
            out.write(chunk)
    return written


def _extract_members(
    open_member, members: list[Member], target: Path, skipped: list[SkippedItem]
) -> None:
    """Write each planned member under ``target`` (which must already be resolved)."""
    written_total = 0
    seen: set[PurePosixPath] = set()
    for m in members:
        shown = str(m.name)
        if m.name in seen:
            skipped.append(SkippedItem(shown, "duplicate member name"))
            continue
        dest = target.joinpath(*m.name.parts)
        # Belt and braces: the name is already clean, but check the resolved parent as well.
        if not is_within(dest.parent.resolve(), target):
            skipped.append(SkippedItem(shown, "path escapes the archive"))
            continue
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open_member(m) as src:
                written_total += _copy_counted(src, dest, m.declared_size)
        except _TooBig:
            dest.unlink(missing_ok=True)
            skipped.append(SkippedItem(shown, "member is larger than its declared size"))
            continue
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            dest.unlink(missing_ok=True)
            skipped.append(SkippedItem(shown, f"corrupt member ({exc})"))
            continue
        except NotImplementedError:
            dest.unlink(missing_ok=True)
            skipped.append(SkippedItem(shown, "unsupported compression method"))
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
                raise CacheError(
                    f"cannot extract into the cache: {exc.strerror} (set PARALLAX_CACHE or "
                    "--cache-dir to another directory)"
                ) from exc
            # e.g. a file and a folder with the same name, or a name the filesystem rejects.
            with contextlib.suppress(OSError):
                dest.unlink(missing_ok=True)
            skipped.append(SkippedItem(shown, f"cannot extract: {exc.strerror or exc}"))
            continue
        seen.add(m.name)
        if written_total > settings.MAX_ARCHIVE_BYTES:
            raise DatasetError("archive unpacks to more than the size limit")


def unpack_members(
    archive: Path, kind: str, target: Path, reserve: Callable[[int], None] | None = None
) -> list[SkippedItem]:
    """Check every member, call ``reserve`` with the bytes the planned members declare, then
    inflate them under the existing folder ``target`` (resolved). Returns the skipped members.
    """
    skipped: list[SkippedItem] = []
    if kind == "zip":
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"not a readable zip archive: {archive.name} ({exc})") from exc
        with zf:
            members = _plan_zip(zf, skipped)
            if reserve is not None:
                reserve(sum(m.declared_size for m in members))
            _extract_members(lambda m: zf.open(m.handle), members, target, skipped)
    else:
        try:
            tf = tarfile.open(archive, mode="r:*")  # noqa: SIM115 (closed by the with below)
        except (tarfile.TarError, OSError) as exc:
            raise DatasetError(f"not a readable tar archive: {archive.name} ({exc})") from exc
        with tf:
            try:
                members = _plan_tar(tf, skipped, archive.stat().st_size)
            except (tarfile.TarError, EOFError) as exc:
                raise DatasetError(f"corrupt tar archive {archive.name}: {exc}") from exc
            if reserve is not None:
                reserve(sum(m.declared_size for m in members))

            @contextlib.contextmanager
            def open_member(m: Member) -> Iterator[IO[bytes]]:
                f = tf.extractfile(m.handle)  # type: ignore[arg-type]
                if f is None:
                    raise tarfile.TarError("not a regular file")
                with f:
                    yield f

            _extract_members(open_member, members, target, skipped)
    return skipped


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temp folders a killed writer of ``target`` left beside it
    (``.tmp-<name>-*``, ``engine.store.atomic``). Call it holding ``target``'s writer lock."""
    import shutil

    from engine.store.atomic import temp_prefix

    removed = []
    try:
        leftovers = list(target.parent.glob(f"{temp_prefix(target)}*"))
    except OSError:
        return removed
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def unpack_into(
    archive: Path, kind: str, target: Path, reserve: Callable[[int], None] | None = None
) -> list[SkippedItem]:
    """Unpack ``archive`` safely into the new folder ``target`` (atomically: a temp folder
    renamed whole); ``reserve`` is charged with the declared size first. Returns the skipped
    members. Used for archives beside an uploaded manifest (``engine.store.uploads``)."""
    with atomic_dir(target, replace=True) as tmp:
        skipped = unpack_members(archive, kind, tmp.resolve(), reserve)
        record = [{"source": s.source, "reason": s.reason} for s in skipped]
        (tmp / SKIPPED_FILE).write_text(json.dumps(record), encoding="utf-8")
        (tmp / COMPLETE_MARKER).write_text("ok\n", encoding="utf-8")  # last: marks it whole
    return skipped


def extract_archive(
    archive: Path, cache: Cache | None = None, kind: str = "zip"
) -> tuple[Path, list[SkippedItem], Lease]:
    """Extract (or reuse) ``archive`` under the cache; returns (folder, skipped members, a
    lease that keeps ``prune`` off the folder until it is released or garbage-collected)."""
    digest = file_sha256(archive)
    cache = Cache.or_default(cache)
    lease = cache.lease("extracted", digest)  # before the check: prune cannot slip in between

    def unpack(target: Path) -> Path:
        # Under the writer lock no other extractor of this archive is alive: whatever temp
        # folder a killed extraction left goes now, not an hour later at a prune.
        remove_stale_temps(target)
        budget = cache.budget(
            "extracted", settings.QUOTA_EXTRACTED, setting="PARALLAX_QUOTA_EXTRACTED"
        )
        unpack_into(archive, kind, target, lambda n: budget.charge(n, f"unpacking {archive.name}"))
        return target

    # One extractor per archive across processes; the marker, written last, says it is whole.
    target = read_through(
        cache,
        "extracted",
        digest,
        read=lambda path: path if (path / COMPLETE_MARKER).is_file() else None,
        make=unpack,
    ).value
    try:
        record = json.loads((target / SKIPPED_FILE).read_text(encoding="utf-8"))
        skipped = [SkippedItem(r["source"], r["reason"]) for r in record]
    except (OSError, ValueError, KeyError, TypeError):
        skipped = []
    return target, [SkippedItem(f"archive member {s.source}", s.reason) for s in skipped], lease


def _content_root(folder: Path) -> Path:
    """The folder itself, or its single top-level folder when that is all it holds."""
    entries = [p for p in folder.iterdir() if not is_hidden(p.name)]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return folder


def _not_images(root: Path) -> list[SkippedItem]:
    """The extracted files an image folder does not read, each with its reason: a file of the
    archive never vanishes without one (hidden files and ``__MACOSX`` debris aside)."""
    from engine.data.images import IMAGE_EXTENSIONS

    out: list[SkippedItem] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(is_hidden(part) for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
            why = f"not an image ({path.suffix or 'no suffix'}): only images are read"
            out.append(SkippedItem(f"archive member {rel.as_posix()}", why))
    return out


def open_archive(
    spec: str,
    archive: Path,
    *,
    cache_root: Path,
    kind: str = "zip",
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Open an archive as a manifest dataset (one manifest at its top) or a folder dataset."""
    archive = archive.expanduser()
    if not archive.is_file():
        raise DatasetError(f"archive not found: {archive}")
    if kind == "zip" and not zipfile.is_zipfile(archive):
        if tarfile.is_tarfile(archive):
            kind = "tar"  # zip:PATH also accepts a tar archive
        else:
            raise DatasetError(f"not a zip archive: {archive}")
    folder, skipped, lease = extract_archive(archive, Cache(cache_root), kind)
    root = _content_root(folder)
    manifests = [
        p
        for p in sorted(root.iterdir())
        if p.is_file() and not is_hidden(p.name) and p.suffix.lower() in ROOT_MANIFEST_SUFFIXES
    ]
    name = archive.name
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    if len(manifests) == 1:
        dataset: Dataset = ManifestDataset(
            manifests[0],
            spec=spec,
            name=name,
            cache_root=cache_root,
            progress=progress,
            skipped=skipped,
        )
    else:
        dataset = FolderDataset(
            root,
            spec=spec,
            name=name,
            cache_root=cache_root,
            progress=progress,
            skipped=[*skipped, *_not_images(root)],
        )
    lease.bind(dataset)  # the folder stays while the dataset reads images from it
    return dataset
