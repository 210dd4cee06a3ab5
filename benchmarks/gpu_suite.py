"""Benchmark 8 (GPU): the figures of ``benchmarks/gpu_suite.sh``, written as one JSON object.

Each part runs on its own and records its error instead of stopping the rest:

- ``model_only``: random-weight ViT-B/32 (speed does not depend on the weights) on device tensors
  under the engine's ``inference`` (bf16 autocast on CUDA, channels_last), CUDA-synchronised;
- ``precision``: bf16 vs fp32 vectors of the same inputs, per-row cosine (min, mean);
- ``files``: N JPEG files -> vectors through ``engine.embed.local.embed_dataset``: device decode
  (nvJPEG + GPU resize, the default on CUDA) and the Pillow path, against decode-only rates (the
  device pipeline alone; Pillow in threads alone);
- ``text``: MiniLM-L6 (its architecture and tokenizer, random weights) through the engine's
  sentence-transformers adapter on short texts;
- ``oom``: a real out-of-memory: most of the GPU's memory is held, a batch too big for the rest
  is embedded through ``run_with_oom_retry``; the batch sizes tried and the agreement with an
  unconstrained run are recorded;
- ``umap``: cuML UMAP of 1M x 512 (when cuML is installed), the full fit on the GPU.

    python benchmarks/gpu_suite.py --out gpu_suite.json [--cpu-smoke] [--minilm-dir DIR]

``--cpu-smoke`` runs every part at tiny sizes on the CPU (device decode forced on CPU tensors)
so the script is known to work on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_embed import write_jpegs
from common import machine

from engine.data import open_dataset
from engine.embed import gpu_decode
from engine.embed.local import embed_dataset
from engine.models import load_model
from engine.models.device import inference, run_with_oom_retry
from engine.store.cache import Cache


class Suite:
    def __init__(self, smoke: bool, device: str, workers: int) -> None:
        import torch

        self.torch = torch
        self.smoke = smoke
        self.device = device
        self.workers = workers
        self.results: dict[str, Any] = {}
        self._vit: Any = None

    def log(self, *parts: Any) -> None:
        print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)

    def part(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t = time.perf_counter()
        try:
            figures = fn()
        except Exception as exc:  # one part failing must not lose the others' figures
            figures = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        figures["part_seconds"] = round(time.perf_counter() - t, 2)
        self.results[name] = figures
        self.log(name, json.dumps({k: v for k, v in figures.items() if k != "trace"}))

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def vit(self) -> Any:
        if self._vit is None:
            self._vit = load_model("open_clip:ViT-B-32/random", device=self.device)
        return self._vit

    # -- parts ----------------------------------------------------------------------------------
    def model_only(self) -> dict[str, Any]:
        torch, model = self.torch, self.vit()
        net = model._model
        sizes = [8] if self.smoke else [256, 512, 1024]
        steps = 2 if self.smoke else 30
        rates = {}
        for bs in sizes:
            x = torch.randn(bs, 3, 224, 224, device=self.device)
            if self.device.startswith("cuda"):
                x = x.contiguous(memory_format=torch.channels_last)
            with inference(self.device):
                for _ in range(3):  # warm-up: kernel choice, allocator
                    net.encode_image(x)
            self.sync()
            t = time.perf_counter()
            with inference(self.device):
                for _ in range(steps):
                    net.encode_image(x)
            self.sync()
            rates[str(bs)] = round(steps * bs / (time.perf_counter() - t), 1)
        best = max(rates, key=lambda k: rates[k])
        return {
            "images_per_s": rates[best],
            "batch_size": int(best),
            "by_batch_size": rates,
            "engine_default_batch_size": model.default_batch_size,
            "goal_h100_h200": 20000,
        }

    def precision(self) -> dict[str, Any]:
        torch, model = self.torch, self.vit()
        from engine.data.shapes import ShapesDataset

        n = 16 if self.smoke else 256
        ds = ShapesDataset(n=max(100, n), seed=1)
        x = torch.stack([model.preprocess_image(ds.load_image(i)) for i in range(n)])
        x = x.to(self.device)
        out = {}
        for name, dtype in (("fp32", "fp32"), ("bf16", "bf16")):
            with inference(self.device, dtype):
                out[name] = torch.nn.functional.normalize(
                    model._model.encode_image(x).float(), dim=1
                )
        cos = (out["fp32"] * out["bf16"]).sum(dim=1)
        return {
            "rows": n,
            "cosine_min": round(float(cos.min()), 6),
            "cosine_mean": round(float(cos.mean()), 6),
            "goal_min": 0.999,
            "model": "open_clip:ViT-B-32/random",
        }

    def files(self) -> dict[str, Any]:
        model = self.vit()
        n = 64 if self.smoke else 20_000
        bs = 16 if self.smoke else model.default_batch_size
        tmp = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
        try:
            t = time.perf_counter()
            write_jpegs(tmp / "jpegs", n, self.workers)
            written = time.perf_counter() - t
            dataset = open_dataset(f"folder:{tmp / 'jpegs'}", cache_root=tmp / "c0")
            spec = gpu_decode.pixel_spec(model)
            spans = [(b, min(b + bs, n)) for b in range(0, n, bs)]

            pipe = gpu_decode.DeviceImagePipeline(dataset, spec, self.device, self.workers)
            t = time.perf_counter()
            for _batch in pipe.batches(spans):
                pass
            self.sync()
            device_decode = n / (time.perf_counter() - t)

            from PIL import Image

            def pil(i: int) -> None:
                with Image.open(dataset.root / dataset.ids[i]) as im:
                    model.preprocess_image(im.convert("RGB"))

            t = time.perf_counter()
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(pil, range(n)))
            pillow_decode = n / (time.perf_counter() - t)

            rates, made = {}, {}
            for mode in ("on", "off"):  # device decode, then the Pillow path
                os.environ[gpu_decode.ENV_MODE] = mode
                t = time.perf_counter()
                made[mode] = embed_dataset(
                    dataset,
                    model,
                    cache=Cache(tmp / f"c-{mode}"),
                    batch_size=bs,
                    workers=self.workers,
                )
                rates[mode] = n / (time.perf_counter() - t)
                assert made[mode].n == n and not made[mode].failed
            os.environ[gpu_decode.ENV_MODE] = "on" if self.smoke else "auto"
            cos = np.sum(np.load(made["on"].path) * np.load(made["off"].path), axis=1)
            return {
                "n_files": n,
                "batch_size": bs,
                "workers": self.workers,
                "write_seconds": round(written, 1),
                "end_to_end_device_decode_images_per_s": round(rates["on"], 1),
                "end_to_end_pillow_images_per_s": round(rates["off"], 1),
                "decode_only_device_images_per_s": round(device_decode, 1),
                "decode_only_pillow_images_per_s": round(pillow_decode, 1),
                "device_vs_pillow_vectors_cosine_min": round(float(cos.min()), 6),
                "pillow_fallbacks": pipe.pillow_fallbacks,
                "note": "files just written: read from the page cache",
            }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def text(self, minilm_dir: Path) -> dict[str, Any]:
        folder = random_minilm(minilm_dir, Path(tempfile.mkdtemp(prefix="minilm-")))
        model = load_model(f"st:{folder}", device=self.device)
        n = 256 if self.smoke else 200_000
        rng = np.random.default_rng(0)
        words = [
            "the",
            "a",
            "map",
            "of",
            "model",
            "image",
            "text",
            "vector",
            "point",
            "cluster",
            "small",
            "large",
            "red",
            "blue",
        ]
        texts = [" ".join(rng.choice(words, size=int(rng.integers(4, 16)))) for _ in range(n)]
        model.embed_texts(texts[: min(n, 2048)])  # warm-up
        self.sync()
        t = time.perf_counter()
        out = model.embed_texts(texts)
        self.sync()
        rate = n / (time.perf_counter() - t)
        shutil.rmtree(folder, ignore_errors=True)
        return {
            "texts": n,
            "words_per_text": "4-15",
            "texts_per_s": round(rate, 1),
            "batch_size": model.default_batch_size,
            "dim": int(out.shape[1]),
            "goal_h100_h200": 30000,
        }

    def oom(self) -> dict[str, Any]:
        torch, model = self.torch, self.vit()
        if not self.device.startswith("cuda"):
            return {"skipped": "needs a CUDA GPU (simulated OOM is covered by tests)"}
        n = 4096
        x = torch.randn(n, 3, 224, 224, device=self.device, dtype=torch.float16)
        ref = model.embed_pixels(x[:64].float())
        free, total = torch.cuda.mem_get_info()
        hog_bytes = max(0, free - (3 << 29))  # leave 1.5 GiB: the 4096 batch alone is 2.4 GB
        hog = torch.empty(hog_bytes, dtype=torch.uint8, device=self.device)
        tried: list[int] = []
        try:
            out = run_with_oom_retry(
                lambda chunk: model.embed_pixels(chunk.float()), x, n, on_resize=tried.append
            )
        finally:
            del hog
            torch.cuda.empty_cache()
        cos = np.sum(out[:64] * ref, axis=1)
        return {
            "held_gib": round(hog_bytes / 2**30, 1),
            "gpu_total_gib": round(total / 2**30, 1),
            "first_batch": n,
            "batch_sizes_after_oom": tried,
            "rows_embedded": len(out),
            "cosine_vs_unconstrained_min": round(float(cos.min()), 6),
        }

    def umap(self) -> dict[str, Any]:
        from engine.maps import gpu_umap

        if not gpu_umap.cuml_installed():
            return {"skipped": "cuML is not installed (pip install -r requirements-gpu.txt)"}
        if not gpu_umap.gpu_present():
            return {"skipped": "no GPU for cuML"}
        from engine.maps.project import compute_projection
        from engine.params import ProjectionParams

        n, d = (5000, 32) if self.smoke else (1_000_000, 512)
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(50, d)).astype(np.float32)
        x = centres[rng.integers(0, 50, size=n)] + 0.3 * rng.normal(size=(n, d)).astype(np.float32)
        t = time.perf_counter()
        # the full fit, on the GPU
        coords = compute_projection(x, ProjectionParams("umap", seed=0, fit_sample=n))
        seconds = time.perf_counter() - t
        return {
            "n": n,
            "dim": d,
            "seconds": round(seconds, 2),
            "finite": bool(np.isfinite(coords).all()),
            "goal_seconds": 20,
        }


def random_minilm(source: Path, folder: Path) -> Path:
    """A sentence-transformers folder with all-MiniLM-L6-v2's architecture and tokenizer and
    random weights (speed does not depend on the weights; the real ones are 90 MB)."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    for p in source.rglob("*"):
        rel = p.relative_to(source)
        if p.is_file() and p.suffix != ".safetensors" and p.name != "README.md":
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, folder / rel)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(str(source))).save_pretrained(str(folder))
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 4)
    p.add_argument("--minilm-dir", type=Path, default=None, help="MiniLM config + tokenizer")
    p.add_argument("--only", default="", help="comma-separated parts (default: all)")
    args = p.parse_args()
    import torch

    device = "cpu" if args.cpu_smoke else ("cuda" if torch.cuda.is_available() else "")
    if not device:
        raise SystemExit("no CUDA GPU here: run with --cpu-smoke to check the script on a CPU")
    if args.cpu_smoke:
        os.environ[gpu_decode.ENV_MODE] = "on"  # the device pipeline, on CPU tensors
    minilm = args.minilm_dir
    if minilm is None:
        from engine.models.spec import minilm_package_dir

        minilm = minilm_package_dir()
    suite = Suite(args.cpu_smoke, device, args.workers)
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "model_only": suite.model_only,
        "precision": suite.precision,
        "files": suite.files,
        "text": (lambda: suite.text(minilm))
        if minilm
        else (lambda: {"skipped": "no MiniLM config/tokenizer folder (--minilm-dir)"}),
        "oom": suite.oom,
        "umap": suite.umap,
    }
    only = [s for s in args.only.split(",") if s]
    t0 = time.perf_counter()
    for name, fn in parts.items():
        if not only or name in only:
            suite.part(name, fn)
    model_only = suite.results.get("model_only", {}).get("images_per_s")
    e2e = suite.results.get("files", {}).get("end_to_end_device_decode_images_per_s")
    payload = {
        "benchmark": "gpu_suite",
        "cpu_smoke": args.cpu_smoke,
        "machine": machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "end_to_end_vs_model_only": round(e2e / model_only, 3) if model_only and e2e else None,
        "wall_s": round(time.perf_counter() - t0, 1),
        **suite.results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=float))
    print(json.dumps({k: v for k, v in payload.items() if k not in suite.results}))


if __name__ == "__main__":
    main()
