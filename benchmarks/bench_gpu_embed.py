"""Benchmark 8 (GPU): ViT-B/32 image embedding, model only and end to end from JPEG files.

- model only: random-weight ViT-B-32 (speed does not depend on the weights) on device tensors,
  batch 256, bf16 autocast under ``inference_mode``, CUDA-synchronised timing;
- end to end: ``engine.embed.local.embed_dataset`` on a folder of JPEG files (decode + preprocess in
  the engine's threads, pinned host-to-device copies, cache writes) vs a decode-only loop over
  the same files on the same machine (the ceiling end to end can reach).

Needs a CUDA GPU for its real figures (``--device cuda``, the default when one is present); on a
CPU it still runs at ``--quick`` size so the script never rots.

    python benchmarks/bench_gpu_embed.py [--quick] [--json] [--n 20000] [--workers 16]
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import Reporter, parser

from engine.data import open_dataset
from engine.embed.local import embed_dataset
from engine.models import load_model
from engine.store.cache import Cache


def write_jpegs(folder: Path, n: int, workers: int, size: int = 256) -> None:
    from PIL import Image

    (folder / "a").mkdir(parents=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        base = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
        img.save(folder / "a" / f"{i:06d}.jpg", quality=90)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(n)))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=20_000, help="JPEG files for the end-to-end run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 4)
    p.add_argument("--device", default=None)
    args = p.parse_args()
    rep = Reporter("gpu_image_embed", args)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    quick = args.quick or device == "cpu"
    n = 32 if quick else args.n
    bs = 8 if quick else args.batch_size
    model = load_model("open_clip:ViT-B-32/random", device=device)
    net = model._model

    from engine.models.device import inference

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    x = torch.randn(bs, 3, 224, 224, device=device)
    with inference(device):
        for _ in range(3):  # warm-up: cuDNN/cuBLAS kernel choice, allocator
            net.encode_image(x)
    sync()
    steps = 2 if quick else 50
    t = time.perf_counter()
    with inference(device):
        for _ in range(steps):
            net.encode_image(x)
    sync()
    model_only = steps * bs / (time.perf_counter() - t)
    rep.log(f"model only ({device}, batch {bs}): {model_only:,.0f} img/s")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        write_jpegs(folder, n, args.workers)
        dataset = open_dataset(f"folder:{folder}", cache_root=Path(tmp) / "c0")
        files = sorted((folder / "a").iterdir())

        from PIL import Image

        def decode(path: Path) -> None:
            with Image.open(path) as im:
                im.convert("RGB").load()

        t = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(decode, files))
        decode_only = n / (time.perf_counter() - t)
        rep.log(f"decode only ({args.workers} threads): {decode_only:,.0f} img/s")

        t = time.perf_counter()
        embed_dataset(
            dataset, model, cache=Cache(Path(tmp) / "c1"), batch_size=bs, workers=args.workers
        )
        end_to_end = n / (time.perf_counter() - t)
        rep.log(f"engine end to end: {end_to_end:,.0f} img/s")
    rep.done(
        {
            "device": device,
            "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
            "n": n,
            "batch_size": bs,
            "workers": args.workers,
            "model_only_images_per_s": round(model_only, 1),
            "decode_only_images_per_s": round(decode_only, 1),
            "end_to_end_images_per_s": round(end_to_end, 1),
            "end_to_end_vs_decode_only": round(end_to_end / decode_only, 3),
            "targets": {"model_only_h100": 15000, "end_to_end_vs_decode_only": 0.8},
        }
    )


if __name__ == "__main__":
    main()
