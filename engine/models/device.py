"""Where forward passes run and how: device choice, precision, host-to-device copies, OOM retry.

Torch is imported inside the functions that need it so ``engine.models`` stays importable in the
dashboard's view-only mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

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


def autocast_dtype(device: str) -> Any:
    """bf16 where the GPU supports it, else fp16; None (full fp32) off CUDA."""
    import torch

    if not is_cuda(device):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def inference(device: str) -> Iterator[None]:
    """``inference_mode`` plus mixed precision on CUDA. CPU stays fp32: CPU autocast is slower
    than fp32 on most hosts and would change the vectors for no gain."""
    import torch

    dtype = autocast_dtype(device)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device_type="cuda", dtype=dtype):
                yield


def to_device(batch: Sequence[Any] | Any, device: str) -> Any:
    """Stack a list of tensors (or take one tensor) and move it to ``device``.

    On CUDA the host copy is pinned and the transfer non-blocking, so the copy overlaps with the
    work still queued on the GPU.
    """
    import torch

    tensor = batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))
    if is_cuda(device):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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
