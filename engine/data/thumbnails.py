"""Small thumbnails of a dataset's images, built once and cached as sprite sheets.

Hover previews and galleries need a small picture of any item quickly, for datasets of up to a
million items. Decoding the original image every time is too slow, and one file per item is too
many files, so thumbnails are packed into sprite sheets::

    thumbs/<dataset fingerprint>/<size>px-v<version>/sheet-000000.webp   (256 items, 16 x 16 grid)
    thumbs/<dataset fingerprint>/<size>px-v<version>/manifest.json       (written when all are done)

The folder of one dataset is one entry of the cache's ``thumbs`` namespace (the fingerprint is
checked as a cache key, so a bundle's claimed fingerprint can never name a path outside it);
reading a sheet records a use, so ``prune`` removes least-recently-hovered datasets first, and
building sheets holds the entry's lease, so ``prune`` never empties a folder being filled.

Item ``i`` lives in sheet ``i // PER_SHEET`` at grid cell ``i % PER_SHEET`` (row-major). Each
thumbnail is the image scaled to fit ``size x size`` and centred on a neutral background. A sheet
is built the first time it is asked for (so hovering over a 1M-item map never waits for a million
decodes) and never rebuilt: the fingerprint is a full content hash, so a changed dataset gets a
new folder. Items that fail to decode get a placeholder tile.
"""

from __future__ import annotations

import base64
import io
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from engine.data.base import Dataset
from engine.errors import ItemError, ParallaxError
from engine.store.atomic import ReadOnlyCache
from engine.store.cache import Cache, Lease, atomic_write_bytes, atomic_write_json
from engine.store.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

THUMB_SIZE = 64
GRID = 16  # sheets are GRID x GRID thumbnails
PER_SHEET = GRID * GRID
SHEET_FORMAT = "WEBP"
SHEET_SUFFIX = ".webp"
SHEET_MIME = "image/webp"
SHEET_QUALITY = 80
THUMBS_VERSION = 1
BACKGROUND = (238, 238, 238)


@dataclass(frozen=True)
class SheetLayout:
    """Where item ``i`` sits: sheet ``i // per_sheet``, cell ``(i % per_sheet)`` row-major."""

    n: int
    size: int = THUMB_SIZE
    grid: int = GRID

    @property
    def per_sheet(self) -> int:
        return self.grid * self.grid

    @property
    def n_sheets(self) -> int:
        return (self.n + self.per_sheet - 1) // self.per_sheet

    def locate(self, index: int) -> tuple[int, int, int]:
        """``(sheet, column, row)`` of item ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"item {index} is outside 0..{self.n - 1}")
        sheet, cell = divmod(index, self.per_sheet)
        row, col = divmod(cell, self.grid)
        return sheet, col, row

    def rows_of_sheet(self, sheet: int) -> range:
        start = sheet * self.per_sheet
        return range(start, min(self.n, start + self.per_sheet))


def thumbs_dir(dataset: Dataset, cache: Cache | None = None, size: int = THUMB_SIZE) -> Path:
    """The folder holding this dataset's sheets (not created)."""
    cache = cache or Cache()
    return cache.path("thumbs", dataset.fingerprint()) / f"{size}px-v{THUMBS_VERSION}"


def _in_use(folder: Path, cache: Cache | None) -> Lease:
    """Hold the thumbs entry of ``folder`` (a ``thumbs_dir``) in use, so ``prune`` skips it,
    and record the use."""
    cache = cache or Cache()
    entry = folder.parent  # thumbs/<fingerprint>
    lease = cache.lease("thumbs", entry.name)
    cache.touch(entry)
    return lease


def sheet_path(
    dataset: Dataset, sheet: int, cache: Cache | None = None, size: int = THUMB_SIZE
) -> Path:
    return thumbs_dir(dataset, cache, size) / f"sheet-{sheet:06d}{SHEET_SUFFIX}"


def fit_thumbnail(image: Image.Image, size: int = THUMB_SIZE) -> Image.Image:
    """``image`` scaled to fit ``size x size`` (aspect kept), centred on a neutral square."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / max(w, h, 1)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    # Upscaling tiny images (8x8 digits) with NEAREST keeps them crisp; downscaling uses a
    # proper filter (reducing_gap makes large photos cheap: JPEG draft + box pre-shrink).
    if scale >= 1:
        small = image.resize(new, Image.Resampling.NEAREST)
    else:
        small = image.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    tile = Image.new("RGB", (size, size), BACKGROUND)
    tile.paste(small, ((size - new[0]) // 2, (size - new[1]) // 2))
    return tile


def placeholder_tile(size: int = THUMB_SIZE) -> Image.Image:
    """A grey tile with a cross: the thumbnail of an item that cannot be decoded."""
    tile = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(tile)
    m = size // 4
    draw.line((m, m, size - m, size - m), fill=(150, 40, 40), width=max(1, size // 16))
    draw.line((m, size - m, size - m, m), fill=(150, 40, 40), width=max(1, size // 16))
    return tile


def _thumb_or_placeholder(dataset: Dataset, index: int, size: int) -> Image.Image:
    try:
        return fit_thumbnail(dataset.load_image(index), size)
    except ItemError:
        return placeholder_tile(size)


def render_sheet(
    dataset: Dataset,
    sheet: int,
    size: int = THUMB_SIZE,
    pool: ThreadPoolExecutor | None = None,
) -> bytes:
    """Encode sheet ``sheet`` of ``dataset`` (decoding its items, in ``pool`` if given)."""
    if not dataset.has_images:
        raise ParallaxError(f"dataset {dataset.spec} has no images to make thumbnails of")
    layout = SheetLayout(len(dataset), size)
    rows = layout.rows_of_sheet(sheet)
    if len(rows) == 0:
        raise IndexError(f"sheet {sheet} is outside 0..{layout.n_sheets - 1}")
    if pool is not None:
        tiles: Iterable[Image.Image] = pool.map(
            lambda i: _thumb_or_placeholder(dataset, i, size), rows
        )
    else:
        tiles = (_thumb_or_placeholder(dataset, i, size) for i in rows)
    used_rows = (len(rows) + GRID - 1) // GRID
    canvas = Image.new("RGB", (GRID * size, used_rows * size), BACKGROUND)
    for cell, tile in enumerate(tiles):
        r, c = divmod(cell, GRID)
        canvas.paste(tile, (c * size, r * size))
    buf = io.BytesIO()
    canvas.save(buf, SHEET_FORMAT, quality=SHEET_QUALITY, method=4)
    return buf.getvalue()


def get_sheet(
    dataset: Dataset,
    sheet: int,
    cache: Cache | None = None,
    size: int = THUMB_SIZE,
    pool: ThreadPoolExecutor | None = None,
) -> bytes:
    """The encoded bytes of one sheet, built and stored on first use."""
    path = sheet_path(dataset, sheet, cache, size)
    try:  # one open + read: a sheet removed after the open still reads whole (no lease needed)
        data = path.read_bytes()
        (cache or Cache()).touch(path.parent.parent)
        return data
    except FileNotFoundError:
        pass
    with _in_use(path.parent, cache):  # building: prune must not empty the folder meanwhile
        data = render_sheet(dataset, sheet, size, pool)
        # Two processes may build the same sheet at once: both write identical bytes atomically.
        try:
            atomic_write_bytes(path, data)
        except ReadOnlyCache:  # a read-only cache: the sheet is still right, just not kept
            log.debug("read-only cache: thumbnail sheet %d not stored", sheet)
    return data


def sheet_data_url(
    dataset: Dataset, sheet: int, cache: Cache | None = None, size: int = THUMB_SIZE
) -> str:
    """One sheet as a ``data:`` URL (what a browser-side preview can use directly)."""
    data = get_sheet(dataset, sheet, cache, size)
    return f"data:{SHEET_MIME};base64,{base64.b64encode(data).decode()}"


def thumbnail(
    dataset: Dataset, index: int, cache: Cache | None = None, size: int = THUMB_SIZE
) -> Image.Image:
    """The cached thumbnail of item ``index`` (cut from its sheet)."""
    layout = SheetLayout(len(dataset), size)
    sheet, col, row = layout.locate(index)
    data = get_sheet(dataset, sheet, cache, size)
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB").crop((col * size, row * size, (col + 1) * size, (row + 1) * size))


def thumbnails(
    dataset: Dataset,
    indices: Iterable[int],
    cache: Cache | None = None,
    size: int = THUMB_SIZE,
    build_missing: bool = True,
) -> list[Image.Image]:
    """Thumbnails of several items, opening each needed sheet once.

    With ``build_missing=False`` an item whose sheet is not built yet is decoded on its own
    instead (a gallery of 12 scattered items should not decode 12 whole sheets first).
    """
    layout = SheetLayout(len(dataset), size)
    sheets: dict[int, Image.Image | None] = {}
    out: list[Image.Image] = []
    for index in indices:
        sheet, col, row = layout.locate(index)
        if sheet not in sheets:
            path = sheet_path(dataset, sheet, cache, size)
            if build_missing or path.is_file():
                with Image.open(io.BytesIO(get_sheet(dataset, sheet, cache, size))) as im:
                    sheets[sheet] = im.convert("RGB")
            else:
                sheets[sheet] = None
        image = sheets[sheet]
        if image is None:
            out.append(_thumb_or_placeholder(dataset, index, size))
        else:
            out.append(image.crop((col * size, row * size, (col + 1) * size, (row + 1) * size)))
    return out


def is_complete(dataset: Dataset, cache: Cache | None = None, size: int = THUMB_SIZE) -> bool:
    return (thumbs_dir(dataset, cache, size) / "manifest.json").is_file()


def build_thumbnails(
    dataset: Dataset,
    cache: Cache | None = None,
    size: int = THUMB_SIZE,
    workers: int = 4,
    progress: ProgressCallback | None = None,
) -> Path:
    """Build every missing sheet of ``dataset`` (decoding in ``workers`` threads); returns the
    folder. Sheets already on disk are kept, so an interrupted build resumes where it stopped."""
    cache = cache or Cache()
    t0 = time.perf_counter()
    layout = SheetLayout(len(dataset), size)
    folder = thumbs_dir(dataset, cache, size)
    tracker = ProgressTracker("thumbnails", layout.n, progress)
    tracker.emit()
    built = 0
    lease = _in_use(folder, cache)  # held for the whole build: prune never empties it midway
    with lease, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for sheet in range(layout.n_sheets):
            path = sheet_path(dataset, sheet, cache, size)
            if not path.is_file():
                get_sheet(dataset, sheet, cache, size, pool)
                built += 1
            tracker.advance(len(layout.rows_of_sheet(sheet)))
        if not (folder / "manifest.json").is_file():
            atomic_write_json(
                folder / "manifest.json",
                {
                    "dataset": dataset.spec,
                    "dataset_fingerprint": dataset.fingerprint(),
                    "n": layout.n,
                    "size": size,
                    "grid": GRID,
                    "per_sheet": layout.per_sheet,
                    "sheets": layout.n_sheets,
                    "format": SHEET_FORMAT.lower(),
                    "version": THUMBS_VERSION,
                    "seconds": round(time.perf_counter() - t0, 3),
                    "built_now": built,
                },
            )
    return folder
