"""The GPU path's logic, run on the CPU: device decode with device="cpu" tensors (torchvision
decodes JPEG on the CPU too), the Pillow fallback, the prefetch scheduler, precision in the cache
key, OOM back-off on tensors, bf16 vs fp32 agreement under CPU autocast.

What needs a real GPU (nvJPEG itself, CUDA streams, real out-of-memory, throughput) is in
``benchmarks/gpu_suite.sh``.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

from engine.data import open_dataset
from engine.embed import gpu_decode
from engine.embed.local import embed_dataset
from engine.errors import ParallaxError
from engine.models import load_model
from engine.models.device import compute_material, inference, precision, run_with_oom_retry
from engine.params import EmbedParams
from engine.store.cache import Cache
from tests.model_fixtures import PREPROCESS_CFG, tiny_open_clip_dir  # noqa: F401

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """A smooth colour image (JPEG-friendly, so decoders agree closely)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92, **kw)
    return buf.getvalue()


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """JPEGs of several sizes (one group of equal sizes), a PNG, a greyscale and a progressive
    JPEG, and an EXIF-rotated one: everything the pipeline has to route."""
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(4):
        (root / "a" / f"same{i}.jpg").write_bytes(_jpeg_bytes(_photo(48, 40, i)))
    (root / "a" / "tall.jpg").write_bytes(_jpeg_bytes(_photo(30, 70, 9)))
    (root / "a" / "tiny.jpg").write_bytes(_jpeg_bytes(_photo(20, 20, 10)))
    _photo(50, 45, 11).save(root / "b" / "pic.png")
    (root / "b" / "grey.jpg").write_bytes(_jpeg_bytes(_photo(40, 40, 12).convert("L")))
    (root / "b" / "prog.jpg").write_bytes(_jpeg_bytes(_photo(44, 36, 13), progressive=True))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    (root / "b" / "rotated.jpg").write_bytes(_jpeg_bytes(_photo(36, 52, 14), exif=exif))
    return root


# -- routing -----------------------------------------------------------------------------------
def test_only_plain_baseline_jpegs_go_to_nvjpeg():
    im = _photo(32, 24, 0)
    assert gpu_decode.nvjpeg_readable(_jpeg_bytes(im))
    assert gpu_decode.nvjpeg_readable(_jpeg_bytes(im.convert("L")))
    assert not gpu_decode.nvjpeg_readable(_jpeg_bytes(im, progressive=True))
    assert not gpu_decode.nvjpeg_readable(_jpeg_bytes(im.convert("CMYK")))
    exif = Image.Exif()
    exif[0x0112] = 3
    assert not gpu_decode.nvjpeg_readable(_jpeg_bytes(im, exif=exif))
    png = io.BytesIO()
    im.save(png, format="PNG")
    assert not gpu_decode.nvjpeg_readable(png.getvalue())
    assert not gpu_decode.nvjpeg_readable(b"\xff\xd8\xff" + b"garbage")


def test_a_bad_file_in_a_batch_only_fails_itself():
    good = _jpeg_bytes(_photo(16, 16, 1))
    bad = b"\xff\xd8\xff\xe0" + b"\x00" * 64
    out = gpu_decode.decode_jpegs([good, bad, good], "cpu")
    assert out[1] is None
    assert [tuple(t.shape) for t in (out[0], out[2])] == [(3, 16, 16), (3, 16, 16)]


def test_pixel_spec_refuses_what_it_cannot_repeat():
    spec = gpu_decode.PixelSpec.from_open_clip({**PREPROCESS_CFG, "size": (32, 32)})
    assert spec is not None and spec.size == 32 and spec.interpolation == "bicubic"
    assert gpu_decode.PixelSpec.from_open_clip({**PREPROCESS_CFG, "size": (32, 48)}) is None
    assert gpu_decode.PixelSpec.from_open_clip({**PREPROCESS_CFG, "resize_mode": "longest"}) is None
    assert gpu_decode.PixelSpec.from_open_clip({**PREPROCESS_CFG, "interpolation": "x"}) is None


# -- the pipeline on CPU tensors ------------------------------------------------------------------
def test_device_pipeline_matches_open_clips_pillow_transform(mixed_folder, tiny_open_clip_dir):  # noqa: F811
    model = load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cpu")
    spec = gpu_decode.pixel_spec(model)
    assert spec is not None and spec.size == PREPROCESS_CFG["size"]
    ds = open_dataset(f"folder:{mixed_folder}")
    pipe = gpu_decode.DeviceImagePipeline(ds, spec, "cpu", workers=2)
    spans = [(0, 4), (4, 8), (8, len(ds))]
    got = list(pipe.batches(spans))
    assert [b.span for b in got] == spans
    pixels = torch.cat([b.pixels for b in got])
    assert pixels.shape == (len(ds), 3, spec.size, spec.size) and not any(b.failures for b in got)
    # PNG, progressive and EXIF-rotated files took the Pillow decoder; the rest nvJPEG's route.
    assert pipe.pillow_fallbacks == 3
    reference = torch.stack([model.preprocess_image(ds.load_image(i)) for i in range(len(ds))])
    # The rotated file is upright in both (Pillow applied EXIF), so every image matches closely:
    # only resampling kernels and JPEG IDCT differ.
    diff = (pixels - reference).abs().mean(dim=(1, 2, 3))
    assert float(diff.max()) < 0.08, diff
    cos = torch.nn.functional.cosine_similarity(pixels.flatten(1), reference.flatten(1))
    assert float(cos.min()) > 0.99


def test_changed_file_is_refused_not_decoded(mixed_folder, tiny_open_clip_dir):  # noqa: F811
    ds = open_dataset(f"folder:{mixed_folder}")
    i = ds.ids.index("a/same0.jpg")
    (mixed_folder / "a" / "same0.jpg").write_bytes(_jpeg_bytes(_photo(48, 40, 99)))
    spec = gpu_decode.PixelSpec.from_open_clip(PREPROCESS_CFG)
    pipe = gpu_decode.DeviceImagePipeline(ds, spec, "cpu", workers=1)
    (batch,) = list(pipe.batches([(0, len(ds))]))
    assert "changed since the folder was opened" in batch.failures[i]
    assert i not in batch.ok and len(batch.ok) == len(ds) - 1 == len(batch.pixels)


def test_embed_with_device_decode_has_its_own_key_and_agrees(
    mixed_folder,
    tiny_open_clip_dir,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    spec = f"open_clip:local-dir:{tiny_open_clip_dir}"
    model = load_model(spec, device="cpu")
    ds = open_dataset(f"folder:{mixed_folder}")
    cache = Cache(tmp_path / "cache")
    monkeypatch.setenv(gpu_decode.ENV_MODE, "off")
    assert not gpu_decode.used_for(model)  # the CPU default: Pillow, as before
    pillow = embed_dataset(ds, model, cache=cache, batch_size=4)
    monkeypatch.setenv(gpu_decode.ENV_MODE, "on")
    assert gpu_decode.used_for(model)
    device = embed_dataset(ds, model, cache=cache, batch_size=4)
    assert device.key != pillow.key and not device.cached
    assert cache.get("vectors", device.key).manifest["decode"] == "device"
    a, b = np.load(pillow.path), np.load(device.path)
    assert a.shape == b.shape == (len(ds), model.dim)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.99  # unit rows: the dot is the cosine
    monkeypatch.setenv(gpu_decode.ENV_MODE, "auto")
    assert not gpu_decode.used_for(model)  # auto = CUDA only


# -- scheduler ---------------------------------------------------------------------------------
def test_prefetch_prepares_the_next_item_while_the_consumer_works():
    started = [threading.Event() for _ in range(6)]
    produced: list[int] = []

    def produce(i: int) -> int:
        started[i].set()
        produced.append(i)
        return i * 10

    gen = gpu_decode.prefetch(produce, range(6), depth=1)
    out = []
    for k, value in enumerate(gen):
        out.append(value)
        if k + 1 < 6:
            # While the consumer holds item k, item k+1 is already being made.
            assert started[k + 1].wait(timeout=10)
        # ...but never more than depth + 1 ahead (one queued, one being made).
        assert len(produced) <= k + 3
    assert out == [0, 10, 20, 30, 40, 50]


def test_prefetch_raises_at_the_failing_item_and_stops_when_closed():
    def produce(i: int) -> int:
        if i == 2:
            raise ValueError("item 2 is broken")
        return i

    got = []
    with pytest.raises(ValueError, match="item 2"):
        for v in gpu_decode.prefetch(produce, range(5), depth=2):
            got.append(v)
    assert got == [0, 1]

    made: list[int] = []

    def slow(i: int) -> int:
        made.append(i)
        time.sleep(0.01)
        return i

    gen = gpu_decode.prefetch(slow, range(1000), depth=2)
    assert next(gen) == 0
    gen.close()  # joins the producer
    assert len(made) < 10


# -- precision, key, OOM ------------------------------------------------------------------------
def test_precision_is_in_the_key_and_cpu_keys_are_unchanged(monkeypatch):
    assert precision("cpu") == "fp32" and compute_material("cpu") == {}
    monkeypatch.setenv("PARALLAX_PRECISION", "bf16")
    assert precision("cuda") == "bf16"
    assert compute_material("cuda", gpu_decode.DECODE_KEY) == {
        "precision": "bf16",
        "decode": gpu_decode.DECODE_KEY,
    }
    monkeypatch.setenv("PARALLAX_PRECISION", "fp32")
    assert compute_material("cuda") == {}
    plain = EmbedParams.vectors_key("fp", "id", "image")
    assert EmbedParams.vectors_key("fp", "id", "image", {}) == plain
    bf16 = EmbedParams.vectors_key("fp", "id", "image", {"precision": "bf16"})
    fp16 = EmbedParams.vectors_key("fp", "id", "image", {"precision": "fp16"})
    assert len({plain, bf16, fp16}) == 3


def test_oom_back_off_slices_a_device_tensor():
    sizes: list[int] = []

    def fn(chunk):
        assert isinstance(chunk, torch.Tensor)  # sliced, not split into a list of rows
        if len(chunk) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        sizes.append(len(chunk))
        return chunk.numpy() * 2

    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    resized: list[int] = []
    out = run_with_oom_retry(fn, x, 16, on_resize=resized.append)
    np.testing.assert_array_equal(out, x.numpy() * 2)
    assert resized == [8, 4, 2] and max(sizes) == 2


def test_bf16_autocast_vectors_agree_with_fp32():
    model = load_model("open_clip:local-dir:models/shapes-clip", device="cpu")
    from engine.data.shapes import ShapesDataset

    ds = ShapesDataset(n=100, seed=3)
    x = torch.stack([model.preprocess_image(ds.load_image(i)) for i in range(16)])
    net = model._model
    with inference("cpu"):
        fp32 = torch.nn.functional.normalize(net.encode_image(x).float(), dim=1)
    try:
        with inference("cpu", "bf16"):
            bf16 = torch.nn.functional.normalize(net.encode_image(x).float(), dim=1)
    except RuntimeError as exc:  # a CPU build without bf16 kernels
        pytest.skip(f"CPU autocast bf16 unavailable: {exc}")
    assert not torch.equal(fp32, bf16)  # autocast did run in bf16
    cos = (fp32 * bf16).sum(dim=1)
    assert float(cos.min()) >= 0.999, cos


# -- GPU UMAP (cuML stood in for by a recording fake) --------------------------------------------
class _FakeCumlUMAP:
    calls: ClassVar[list[dict]] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def fit_transform(self, x):
        _FakeCumlUMAP.calls.append({**self.kwargs, "rows": len(x)})
        return np.asarray(x[:, :2] * 10.0, dtype=np.float64)


def test_cuml_takes_the_fit_and_the_sample_path_stays(monkeypatch):
    import sys
    import types

    from engine.maps import gpu_umap
    from engine.maps.project import compute_projection
    from engine.params import ProjectionParams

    cuml = types.ModuleType("cuml")
    manifold = types.ModuleType("cuml.manifold")
    manifold.UMAP = _FakeCumlUMAP
    cuml.manifold = manifold
    monkeypatch.setitem(sys.modules, "cuml", cuml)
    monkeypatch.setitem(sys.modules, "cuml.manifold", manifold)
    monkeypatch.setattr(gpu_umap, "cuml_installed", lambda: True)
    monkeypatch.setattr(gpu_umap, "gpu_present", lambda: True)
    _FakeCumlUMAP.calls = []

    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    monkeypatch.setenv(gpu_umap.ENV, "auto")
    params = ProjectionParams("umap", seed=7, n_neighbors=5, min_dist=0.2, fit_sample=100)
    out = compute_projection(x, params)
    (call,) = _FakeCumlUMAP.calls  # one fit, of the seeded 100-point sample only
    assert call["rows"] == 100 and call["random_state"] == 7 and call["metric"] == "cosine"
    assert call["n_neighbors"] == 5 and call["min_dist"] == 0.2
    assert out.shape == (300, 2) and np.isfinite(out).all()
    sample = np.sort(np.random.default_rng(7).choice(300, size=100, replace=False))
    xn = x[sample] / np.linalg.norm(x[sample], axis=1, keepdims=True)
    np.testing.assert_allclose(out[sample], xn[:, :2] * 10.0, rtol=1e-5)  # the fit's output

    monkeypatch.setenv(gpu_umap.ENV, "off")
    assert not gpu_umap.enabled()
    monkeypatch.setattr(gpu_umap, "cuml_installed", lambda: False)
    monkeypatch.setenv(gpu_umap.ENV, "on")
    with pytest.raises(ParallaxError, match=r"requirements-gpu\.txt"):
        gpu_umap.enabled()
    monkeypatch.setenv(gpu_umap.ENV, "auto")
    assert not gpu_umap.enabled()  # no cuML: the CPU layout, the default everywhere
