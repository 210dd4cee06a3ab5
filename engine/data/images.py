"""Safe image decoding: untrusted bytes in, a plain RGB ``PIL.Image`` out, or an ``ItemError``.

Order matters: size limits are checked on the file, then the header is parsed lazily and the
pixel count checked *before* any pixel is decoded, then the image is fully decoded (which is
what catches truncated files), then EXIF orientation and colour mode are normalised.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine import settings
from engine.errors import CacheError, DatasetError, ItemError
from engine.store.atomic import atomic_write_bytes
from engine.store.progress import ProgressCallback, ProgressTracker
from engine.store.space import touch

# File extensions a folder dataset picks up (lower case, no dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif"})

# Pillow formats we agree to parse, whatever the file is called. Restricting the plugin list
# keeps rarely-audited decoders (and EPS, which shells out to Ghostscript) away from untrusted
# files; TIFF and MPO are here because manifests often point at them.
_WANTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "DIB", "GIF", "TIFF")
Image.init()  # register every plugin now: Image.open(formats=...) fails on unregistered names
ALLOWED_FORMATS: tuple[str, ...] = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)

# Pillow's own bomb guard: it warns past MAX_IMAGE_PIXELS and raises past twice that. Our own
# check below is stricter and runs first; turning the warning into an error makes sure Pillow's
# guard can never be a silent pass-through for another caller in this process either.
Image.MAX_IMAGE_PIXELS = settings.MAX_IMAGE_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

_WHITE = (255, 255, 255)


def _megabytes(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


def check_file_size(size: int) -> None:
    """Refuse empty files and files over ``settings.MAX_IMAGE_FILE_BYTES`` (before reading)."""
    if size == 0:
        raise ItemError("empty file (0 bytes)")
    limit = settings.MAX_IMAGE_FILE_BYTES
    if size > limit:
        raise ItemError(f"file too large ({_megabytes(size)} > limit {_megabytes(limit)})")


def read_limited(path: Path) -> bytes:
    """Read a whole file, refusing empty and oversized ones without reading them."""
    try:
        size = path.stat().st_size
        check_file_size(size)
        limit = settings.MAX_IMAGE_FILE_BYTES
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # +1: a file that grew since stat() is still caught
    except FileNotFoundError as exc:
        raise ItemError("file not found") from exc
    except IsADirectoryError as exc:
        raise ItemError("is a folder, not a file") from exc
    except OSError as exc:
        raise ItemError(f"cannot read file: {exc.strerror or exc}") from exc
    check_file_size(len(data))
    return data


# Decoded images larger than this on their longer side are reduced (box filter, integer
# factor) before any colour conversion: every consumer (models at ~224 px, thumbnails, the
# gallery) wants far less, and a small file must not cost gigabytes in conversions (an
# 8000 x 8000 16-bit PNG of 128 KB once cost 2.3 GB here).
WORKING_SIDE = 4096


def _reduce_factor(image: Image.Image) -> int:
    return max(1, -(-max(image.size) // WORKING_SIDE))


def _shrink(image: Image.Image) -> Image.Image:
    """``image`` reduced to at most ``WORKING_SIDE`` per side where Pillow can (8-bit modes);
    16/32-bit greyscale is strided in ``_sixteen_bit_to_l`` instead."""
    factor = _reduce_factor(image)
    if factor == 1 or image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not take (P, 1, ...): converted first, then reduced
        return image


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit greyscale to 8 bits by value range, not by clipping at 255."""
    factor = _reduce_factor(image)
    pixels = np.asarray(image)[::factor, ::factor]  # a view: the reduction costs no copy
    if image.mode.startswith("I;16"):  # float32 is exact enough for x / 257 (no .5 ties)
        out = np.empty(pixels.shape, dtype=np.uint8)
        for row in range(0, pixels.shape[0], 512):  # in blocks: no full-size temporaries
            block = pixels[row : row + 512].astype(np.float32)
            block /= np.float32(257.0)
            np.rint(block, out=block)
            out[row : row + 512] = np.clip(block, 0, 255)
        return Image.fromarray(out, "L")
    if image.mode == "F":
        pixels = pixels.astype(np.float64)
        finite = np.isfinite(pixels)
        lo = float(pixels[finite].min()) if finite.any() else 0.0
        hi = float(pixels[finite].max()) if finite.any() else 0.0
        if lo >= 0.0 and hi <= 1.0:  # the usual convention for float images
            scaled = pixels * 255.0
        else:
            scaled = (pixels - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(pixels)
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    else:
        pixels = pixels.astype(np.int64)
        lo, hi = int(pixels.min()), int(pixels.max())
        if image.mode.startswith("I;16") or (lo >= 0 and hi <= 65535):
            scaled = pixels / 257.0  # 0..65535 -> 0..255, as every 16-bit viewer shows it
        else:  # true 32-bit data: stretch its own range
            scaled = (pixels - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros(pixels.shape)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto white (what a viewer would show on a page)."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded Pillow mode to 8-bit RGB, or raise ``ItemError``."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in image.info):
        return _flatten_alpha(image)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _sixteen_bit_to_l(image).convert("RGB")
    try:
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX, HSV ...
    except (ValueError, OSError) as exc:
        raise ItemError(f"unsupported colour mode {mode}") from exc


class PixelBudget:
    """Pixels one request (a predict, a search, an upload's images) may hold decoded, summed
    across all its images from their headers before any is decoded: past
    ``PARALLAX_REQUEST_PIXELS`` the request is refused in one line (``BudgetError``). An
    image counts what it is held at (reduced to ``WORKING_SIDE`` per side)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = settings.REQUEST_PIXELS if limit is None else limit
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, width: int, height: int, name: str) -> None:
        side = max(width, height, 1)
        scale = min(1.0, WORKING_SIDE / side)
        held = int(width * scale) * int(height * scale)
        with self._lock:
            if self.used + held > self.limit:
                from engine.errors import BudgetError

                raise BudgetError(
                    f"{name}: the images of this request add up to more than "
                    f"{self.limit / 1e6:,.0f} M pixels (PARALLAX_REQUEST_PIXELS): send fewer "
                    "or smaller images"
                )
            self.used += held


class _PixelGate:
    """Pixels being decoded at once in this process, whoever asks (every visitor's opens and
    requests): a decode waits until its pixels fit under ``PARALLAX_REQUEST_PIXELS``, so
    concurrent decodes never hold more than that (one image larger than the gate takes it
    whole)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        capacity = max(settings.REQUEST_PIXELS, 1)
        need = min(pixels, capacity)
        with self._cond:
            self._cond.wait_for(lambda: self._busy + need <= capacity)
            self._busy += need
        try:
            yield
        finally:
            with self._cond:
                self._busy -= need
                self._cond.notify_all()


DECODING = _PixelGate()


def open_image_safely(
    source: Path | bytes, *, name: str, budget: PixelBudget | None = None
) -> Image.Image:
    """Decode ``source`` (a path or the file's bytes) into an RGB image; ``name`` is for errors.

    Raises ``ItemError`` with a short reason: empty or oversized file, not an image, too many
    pixels (decompression bomb), truncated or corrupt data, unsupported colour mode.
    ``budget`` (a request's ``PixelBudget``) is charged from the header before decoding; a
    ``BudgetError`` refuses the whole request. Decodes pass the process-wide pixel gate.
    """
    data = read_limited(source) if isinstance(source, Path) else bytes(source)
    check_file_size(len(data))
    try:
        # Image.open only reads the header: the format comes from the content, not the name.
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
            limit = settings.MAX_IMAGE_PIXELS
            if width <= 0 or height <= 0:
                raise ItemError("image has no pixels")
            if width * height > limit:
                raise ItemError(
                    f"image too large ({width}x{height} = {width * height / 1e6:.1f} M pixels "
                    f"> limit {limit / 1e6:.1f} M; possible decompression bomb)"
                )
            if budget is not None:
                budget.charge(width, height, name)
            if image.format == "JPEG" and max(width, height) > WORKING_SIDE:
                # DCT scaling: a large JPEG decodes at 1/2, 1/4 or 1/8 of its size.
                side = max(width, height)
                image.draft(None, (width * WORKING_SIDE // side, height * WORKING_SIDE // side))
            with DECODING.hold(image.size[0] * image.size[1]):
                image.load()  # the full decode of the first frame: truncation shows up here
                small = _shrink(image)
                try:  # exif_transpose copies even an upright image: only call it when it turns
                    turned = small.getexif().get(0x0112, 1) not in (1, None)
                    upright = ImageOps.exif_transpose(small) if turned else small
                except Exception:  # a corrupt EXIF block should not cost the whole image
                    upright = small
                rgb = to_rgb(upright if upright is not None else small)
                if max(rgb.size) > WORKING_SIDE:  # a mode reduce() could not take before
                    rgb = rgb.reduce(_reduce_factor(rgb))
                # Detach from the source file (convert may return the same object for RGB).
                return rgb.copy() if rgb is image else rgb
    except (ItemError, DatasetError):
        raise
    except UnidentifiedImageError as exc:
        raise ItemError("not an image (or an unsupported image format)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ItemError(f"image too large (possible decompression bomb): {exc}") from exc
    except MemoryError as exc:
        raise ItemError("image too large to decode in memory") from exc
    except Exception as exc:
        # Decoders signal damage with OSError, SyntaxError, ValueError, EOFError, zlib.error,
        # struct.error ...: to the user they all mean the same thing.
        raise ItemError("truncated or corrupt image") from exc


# -- checking many files up front -------------------------------------------------------------
# Bump when the checks change, so cached verdicts from an older version are not trusted.
_CHECK_VERSION = 1


@dataclass(frozen=True)
class ImageCheck:
    """The verdict on one image file: its content digest and size, or why it is unusable."""

    sha256: str | None
    width: int = 0
    height: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_image_bytes(data: bytes, *, name: str) -> ImageCheck:
    """Digest ``data`` and fully decode it once; never raises for bad content."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = open_image_safely(data, name=name)
    except ItemError as exc:
        return ImageCheck(digest, error=str(exc))
    return ImageCheck(digest, image.width, image.height)


def _check_path(path: Path) -> ImageCheck:
    try:
        data = read_limited(path)
    except ItemError as exc:
        return ImageCheck(None, error=str(exc))
    return check_image_bytes(data, name=path.name)


def _limits() -> dict[str, int]:
    return {
        "version": _CHECK_VERSION,
        "max_pixels": settings.MAX_IMAGE_PIXELS,
        "max_bytes": settings.MAX_IMAGE_FILE_BYTES,
    }


def _load_verdicts(cache_file: Path | None) -> dict[str, dict]:
    if cache_file is None:
        return {}
    try:
        blob = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: simply check again
    if not isinstance(blob, dict) or blob.get("limits") != _limits():
        return {}
    touch(cache_file)  # a use: prune keeps recently used checks longest
    files = blob.get("files")
    return files if isinstance(files, dict) else {}


def _save_verdicts(cache_file: Path, files: dict[str, dict]) -> None:
    """Atomic write. The cache only saves time, so a read-only or full disk is not an error
    here."""
    blob = json.dumps({"limits": _limits(), "files": files}, sort_keys=True).encode()
    with contextlib.suppress(CacheError):
        atomic_write_bytes(cache_file, blob)


def check_image_files(
    paths: list[Path],
    *,
    cache_file: Path | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> list[ImageCheck]:
    """Check every file in ``paths`` (full decode + SHA-256), in order, in a few threads.

    Verdicts are remembered in ``cache_file`` keyed by (path, size, mtime_ns), so reopening a
    large, unchanged folder only costs a ``stat`` per file.
    """
    known = _load_verdicts(cache_file)
    results: list[ImageCheck | None] = [None] * len(paths)
    stamps: list[tuple[int, int] | None] = [None] * len(paths)
    todo: list[int] = []
    for i, path in enumerate(paths):
        try:
            st = path.stat()
        except OSError:
            results[i] = ImageCheck(None, error="file not found")
            continue
        stamps[i] = (st.st_size, st.st_mtime_ns)
        entry = known.get(str(path))
        if entry and (entry.get("size"), entry.get("mtime_ns")) == stamps[i]:
            results[i] = ImageCheck(
                entry.get("sha256"),
                entry.get("width", 0),
                entry.get("height", 0),
                entry.get("error"),
            )
        else:
            todo.append(i)

    tracker = ProgressTracker("checking images", len(paths), progress, len(paths) - len(todo))
    tracker.emit()  # also when everything was cached: the caller sees done == total
    if todo:
        # Decoding releases the GIL, so a couple of threads overlap I/O and decode; more would
        # only fight the other work on a small machine.
        n_threads = workers or max(2, min(4, os.cpu_count() or 2))
        with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="check") as pool:
            verdicts = pool.map(_check_path, [paths[i] for i in todo])
            for i, verdict in zip(todo, verdicts, strict=True):
                results[i] = verdict
                tracker.advance(1)

    final = [r if r is not None else ImageCheck(None, error="not checked") for r in results]
    if cache_file is not None and (todo or len(known) != len(paths)):
        files = {}
        for path, stamp, verdict in zip(paths, stamps, final, strict=True):
            if stamp is None:
                continue
            files[str(path)] = {
                "size": stamp[0],
                "mtime_ns": stamp[1],
                "sha256": verdict.sha256,
                "width": verdict.width,
                "height": verdict.height,
                "error": verdict.error,
            }
        _save_verdicts(cache_file, files)
    return final
