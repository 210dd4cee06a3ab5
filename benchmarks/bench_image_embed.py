"""Benchmark 1: CPU image embedding through the engine vs the model's raw forward pass.

Both sides use the same open_clip model object and batch size. The raw side gets tensors that
were decoded and preprocessed before the clock started; the engine side starts from JPEG files
on disk (decoding, preprocessing, caching, progress included), with decoding overlapped with
compute by the engine's thread pool. Random weights: speed does not depend on their values.

    python benchmarks/bench_image_embed.py [--quick] [--json] [--model SPEC]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from common import Reporter, interleaved, parser, throughput_ratio

from engine.data import open_dataset
from engine.embed.local import embed_dataset
from engine.models import load_model
from engine.store.cache import Cache


def write_jpegs(folder: Path, n: int, size: int = 256) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "a").mkdir(parents=True)
    for i in range(n):
        # smooth random images (a few blobs): JPEG sizes like photos', not like noise
        base = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
        img.save(folder / "a" / f"{i:05d}.jpg", quality=90)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model", default=None, help="default: open_clip:ViT-B-32/random")
    args = p.parse_args()
    rep = Reporter("cpu_image_embed", args)
    spec = args.model or "open_clip:ViT-B-32/random"
    n = 16 if args.quick else 256
    batch = 8 if args.quick else 32
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        write_jpegs(folder, n)
        dataset = open_dataset(f"folder:{folder}", cache_root=Path(tmp) / "c0")
        model = load_model(spec, device="cpu")

        import torch

        from engine.models.device import inference

        pre = [model.preprocess_image(dataset.load_image(i)) for i in range(n)]
        net = model._model  # the raw open_clip module behind the adapter

        def raw() -> None:
            for s in range(0, n, batch):
                x = torch.stack(pre[s : s + batch])
                with inference("cpu"):
                    net.encode_image(x)

        def engine(run: int) -> None:
            embed_dataset(dataset, model, cache=Cache(Path(tmp) / f"c{run}"), batch_size=batch)

        raw()  # warm-up: first-call allocations and kernel selection
        raw_s, engine_s = interleaved(raw, lambda run: engine(run + 1), 1 if args.quick else 3)
        rep.log(
            f"raw forward: {n / min(raw_s):.1f} img/s; engine from JPEG: {n / min(engine_s):.1f}"
        )
    rep.done(
        {
            "model": spec,
            "n": n,
            "batch_size": batch,
            "threads": torch.get_num_threads(),
            **throughput_ratio(n, raw_s, engine_s, ("raw", "images"), 2),
        }
    )


if __name__ == "__main__":
    main()
