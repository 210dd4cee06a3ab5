"""Upload staging: files a visitor sends become a dataset spec, stored in that owner's namespace.

One module for every front end (the Data page, the HTTP service): the accepted suffixes are the
engine's own (what ``open_dataset`` actually reads), names are sanitised, and each upload is
written whole or not at all (a temp folder renamed into place, ``engine.store.atomic.atomic_dir``)::

    <cache>/uploads/<owner>/upload-<digest>/     one upload (same files again: same folder)

The caller passes ``owner``, the id of whoever uploads (the dashboard: its session id); uploads
of one owner never land in another's folder. Each owner has a disk quota
(``settings.QUOTA_UPLOADS``): an upload that would pass it first removes that owner's
least-recently-used uploads not in use, then fails with one ``QuotaError`` line.

What the files make:
* one archive (``.zip``, ``.tar``, ``.tgz``) -> ``zip:`` / ``tar:`` (a Parallax bundle, by name
  or by its manifest, -> ``bundle:``);
* loose images -> ``folder:`` of those images;
* one manifest (CSV / Parquet / JSON lines), alone or with loose images and/or one archive of
  its images -> ``manifest:`` with the images unpacked beside it, where its relative paths point.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine import settings
from engine.data.archive import ARCHIVE_SUFFIXES, remove_stale_temps, unpack_members
from engine.data.bundle import peek_manifest
from engine.data.images import IMAGE_EXTENSIONS
from engine.data.manifest import MANIFEST_SUFFIXES
from engine.errors import DatasetError
from engine.store.atomic import atomic_dir
from engine.store.cache import Cache, check_key, locked
from engine.store.space import SpaceBudget

IMAGE_SUFFIXES: tuple[str, ...] = tuple(sorted(f".{e}" for e in IMAGE_EXTENSIONS))
TABLE_SUFFIXES: tuple[str, ...] = tuple(sorted(MANIFEST_SUFFIXES))
PACKED_SUFFIXES: tuple[str, ...] = tuple(sorted(ARCHIVE_SUFFIXES))
# What a file picker should accept (no dots), e.g. ``st.file_uploader(type=UPLOAD_TYPES)``.
UPLOAD_SUFFIXES = frozenset(IMAGE_SUFFIXES + TABLE_SUFFIXES + PACKED_SUFFIXES)
UPLOAD_TYPES: list[str] = [s.lstrip(".") for s in IMAGE_SUFFIXES + TABLE_SUFFIXES + PACKED_SUFFIXES]
BUNDLE_SUFFIX = ".parallax.zip"
QUOTA_SETTING = "PARALLAX_QUOTA_UPLOADS"
TOTAL_SETTING = "PARALLAX_QUOTA_UPLOADS_TOTAL"
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class UploadFile:
    """One uploaded file: the name the visitor gave it (untrusted) and its bytes."""

    name: str
    data: bytes | memoryview


@dataclass(frozen=True)
class UploadPlan:
    """What a set of uploaded files makes: ``kind`` in {"archive", "manifest", "images"}."""

    kind: str
    manifest: UploadFile | None
    archive: UploadFile | None
    images: list[UploadFile]


def safe_filename(name: str, default: str = "file") -> str:
    """A name that is safe to join to a folder: basename only, no ``..``, safe characters.

    ``"../../etc/passwd"`` -> ``"passwd"``; ``"C:\\x\\My Photo (1).JPG"`` -> ``"My_Photo_1_.JPG"``.
    """
    base = re.split(r"[/\\]", name or "")[-1]
    base = _SAFE_CHARS.sub("_", base).strip("._ ")
    base = base.replace("..", "_")
    if len(base) > 120:
        stem, dot, suffix = base.rpartition(".")
        base = (
            (stem[: 110 - len(suffix)] + dot + suffix) if dot and len(suffix) <= 8 else base[:120]
        )
    return base or default


def unique_names(names: list[str]) -> list[str]:
    """Safe names with duplicates made distinct (``a.png``, ``a-1.png``, ...)."""
    seen: set[str] = set()
    out = []
    for name in names:
        safe = safe_filename(name)
        stem, dot, suffix = safe.rpartition(".")
        if not dot:
            stem, suffix = safe, ""
        candidate, k = safe, 1
        while candidate.lower() in seen:
            candidate = f"{stem}-{k}{dot}{suffix}"
            k += 1
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def _suffix(name: str) -> str:
    return Path(name.lower()).suffix


def plan_upload(files: Sequence[UploadFile]) -> UploadPlan:
    """Sort uploaded files by what they are. ``DatasetError`` for a type the engine does not
    read or a combination that makes no dataset."""
    manifests = [f for f in files if _suffix(f.name) in TABLE_SUFFIXES]
    archives = [f for f in files if _suffix(f.name) in PACKED_SUFFIXES]
    images = [f for f in files if _suffix(f.name) in IMAGE_SUFFIXES]
    other = [f.name for f in files if _suffix(f.name) not in UPLOAD_SUFFIXES]
    if other:
        kinds = ", ".join(UPLOAD_TYPES)
        raise DatasetError(f"unsupported file type: {', '.join(other[:5])} (accepted: {kinds})")
    if len(manifests) > 1:
        raise DatasetError("upload one manifest at a time (CSV, Parquet or JSON lines)")
    if len(archives) > 1:
        raise DatasetError("upload one archive at a time")
    archive = archives[0] if archives else None
    if manifests:
        return UploadPlan("manifest", manifests[0], archive, images)
    if archive is not None:
        if images:
            raise DatasetError(
                "upload either an archive or loose images, not both (or add a manifest that "
                "lists them)"
            )
        return UploadPlan("archive", None, archive, [])
    if images:
        return UploadPlan("images", None, None, images)
    raise DatasetError("nothing usable was uploaded")


class _BufferReader(io.RawIOBase):
    """A seekable binary file over ``data`` without copying it (``io.BytesIO`` copies a
    memoryview: one more upload-sized allocation, for an upload near the size limit)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        chunk = self._view[self._pos : self._pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, start + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def is_bundle(data: bytes | memoryview, name: str) -> bool:
    """A ``.parallax.zip`` by name, or a zip whose ``manifest.json`` says it is a bundle (only
    that member is read; ``open_bundle`` validates the rest)."""
    return name.lower().endswith(BUNDLE_SUFFIX) or peek_manifest(_BufferReader(data)) is not None


def owner_dir(owner: str, cache: Cache | None = None) -> Path:
    """The folder holding ``owner``'s uploads (may not exist yet)."""
    cache = cache or Cache()
    return cache.kind_dir("uploads") / check_key(owner)


def _upload_id(files: Sequence[UploadFile]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        digest.update(f.name.encode("utf-8", "surrogatepass") + b"\0")
        digest.update(f.data)
        digest.update(b"\0")
    return f"upload-{digest.hexdigest()[:32]}"


def _spec(plan: UploadPlan, folder: Path) -> str:
    """The dataset spec of a staged upload in ``folder`` (the same before and after staging)."""
    if plan.kind == "images":
        return f"folder:{folder / 'images'}"
    if plan.kind == "manifest":
        assert plan.manifest is not None
        return f"manifest:{folder / safe_filename(plan.manifest.name, 'manifest.csv')}"
    assert plan.archive is not None
    path = folder / safe_filename(plan.archive.name, "upload.zip")
    if _suffix(plan.archive.name) != ".zip":
        return f"tar:{path}"
    return f"bundle:{path}" if is_bundle(plan.archive.data, plan.archive.name) else f"zip:{path}"


def _check_archive(upload: UploadFile) -> str:
    """``"zip"`` or ``"tar"`` for an archive's bytes, else ``DatasetError``."""
    import tarfile

    if zipfile.is_zipfile(_BufferReader(upload.data)):
        return "zip"
    try:
        with tarfile.open(fileobj=_BufferReader(upload.data), mode="r:*"):
            return "tar"
    except (tarfile.TarError, OSError, EOFError):
        raise DatasetError(f"{upload.name} is not a readable zip or tar archive") from None


def stage_upload(files: Sequence[UploadFile], owner: str, *, cache: Cache | None = None) -> str:
    """Store uploaded ``files`` for ``owner`` and return the dataset spec that opens them.

    The same files uploaded again by the same owner reuse the stored folder. Raises
    ``DatasetError`` for files that make no dataset and ``QuotaError`` past the owner's quota.
    """
    cache = cache or Cache()
    size = sum(len(f.data) for f in files)
    if size > settings.MAX_UPLOAD_BYTES:
        from engine.errors import BudgetError

        raise BudgetError(
            f"this upload is {size / 1024**2:,.0f} MB, over this deployment's limit of "
            f"{settings.MAX_UPLOAD_BYTES / 1024**2:,.0f} MB (PARALLAX_MAX_UPLOAD_BYTES)"
        )
    plan = plan_upload(files)
    upload_id = _upload_id(files)
    expire_uploads(cache)
    folder = cache.path("uploads", owner, upload_id)
    spec = _spec(plan, folder)
    with cache.lease("uploads", owner, upload_id):  # neither prune nor a quota removes it now
        if folder.is_dir():
            cache.touch(folder)
            return spec
        # A bundle is validated by opening it (``open_bundle``); any other archive here.
        needs_check = plan.archive is not None and not spec.startswith("bundle:")
        archive_kind = _check_archive(plan.archive) if needs_check else None
        # Every visitor's uploads together first (the oldest not in use, anyone's, make room),
        # then this owner's own quota.
        total = cache.budget("uploads", settings.QUOTA_UPLOADS_TOTAL, setting=TOTAL_SETTING)
        total.charge(size, "this upload")
        budget = cache.budget(
            "uploads", settings.QUOTA_UPLOADS, setting=QUOTA_SETTING, under=(owner,)
        )
        budget.charge(size, "this upload")
        with locked(cache.root, upload_id):  # one writer of this upload; a killed one's
            remove_stale_temps(folder)  # temp folder goes now, not at the next prune
            if not folder.is_dir():
                with atomic_dir(folder, durable=True) as tmp:
                    _write_upload(plan, tmp, archive_kind, budget)
    return spec


def expire_uploads(cache: Cache, ttl_s: float | None = None) -> list[Path]:
    """Remove uploads (anyone's) not used for ``ttl_s`` seconds (``PARALLAX_UPLOAD_TTL_S``)
    and not in use: uploads do not outlive their visitors. Called at every upload and by
    ``cache prune``; returns what was removed."""
    import time

    ttl = settings.UPLOAD_TTL_S if ttl_s is None else ttl_s
    now = time.time()
    removed = []
    for entry in cache.stored("uploads"):
        if now - entry.last_used > ttl and cache.remove_unless_in_use(entry):
            removed.append(entry.path)
    return removed


def _write_upload(
    plan: UploadPlan, tmp: Path, archive_kind: str | None, budget: SpaceBudget
) -> None:
    if plan.kind == "archive":
        assert plan.archive is not None
        (tmp / safe_filename(plan.archive.name, "upload.zip")).write_bytes(plan.archive.data)
        return
    if plan.kind == "images":
        target = tmp / "images"
        target.mkdir()
        for f, name in zip(plan.images, unique_names([f.name for f in plan.images]), strict=True):
            (target / name).write_bytes(f.data)
        return
    # A manifest; its images (an archive and/or loose files) go beside it, where relative paths
    # in the manifest point. A manifest alone may hold only texts, or image URLs.
    if plan.archive is not None and archive_kind is not None:
        packed = tmp / ".tmp-images-archive"
        packed.write_bytes(plan.archive.data)
        try:
            unpack_members(
                packed, archive_kind, tmp.resolve(), lambda n: budget.charge(n, "this upload")
            )
        finally:
            packed.unlink(missing_ok=True)
    for f, name in zip(plan.images, unique_names([f.name for f in plan.images]), strict=True):
        (tmp / name).write_bytes(f.data)
    assert plan.manifest is not None
    path = tmp / safe_filename(plan.manifest.name, "manifest.csv")
    if path.is_dir():
        raise DatasetError(f"the archive holds a folder named like the manifest {path.name}")
    path.write_bytes(plan.manifest.data)  # last: an archive member of the same name never wins
