"""The GPU path on a real CUDA GPU: nvJPEG, CUDA streams, a real out-of-memory, bf16.

Skipped where no CUDA GPU is present (CI, this project's machines); run by
``benchmarks/gpu_suite.sh`` on a GPU box. The same logic on CPU tensors is in test_gpu_path.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import open_dataset
from engine.embed import gpu_decode
from engine.embed.local import embed_dataset
from engine.models import load_model
from engine.models.device import inference, run_with_oom_retry
from engine.store.cache import Cache
from tests.model_fixtures import tiny_open_clip_dir  # noqa: F401
from tests.test_gpu_path import _jpeg_bytes, _photo, mixed_folder  # noqa: F401

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_nvjpeg_decodes_as_the_cpu_decoder_does():
    blobs = [_jpeg_bytes(_photo(64 + 8 * i, 48, i)) for i in range(6)]
    gpu = gpu_decode.decode_jpegs(blobs, "cuda")
    cpu = gpu_decode.decode_jpegs(blobs, "cpu")
    for g, c in zip(gpu, cpu, strict=True):
        assert g.is_cuda and g.shape == c.shape
        diff = (g.cpu().int() - c.int()).abs()
        assert float(diff.float().mean()) < 1.5 and int(diff.max()) <= 16  # IDCTs differ a little


def test_device_pipeline_on_cuda_streams(mixed_folder, tiny_open_clip_dir):  # noqa: F811
    model = load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cuda")
    spec = gpu_decode.pixel_spec(model)
    ds = open_dataset(f"folder:{mixed_folder}")
    pipe = gpu_decode.DeviceImagePipeline(ds, spec, "cuda", workers=2)
    got = list(pipe.batches([(0, 5), (5, len(ds))]))
    assert all(b.ready is not None and b.pixels.is_cuda for b in got)  # made on the side stream
    pixels = torch.cat([b.pixels for b in got]).cpu()
    reference = torch.stack([model.preprocess_image(ds.load_image(i)) for i in range(len(ds))])
    cos = torch.nn.functional.cosine_similarity(pixels.flatten(1), reference.flatten(1))
    assert float(cos.min()) > 0.99 and pipe.pillow_fallbacks == 3


def test_embed_on_cuda_keys_precision_and_decoder(mixed_folder, tiny_open_clip_dir, tmp_path):  # noqa: F811
    spec = f"open_clip:local-dir:{tiny_open_clip_dir}"
    ds = open_dataset(f"folder:{mixed_folder}")
    gpu = embed_dataset(ds, load_model(spec, device="cuda"), cache=Cache(tmp_path))
    cpu = embed_dataset(ds, load_model(spec, device="cpu"), cache=Cache(tmp_path))
    assert gpu.key != cpu.key
    manifest = Cache(tmp_path).get("vectors", gpu.key).manifest
    assert manifest["decode"] == "device" and manifest["device"] == "cuda"
    cos = np.sum(np.load(gpu.path) * np.load(cpu.path), axis=1)
    assert float(cos.min()) > 0.99


def test_a_real_out_of_memory_halves_the_batch():
    free, _ = torch.cuda.mem_get_info()
    per_item = int(free * 0.4)  # 8 items need 3.2x the free memory, 2 items 0.8x
    sizes: list[int] = []

    def fn(chunk):
        block = torch.empty(len(chunk) * per_item, dtype=torch.uint8, device="cuda")
        sizes.append(len(chunk))
        del block
        return np.ones((len(chunk), 2), dtype=np.float32)

    resized: list[int] = []
    out = run_with_oom_retry(fn, list(range(8)), 8, on_resize=resized.append)
    assert out.shape == (8, 2)
    assert resized[:2] == [4, 2]  # 8 and 4 did not fit: torch raised a real OutOfMemoryError
    assert max(sizes) <= 2


def test_bf16_vectors_agree_with_fp32_on_cuda():
    model = load_model("open_clip:local-dir:models/shapes-clip", device="cuda")
    from engine.data.shapes import ShapesDataset

    ds = ShapesDataset(n=100, seed=5)
    x = torch.stack([model.preprocess_image(ds.load_image(i)) for i in range(64)]).cuda()
    with inference("cuda", "fp32"):
        fp32 = torch.nn.functional.normalize(model._model.encode_image(x).float(), dim=1)
    with inference("cuda", "bf16"):
        bf16 = torch.nn.functional.normalize(model._model.encode_image(x).float(), dim=1)
    assert float((fp32 * bf16).sum(dim=1).min()) >= 0.999
