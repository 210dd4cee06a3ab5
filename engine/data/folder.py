"""``folder:PATH``: every image under a folder; the first-level sub-folder names are labels.

All images are fully decoded once when the folder is opened, so broken files are reported up
front (with a reason each) instead of failing half-way through an embedding run. The verdicts
are cached per file (path, size, mtime), which makes reopening a large folder cheap.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from engine import settings
from engine.data.base import ContentHasher, DatasetBase, SkippedItem
from engine.data.images import (
    IMAGE_EXTENSIONS,
    check_image_files,
    open_image_safely,
    read_limited,
)
from engine.errors import DatasetError, ItemError
from engine.store.cache import Cache
from engine.store.progress import ProgressCallback

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image


def is_hidden(name: str) -> bool:
    """Dot-files and macOS archive debris (``__MACOSX/``, ``._x.jpg``) are never items."""
    return name.startswith(".") or name == "__MACOSX"


def is_within(path: Path, root: Path) -> bool:
    """True if ``path`` (already resolved) is ``root`` or lies below it."""
    return path == root or root in path.parents


def verdict_cache_file(cache_root: Path, source: Path) -> Path:
    """Where the per-file check results for a folder or manifest at ``source`` are kept."""
    key = hashlib.sha256(str(source).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return Cache(cache_root).path("checks", key)


def list_image_files(root: Path) -> tuple[list[PurePosixPath], list[SkippedItem], int]:
    """Image files under ``root`` (relative, sorted), skipped links, and a count of other files.

    Symlinks are allowed only when they resolve inside ``root``; linked folders are not walked
    (their files would show up twice, and a link loop would never end).
    """
    found: list[PurePosixPath] = []
    skipped: list[SkippedItem] = []
    others = 0

    def unreadable(exc: OSError) -> None:  # os.walk would otherwise drop such folders silently
        where = Path(exc.filename or root)
        rel = where.relative_to(root).as_posix() if is_within(where, root) else str(where)
        skipped.append(SkippedItem(rel or ".", f"cannot read folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        kept = []
        for d in sorted(dirnames):
            if is_hidden(d):
                continue
            if (here / d).is_symlink():
                target = (here / d).resolve()
                why = (
                    "symlinked folder not followed"
                    if is_within(target, root)
                    else "symlink points outside the folder"
                )
                skipped.append(SkippedItem(str(rel_dir / d), why))
                continue
            kept.append(d)
        dirnames[:] = kept
        for f in filenames:
            if is_hidden(f):
                continue
            rel = rel_dir / f
            if rel.suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
                others += 1
                continue
            path = here / f
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    skipped.append(SkippedItem(str(rel), "broken symlink"))
                    continue
                if not is_within(target, root):
                    skipped.append(SkippedItem(str(rel), "symlink points outside the folder"))
                    continue
            found.append(rel)
    found.sort(key=lambda p: p.parts)
    return found, skipped, others


class FolderDataset(DatasetBase):
    """Images under ``root``; label = first-level sub-folder (``None`` for files at the top)."""

    has_images = True
    texts = None

    def __init__(
        self,
        root: Path,
        *,
        spec: str | None = None,
        name: str | None = None,
        cache_root: Path,
        progress: ProgressCallback | None = None,
        skipped: list[SkippedItem] | None = None,
    ) -> None:
        root = Path(root).expanduser()
        if not root.exists():
            raise DatasetError(f"folder not found: {root}")
        if not root.is_dir():
            raise DatasetError(f"not a folder: {root}")
        self.root = root.resolve()
        self.spec = spec or f"folder:{root}"
        self.name = name or self.root.name or str(self.root)
        self.skipped = list(skipped or [])

        files, link_skips, others = list_image_files(self.root)
        self.skipped.extend(link_skips)
        if len(files) > settings.MAX_ITEMS:
            raise DatasetError(
                f"{self.root} holds {len(files):,} images, over the limit of "
                f"{settings.MAX_ITEMS:,} (raise PARALLAX_MAX_ITEMS to allow more)"
            )
        checks = check_image_files(
            [self.root / p for p in files],
            cache_file=verdict_cache_file(cache_root, self.root),
            progress=progress,
        )

        self.ids = []
        self.labels = []
        self._digests: list[str] = []
        self._sizes: list[tuple[int, int]] = []
        for rel, check in zip(files, checks, strict=True):
            if not check.ok or check.sha256 is None:
                self.skipped.append(SkippedItem(str(rel), check.error or "unreadable"))
                continue
            self.ids.append(str(rel))
            self.labels.append(rel.parts[0] if len(rel.parts) > 1 else None)
            self._digests.append(check.sha256)
            self._sizes.append((check.width, check.height))

        if not self.ids:
            kinds = ", ".join(sorted(IMAGE_EXTENSIONS))
            if files:
                first = self.skipped[-1]
                raise DatasetError(
                    f"no usable images in {self.root}: all {len(files)} failed "
                    f"(e.g. {first.source}: {first.reason})"
                )
            raise DatasetError(f"no image files ({kinds}) in {self.root} ({others} other files)")

        h = ContentHasher("images-v1")
        for id_, label, digest in zip(self.ids, self.labels, self._digests, strict=True):
            h.add_row(id_, label, None, digest)
        self._fingerprint = h.hexdigest()

    def load_image(self, index: int) -> Image.Image:
        self._check_index(index)
        path = self.root / self.ids[index]
        # Re-check containment at read time: the folder may have changed since it was opened.
        if not is_within(path.resolve(), self.root):
            raise ItemError("symlink points outside the folder")
        return open_image_safely(path, name=self.ids[index])

    def load_image_bytes(self, index: int) -> bytes:
        """The file's bytes, for decoders other than Pillow (nvJPEG in ``engine.embed.gpu_decode``).

        Only bytes that are exactly the ones checked when the folder was opened (same SHA-256)
        are handed out: a file swapped since then could hold what the checks would refuse.
        """
        self._check_index(index)
        path = self.root / self.ids[index]
        if not is_within(path.resolve(), self.root):
            raise ItemError("symlink points outside the folder")
        data = read_limited(path)
        if hashlib.sha256(data).hexdigest() != self._digests[index]:
            raise ItemError("file changed since the folder was opened; open it again")
        return data

    def _metadata_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            {
                "path": pd.Series(self.ids, dtype=object),
                "width": pd.Series([w for w, _ in self._sizes], dtype="int64"),
                "height": pd.Series([h for _, h in self._sizes], dtype="int64"),
            }
        )

    def fingerprint(self) -> str:
        return self._fingerprint
