"""Images from files to model input on the device: JPEG decoded by nvJPEG, resized and normalised
there too, the next batch prepared while the model runs on the current one.

On CUDA the CPU is the bottleneck of the usual path (Pillow decodes and resizes every image on a
few cores: ~2,500 img/s on a whole A100 host for clip-retrieval), so here the CPU only reads
bytes and parses headers. ``torchvision.io.decode_jpeg(list, device="cuda")`` decodes a batch
with nvJPEG; resizing and normalising run as batched tensor ops on the same device. Anything
nvJPEG does not read (PNG, WebP, CMYK or progressive JPEGs, EXIF-rotated files, datasets that do
not hand out file bytes) goes through the dataset's own safe Pillow decoder, and only its resize
and normalisation run on the device.

The output is close to, not identical with, the Pillow path (other IDCT, other resampling
kernel), so vectors made this way get their own cache key (``DECODE_KEY``).

Everything here also runs with ``device="cpu"`` tensors (torchvision decodes JPEG on the CPU
too): that is how the tests exercise it on machines without a GPU.
"""

from __future__ import annotations

import io
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from engine import settings
from engine.errors import ItemError

T = TypeVar("T")
R = TypeVar("R")

DECODE_KEY = "device-v1"  # cache-key material of vectors made through this pipeline
ENV_MODE = "PARALLAX_DEVICE_DECODE"  # auto (CUDA only, the default) | on (any device) | off
_JPEG_MAGIC = b"\xff\xd8\xff"


def decode_mode() -> str:
    """``PARALLAX_DEVICE_DECODE``: auto, on or off (the yes/no words too; others: one error)."""
    return settings.device_decode()


def wanted(device: str) -> bool:
    """Use this pipeline on ``device``? By default on CUDA only: the CPU path stays Pillow."""
    mode = decode_mode()
    return mode == "on" or (mode == "auto" and str(device).startswith("cuda"))


@dataclass(frozen=True)
class PixelSpec:
    """What a model's image preprocessing does, in terms the tensor pipeline can repeat."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # or "bilinear"
    resize_mode: str = "shortest"  # shortest side to ``size`` then centre crop; or "squash"

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> PixelSpec | None:
        """From ``model.visual.preprocess_cfg``; None where the pipeline cannot match it."""
        size = cfg.get("size")
        if isinstance(size, (tuple, list)):
            if len(size) != 2 or size[0] != size[1]:
                return None
            size = size[0]
        interpolation = cfg.get("interpolation", "bicubic")
        resize_mode = cfg.get("resize_mode", "shortest")
        if not size or interpolation not in ("bicubic", "bilinear"):
            return None
        if resize_mode not in ("shortest", "squash") or cfg.get("mode", "RGB") != "RGB":
            return None
        return cls(
            int(size),
            tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
            tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
            interpolation,
            resize_mode,
        )


def pixel_spec(model: Any) -> PixelSpec | None:
    """The model's preprocessing as a ``PixelSpec``, or None when the model cannot take device
    batches (it needs ``pixel_config`` and ``embed_pixels``; open_clip models have both)."""
    cfg = getattr(model, "pixel_config", None)
    if not cfg or not callable(getattr(model, "embed_pixels", None)):
        return None
    return PixelSpec.from_open_clip(cfg)


def used_for(model: Any) -> bool:
    """Whether ``engine.embed.local`` decodes on the device for this model (its cache key says
    so)."""
    return wanted(str(getattr(model, "device", "cpu"))) and pixel_spec(model) is not None


# -- reading: CPU threads, bytes only -----------------------------------------------------------
@dataclass
class _Read:
    """One item after the CPU's share: JPEG bytes for nvJPEG, or pixels Pillow decoded."""

    jpeg: bytes | None = None
    pixels: np.ndarray | None = None  # H x W x 3 uint8, from the safe Pillow decoder
    error: str | None = None


def nvjpeg_readable(data: bytes) -> bool:
    """Whether nvJPEG decodes these bytes as Pillow would: a baseline JPEG in RGB or greyscale
    with no EXIF rotation. Reads the header only (no pixels)."""
    if not data.startswith(_JPEG_MAGIC):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):
                return False
            if im.info.get("progressive") or im.info.get("progression"):
                return False
            return int(im.getexif().get(0x0112, 1) or 1) == 1  # 0x0112: EXIF orientation
    except Exception:
        return False  # let the safe decoder give the reason


def read_item(dataset: Any, index: int) -> _Read:
    """The CPU's share for one item: verified file bytes when nvJPEG can take them, else the
    dataset's own safe decode. Never raises for a bad item (the error is kept)."""
    try:
        raw = getattr(dataset, "load_image_bytes", None)
        data = raw(index) if raw is not None else None
        if data is not None and nvjpeg_readable(data):
            return _Read(jpeg=data)
        if data is not None:
            from engine.data.images import open_image_safely

            image = open_image_safely(data, name=str(index))
        else:
            image = dataset.load_image(index)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return _Read(pixels=np.array(image, dtype=np.uint8))  # a writable copy for torch
    except ItemError as exc:
        return _Read(error=str(exc))


# -- on the device ------------------------------------------------------------------------------
def decode_jpegs(blobs: Sequence[bytes], device: str) -> list[Any | None]:
    """Decode JPEG bytes to 3 x H x W uint8 tensors on ``device``, one batched call when it can;
    an entry is None where the decoder refused that file (the caller falls back to Pillow)."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not blobs:
        return []
    datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    with warnings.catch_warnings():
        # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec; they still
        # are the ones with a batched nvJPEG path.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass  # one bad file fails the whole batch: find it by decoding one at a time
        single: list[Any | None] = []
        for d in datas:
            try:
                single.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                single.append(None)
        return single


def resize_normalise(images: Sequence[Any], spec: PixelSpec) -> Any:
    """3 x H x W uint8 tensors (one device) -> N x 3 x S x S float32, as open_clip's transform:
    resize (shortest side to S, or squash to S x S), centre crop, /255, normalise.

    Images of one size are resized together (one kernel per size, not per image). Resized
    values are rounded to uint8 steps as Pillow's resize would be before ``ToTensor``.
    """
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    mode = getattr(InterpolationMode, spec.interpolation.upper())  # BICUBIC or BILINEAR
    s = spec.size
    device = images[0].device
    out = torch.empty((len(images), 3, s, s), dtype=torch.float32, device=device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((int(im.shape[-2]), int(im.shape[-1])), []).append(i)
    for (h, w), idx in groups.items():
        x = torch.stack([images[i] for i in idx]).float()
        if spec.resize_mode == "squash":
            if (h, w) != (s, s):
                x = F.resize(x, [s, s], interpolation=mode, antialias=True)
        else:
            if min(h, w) != s:
                x = F.resize(x, [s], interpolation=mode, antialias=True)
            x = F.center_crop(x, [s, s])
        out[torch.as_tensor(idx, device=device)] = x.round_().clamp_(0, 255)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0
    return out.sub_(mean).div_(std)


@dataclass
class DeviceBatch:
    """One batch ready for the model: ``pixels`` holds the rows of ``ok`` (positions in the
    batch), in order; ``failures`` maps dataset index -> reason."""

    span: tuple[int, int]
    pixels: Any | None
    ok: list[int]
    failures: dict[int, str]
    ready: Any | None = None  # a CUDA event the consumer's stream waits on


class DeviceImagePipeline:
    """Dataset items -> device batches: CPU threads read bytes, the device decodes and resizes."""

    def __init__(self, dataset: Any, spec: PixelSpec, device: str, workers: int = 4) -> None:
        self.dataset = dataset
        self.spec = spec
        self.device = device
        self.workers = max(1, int(workers))
        self.pillow_fallbacks = 0  # items that did not go through nvJPEG (for benchmarks)

    def make_batch(self, span: tuple[int, int], pool: ThreadPoolExecutor) -> DeviceBatch:
        import torch

        indices = list(range(*span))
        reads = list(pool.map(lambda i: read_item(self.dataset, i), indices))
        failures = {i: r.error for i, r in zip(indices, reads, strict=True) if r.error}
        jpeg_pos = [p for p, r in enumerate(reads) if r.jpeg is not None]
        decoded = decode_jpegs([reads[p].jpeg for p in jpeg_pos], self.device)  # type: ignore[misc]
        tensors: dict[int, Any] = {}
        for p, t in zip(jpeg_pos, decoded, strict=True):
            if t is None:  # nvJPEG refused it: the safe decoder decides
                reads[p] = read_item(_NoBytes(self.dataset), indices[p])
                if reads[p].error:
                    failures[indices[p]] = reads[p].error  # type: ignore[assignment]
            else:
                tensors[p] = t
        for p, r in enumerate(reads):
            if r.pixels is not None:
                self.pillow_fallbacks += 1
                chw = torch.from_numpy(r.pixels).permute(2, 0, 1)
                tensors[p] = chw.to(self.device, non_blocking=True)
        ok = sorted(tensors)
        pixels = resize_normalise([tensors[p] for p in ok], self.spec) if ok else None
        return DeviceBatch(span, pixels, ok, failures)

    def batches(self, spans: Iterable[tuple[int, int]], depth: int = 2) -> Iterator[DeviceBatch]:
        """Batches in order, each prepared while the consumer works on the previous one."""
        import torch

        cuda = str(self.device).startswith("cuda")
        side = torch.cuda.Stream(device=self.device) if cuda else None
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="read")

        def produce(span: tuple[int, int]) -> DeviceBatch:
            if side is None:
                return self.make_batch(span, pool)
            with torch.cuda.stream(side):
                batch = self.make_batch(span, pool)
                batch.ready = torch.cuda.Event()
                batch.ready.record(side)
            return batch

        try:
            for batch in prefetch(produce, spans, depth=depth):
                if batch.ready is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(batch.ready)
                    if batch.pixels is not None:
                        batch.pixels.record_stream(current)  # made on `side`, used here
                yield batch
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _NoBytes:
    """A dataset view without ``load_image_bytes``: forces the safe Pillow decode."""

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset

    def load_image(self, index: int) -> Any:
        return self._dataset.load_image(index)


# -- overlap ------------------------------------------------------------------------------------
_DONE = object()


def prefetch(produce: Callable[[T], R], items: Iterable[T], depth: int = 2) -> Iterator[R]:
    """``produce(item)`` for each item in a background thread, at most ``depth`` results ahead
    of the consumer; results come back in order. An exception in ``produce`` is raised in the
    consumer at that item's turn; closing the generator early stops the producer."""
    if depth < 1:
        raise ValueError("depth must be at least 1")
    results: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                results.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if stop.is_set() or not put(("ok", produce(item))):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
            return
        put(("done", _DONE))

    worker = threading.Thread(target=run, name="prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()
