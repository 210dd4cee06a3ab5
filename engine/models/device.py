"""Where forward passes run and how: device choice, precision, host-to-device copies, OOM retry.

Torch is imported inside the functions that need it so ``engine.models`` stays importable in the
dashboard's view-only mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from engine import settings
from engine.errors import ModelUnavailable


def resolve_device(device: str | None) -> str:
    """``None`` -> ``"cuda"`` if a GPU is usable, else ``"cpu"``; an explicit device is checked."""
    import torch

    if device is None or str(device).strip() in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device).strip().lower()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelUnavailable(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelUnavailable(
                f"device {device!r} was asked for but no CUDA GPU is usable here"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelUnavailable(
                f"device {device!r} does not exist ({torch.cuda.device_count()} GPU(s) here)"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ModelUnavailable(f"device {device!r} was asked for but MPS is not available")
    elif dev.type != "cpu":
        raise ModelUnavailable(f"unsupported device {device!r} (use cpu, cuda or cuda:N)")
    return name


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


ENV_PRECISION = "PARALLAX_PRECISION"  # auto (default) | fp32 | bf16 | fp16
ENV_COMPILE = "PARALLAX_TORCH_COMPILE"  # 1: torch.compile the image tower on CUDA (off: unmeasured)


def precision(device: str) -> str:
    """The precision forward passes run in on ``device``: "fp32", "bf16" or "fp16".

    CPU: fp32 always (CPU autocast is slower than fp32 on most hosts and would change the
    vectors for no gain). CUDA: ``PARALLAX_PRECISION`` if set, else bf16 where the GPU has it,
    else fp16. It is part of the vectors' cache key (``compute_material``).
    """
    if not is_cuda(device):
        return "fp32"
    wanted = settings.precision()
    if wanted in ("fp32", "bf16", "fp16"):
        return wanted
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"


def compute_material(device: str, decode: str | None = None) -> dict[str, str]:
    """Cache-key material for how vectors were computed, beyond the model itself.

    Empty for fp32 with Pillow decoding, so every key made before the GPU path existed (and every
    CPU key) stays as it was; otherwise it names the precision and the decoder.
    """
    material: dict[str, str] = {}
    p = precision(device)
    if p != "fp32":
        material["precision"] = p
    if decode:
        material["decode"] = decode
    return material


def autocast_dtype(device: str, dtype_name: str | None = None) -> Any:
    """The autocast dtype for ``device`` (or for an explicit precision name); None for fp32."""
    import torch

    name = dtype_name or precision(device)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(name)


@contextlib.contextmanager
def inference(device: str, dtype_name: str | None = None) -> Iterator[None]:
    """``inference_mode`` plus mixed precision where ``precision(device)`` says so (bf16 on
    CUDA). ``dtype_name`` overrides it, e.g. "bf16" on the CPU to compare precisions in tests."""
    import torch

    dtype = autocast_dtype(device, dtype_name)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            kind = "cuda" if is_cuda(device) else "cpu"
            with torch.autocast(device_type=kind, dtype=dtype):
                yield


def batch_size_for(device: str, base: int) -> int:
    """A batch that fills the GPU: ``base`` (sized for a 16-24 GB card) scaled by the card's
    memory, up to 4x (an H100/H200 runs ViT-B/32 at 1024). Out-of-memory back-off covers a
    guess that is too big. CPU: ``base``."""
    if not is_cuda(device):
        return base
    import torch

    index = torch.device(device).index or 0
    total_gib = torch.cuda.get_device_properties(index).total_memory / 2**30
    return base * (4 if total_gib >= 64 else 2 if total_gib >= 32 else 1)


def prepare_module(module: Any, device: str) -> Any:
    """On CUDA: channels_last weights (the conv stems and conv towers read NHWC faster on tensor
    cores; a ViT only has its patch conv) and, with ``PARALLAX_TORCH_COMPILE=1``, torch.compile.
    Compile stays off by default: it has not been measured to win end to end here."""
    if not is_cuda(device):
        return module
    import torch

    module = module.to(memory_format=torch.channels_last)
    if settings.torch_compile():
        module = torch.compile(module, dynamic=True)
    return module


def to_device(batch: Sequence[Any] | Any, device: str) -> Any:
    """Stack a list of tensors (or take one tensor) and move it to ``device``.

    On CUDA the list is stacked straight into pinned host memory (one copy, and the pinned
    block comes from torch's caching host allocator) and the transfer is non-blocking, so the
    copy overlaps with the work still queued on the GPU; 4-D image batches go channels_last.
    """
    import torch

    if not is_cuda(device):
        tensor = batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))
        return tensor.to(device)
    if isinstance(batch, torch.Tensor):
        host = batch if batch.is_cuda else batch.pin_memory()
    else:
        items = list(batch)
        host = torch.empty((len(items), *items[0].shape), dtype=items[0].dtype, pin_memory=True)
        torch.stack(items, out=host)
    out = host.to(device, non_blocking=True)
    if out.dim() == 4:
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def to_numpy(features: Any) -> np.ndarray:
    """A (B, D) tensor of features -> float32 NumPy, L2-normalised in fp32."""
    return l2_normalize(features.detach().float().cpu().numpy())


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32 (rows of zeros stay zero rather than NaN)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # MPS and some older CUDA paths raise a plain RuntimeError with this text.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def run_with_oom_retry(
    fn: Callable[[list[Any]], np.ndarray],
    items: Sequence[Any],
    batch_size: int,
    *,
    on_resize: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Apply ``fn`` to ``items`` in batches and concatenate; halve the batch on GPU OOM.

    After an out-of-memory error the failed batch is retried at half the size (down to 1, after
    which the error propagates). The smaller size is kept for the rest of ``items``: memory that
    ran out once will run out again. ``on_resize(new_size)`` lets a caller remember it.
    """
    import torch

    if not hasattr(items, "shape"):  # a tensor is sliced as it is, not split into rows
        items = list(items)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    out: list[np.ndarray] = []
    start, bs = 0, int(batch_size)
    while start < len(items):
        chunk = items[start : start + bs]
        try:
            result = fn(chunk)
        except Exception as exc:
            if not _is_oom(exc) or bs == 1:
                raise
            bs = max(1, bs // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # give the allocator's cached blocks back first
            if on_resize is not None:
                on_resize(bs)
            continue
        out.append(np.asarray(result))
        start += len(chunk)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out, axis=0)
