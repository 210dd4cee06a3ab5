"""The shipped shapes CLIPs load and work; training (``training/``) runs and is deterministic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from engine.data.shapes import SHAPES
from engine.settings import REPO_ROOT

SHIPPED = ["shapes-clip", "shapes-clip-small"]
MAX_BYTES = 10 * 1024**2


def _model_dir(name: str) -> Path:
    path = REPO_ROOT / "models" / name
    assert path.is_dir(), f"{path} is missing: train it with python -m training.train_clip"
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_with_open_clip(name: str) -> None:
    import open_clip
    import torch

    path = _model_dir(name)
    files = {f.name for f in path.iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md"} <= files
    assert sum(f.stat().st_size for f in path.iterdir()) <= MAX_BYTES
    config = json.loads((path / "open_clip_config.json").read_text())
    assert {"model_cfg", "preprocess_cfg"} <= set(config)

    spec = f"local-dir:{path}"
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    tokenizer = open_clip.get_tokenizer(spec)
    model.eval()
    from engine.data.shapes import open_shapes

    ds = open_shapes(n=100, seed=4321)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(ds.load_image(0))]), normalize=True)
        txt = model.encode_text(tokenizer([ds.texts[0], "a red circle"]), normalize=True)
    dim = config["model_cfg"]["embed_dim"]
    assert img.shape == (1, dim) and txt.shape == (2, dim)
    assert torch.isfinite(img).all() and torch.isfinite(txt).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_zero_shot_beats_chance(name: str) -> None:
    from training.eval_clip import evaluate

    # A fresh held-out sample: a seed neither training nor the model card's evaluation used.
    # Loaded through engine.models.load_model: the path the app uses.
    metrics = evaluate(_model_dir(name), n=300, seed=31_337)
    chance = 1 / len(SHAPES)
    assert metrics["zero_shot"]["shape_acc_ensemble"] >= 3 * chance
    assert metrics["zero_shot"]["colour_acc_ensemble"] >= 3 * chance
    assert metrics["retrieval_t2i"]["r_at_10"] > 3 * metrics["chance"]["r_at_10"]


# Out-of-renderer accuracy of each shipped model, pinned a little under what its card reports
# (shape, colour: 98.5 / 100 % and 100 / 100 %). Issue #19's bar is 0.85 / 0.9.
HOLDOUT_MIN = {"shapes-clip": (0.95, 0.97), "shapes-clip-small": (0.95, 0.97)}


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_on_another_renderer(name: str) -> None:
    from training.eval_clip import evaluate_holdout

    card = json.loads((_model_dir(name) / "training.json").read_text())["eval_holdout"]
    metrics = evaluate_holdout(_model_dir(name))  # the model card's split
    # The card's figures are what this measures (same drawings, same prompts).
    assert metrics["shape_acc"] == pytest.approx(card["shape_acc"], abs=0.01)
    assert metrics["colour_acc"] == pytest.approx(card["colour_acc"], abs=0.01)
    shape_min, colour_min = HOLDOUT_MIN[name]
    # And on drawings of another seed, which no number in the card comes from.
    fresh = evaluate_holdout(_model_dir(name), n_per_class=30, seed=4242)
    assert metrics["colour_acc"] >= colour_min and fresh["colour_acc"] >= colour_min - 0.05
    assert metrics["shape_acc"] >= shape_min and fresh["shape_acc"] >= shape_min - 0.05


def _train_tiny(out: Path, seed: int = 0, evaluate: bool = False, config: str = "tiny") -> dict:
    from training.train_clip import train

    return train(
        out=out,
        config=config,
        steps=4,
        batch_size=16,
        seed=seed,
        n_train=200,
        n_scenes=40,
        evaluate=evaluate,
        eval_n=100,
    )


def test_training_smoke(tmp_path: Path) -> None:
    import open_clip

    out = tmp_path / "tiny-clip"
    summary = _train_tiny(out, evaluate=True)
    assert summary["steps"] == 4 and summary["final_loss"] > 0
    assert "shape_acc_ensemble" in summary["eval"]["zero_shot"]
    assert 0.0 <= summary["eval_holdout"]["shape_acc"] <= 1.0
    assert summary["n_scenes"] == 40 and "china.jpg" in summary["photos"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "another renderer" in card and "40 augmented scenes" in card
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "MODEL_CARD.md"):
        assert (out / name).is_file()
    # No staging folders are left behind next to the output.
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-clip"]
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tokens = open_clip.get_tokenizer(f"local-dir:{out}")(["a small red circle"])
    assert tokens.shape == (
        1,
        json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"][
            "context_length"
        ],
    )
    assert model.encode_text(tokens).shape[-1] == 32

    # Training again into the same folder replaces it whole.
    _train_tiny(out, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-clip"]


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "open_clip_model.safetensors")


def _same(wa: dict, wb: dict) -> bool:
    assert wa.keys() == wb.keys()
    # Bit for bit, not approximately.
    return all(wa[k].dtype == wb[k].dtype and (wa[k] == wb[k]).all() for k in wa)


# "tiny" and the shipped "shapes-clip-small" are ViTs; "shapes-clip" is a ResNet (BatchNorm
# running statistics included).
@pytest.mark.parametrize("config", ["tiny", "shapes-clip"])
def test_training_is_deterministic(tmp_path: Path, config: str) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _train_tiny(a, seed=5, config=config)
    _train_tiny(b, seed=5, config=config)
    _train_tiny(c, seed=6, config=config)
    assert _same(_weights(a), _weights(b))
    assert not _same(_weights(a), _weights(c))


def test_probing_during_training_leaves_the_weights_unchanged(tmp_path: Path) -> None:
    from training.train_clip import train

    kwargs = {"config": "tiny", "steps": 4, "batch_size": 16, "seed": 2, "n_train": 200}
    train(out=tmp_path / "plain", n_scenes=40, evaluate=False, **kwargs)
    train(out=tmp_path / "probed", n_scenes=40, evaluate=False, probe_every=2, **kwargs)
    assert _same(_weights(tmp_path / "plain"), _weights(tmp_path / "probed"))


def test_student_shares_the_teachers_text_tower_and_learns_its_own_image_tower(
    tmp_path: Path,
) -> None:
    """``--teacher``: the text tower and temperature are the teacher's, bit for bit, after
    training; the image tower (a ViT here, the teacher a ResNet, with feature-map hints) is
    trained; a teacher whose text tower differs, or hints between the wrong towers, are refused
    in one line and leave no folder behind."""
    import torch

    from training.train_clip import PRESETS, train

    tiny = PRESETS["tiny"]["model_cfg"]
    resnet = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16}
    resnet_cfg = json.dumps({"model_cfg": {**tiny, "vision_cfg": resnet}})
    kwargs = {"steps": 4, "batch_size": 16, "n_train": 200, "n_scenes": 0, "evaluate": False}
    teacher = tmp_path / "teacher"
    train(out=teacher, config=resnet_cfg, seed=3, **kwargs)

    summary = train(
        out=tmp_path / "student", config="tiny", teacher=teacher, hint_weight=1.0, **kwargs
    )
    assert summary["teacher"] == str(teacher) and summary["hint_weight"] == 1.0
    wt, ws = _weights(teacher), _weights(tmp_path / "student")
    text_keys = [k for k in ws if not k.startswith("visual.")]
    assert "logit_scale" in text_keys and all((ws[k] == wt[k]).all() for k in text_keys)
    assert "visual.conv1.weight" in ws and "visual.conv1.weight" in wt  # ViT vs ResNet stem
    assert ws["visual.conv1.weight"].shape != wt["visual.conv1.weight"].shape

    # Without hints the targets are computed once up front; mimetic start of the ViT.
    summary = train(
        out=tmp_path / "student2", config="tiny", teacher=teacher, vit_init="mimetic", **kwargs
    )
    assert summary["vit_init"] == "mimetic" and summary["final_loss"] > 0
    ws2 = _weights(tmp_path / "student2")
    assert all((ws2[k] == wt[k]).all() for k in text_keys)
    assert not torch.equal(ws2["visual.conv1.weight"], ws["visual.conv1.weight"])
    with pytest.raises(SystemExit, match="--vit-init must be one of"):
        train(out=tmp_path / "bad", config="tiny", vit_init="xavier", **kwargs)

    wider = json.loads(resnet_cfg)
    wider["model_cfg"]["text_cfg"]["width"] = 64
    with pytest.raises(SystemExit, match="text_cfg differs"):
        train(out=tmp_path / "bad", config=json.dumps(wider), teacher=teacher, **kwargs)
    with pytest.raises(SystemExit, match="needs a ViT student and a ResNet teacher"):
        train(out=tmp_path / "bad", config=resnet_cfg, teacher=teacher, hint_weight=1, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student", "student2", "teacher"]


def test_mimetic_init_starts_attention_near_identity_and_positions_as_sine_cosine() -> None:
    """``--vit-init mimetic``: each head's query-key product is close to a positive multiple of
    the identity, each layer's value-output product close to a negative one, and the position
    embedding is the 2-D sine-cosine table; a ResNet tower is refused in one line."""
    import torch
    from open_clip.model import CLIP
    from open_clip.pos_embed import get_2d_sincos_pos_embed

    from training.train_clip import PRESETS, _mimetic_init

    cfg = json.loads(json.dumps(PRESETS["tiny"]["model_cfg"]))
    cfg["vision_cfg"].update(width=64, layers=2, patch_size=16)
    cfg["text_cfg"]["vocab_size"] = 100
    visual = CLIP(**cfg).visual
    _mimetic_init(visual, seed=0)
    width, eye = 64, torch.eye(64, dtype=torch.bool)
    for block in visual.transformer.resblocks:
        w = block.attn.in_proj_weight.detach()
        head = width // block.attn.num_heads
        for h in range(block.attn.num_heads):
            rows = slice(h * head, (h + 1) * head)
            qk = w[rows].T @ w[width:][rows]
            # Rank-`head` part of 0.7 I + noise: a clearly positive diagonal, small elsewhere.
            assert qk[eye].mean() > 0.2 and qk[~eye].abs().mean() < 0.1
        vo = w[2 * width :].T @ block.attn.out_proj.weight.detach().T
        assert torch.allclose(vo[eye].mean(), torch.tensor(-0.4), atol=0.1)
        assert vo[~eye].abs().mean() < 0.1
    table = torch.from_numpy(get_2d_sincos_pos_embed(width, visual.grid_size[0], cls_token=True))
    assert torch.equal(visual.positional_embedding.detach(), table.float())
    assert visual.positional_embedding.requires_grad  # a start, not a frozen table

    resnet = {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 16}
    with pytest.raises(SystemExit, match="needs a ViT tower"):
        _mimetic_init(CLIP(**{**cfg, "vision_cfg": resnet}).visual, seed=0)


def test_teacher_targets_are_the_teachers_embeddings_of_plain_and_mirrored_images() -> None:
    """The distillation targets are computed once for the whole pool; each must equal the
    teacher's embedding of that image as the training step sees it (mirrored or not)."""
    import torch
    from open_clip.model import CLIP

    from training.train_clip import PRESETS, _teacher_targets

    cfg = json.loads(json.dumps(PRESETS["tiny"]["model_cfg"]))
    cfg["text_cfg"]["vocab_size"] = 100
    teacher = CLIP(**cfg).eval()
    pool = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    mean = std = torch.full((1, 3, 1, 1), 0.5)
    targets = _teacher_targets(teacher, pool, mean, std, "cpu")
    assert targets.shape == (5, 2, cfg["embed_dim"])
    images = (pool[3:4].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        plain = teacher.encode_image(images, normalize=True)[0]
        mirrored = teacher.encode_image(images.flip(-1), normalize=True)[0]
    assert torch.allclose(targets[3, 0], plain, atol=1e-5)
    assert torch.allclose(targets[3, 1], mirrored, atol=1e-5)
    assert not torch.allclose(plain, mirrored, atol=1e-3)


def test_recorded_command_leaves_out_flags_that_cannot_change_weights() -> None:
    from training.train_clip import _weight_args

    argv = ["--out", "m", "--scene-cache", "/tmp/s", "--probe-every=5", "--steps", "3"]
    assert _weight_args(argv) == ["--out", "m", "--steps", "3"]


# -- the augmented scenes and the second (evaluation-only) renderer -----------------------------
def test_scenes_are_deterministic_and_well_formed() -> None:
    from engine.data.shapes import COLOURS, SIZES
    from training.scenes import render_scene

    seen_shapes = set()
    for i in range(30):
        a, scene = render_scene(7, i)
        b, again = render_scene(7, i)
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        assert (a == b).all() and scene == again
        assert 0 <= scene.colour < len(COLOURS) and 0 <= scene.size < len(SIZES)
        seen_shapes.add(scene.shape)
        assert a.std() > 5  # something is drawn, not a blank canvas
    assert len(seen_shapes) >= 5
    assert not (render_scene(7, 0)[0] == render_scene(8, 0)[0]).all()


def test_outlined_shape_is_a_band_inside_the_filled_one() -> None:
    from training.scenes import _draw_mask

    filled = _draw_mask("square", 32, 32, 20, 0.0, 64, 4, None)
    band = _draw_mask("square", 32, 32, 20, 0.0, 64, 4, 3)
    assert band.sum() < 0.6 * filled.sum()
    assert (band <= filled + 1e-9).all()
    assert band[32, 32] == 0.0 and filled[32, 32] == 1.0  # the middle of an outline is empty


def test_holdout_renderer_is_balanced_and_never_used_by_training() -> None:
    from training import holdout_shapes

    images, shapes, colours = holdout_shapes.holdout_set(n_per_class=4, seed=3)
    assert len(images) == 36 and images[0].size == (96, 96)
    pairs = list(zip(shapes, colours, strict=True))
    assert all(pairs.count(p) == 4 for p in set(pairs)) and len(set(pairs)) == 9
    again = holdout_shapes.holdout_set(n_per_class=4, seed=3)[0]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again, strict=True)
    )
    # A red shape's pixels are red: the centre of a drawing has the palette's hue.
    centre = np.asarray(images[0])[48, 48].astype(int)
    assert centre[0] > 150 and centre[1] < 90 and centre[2] < 90
    # Only the evaluation imports it (training calls evaluation after the weights are final).
    importers = sorted(
        path.name
        for path in (REPO_ROOT / "training").glob("*.py")
        if re.search(r"import holdout_shapes|holdout_shapes import", path.read_text())
    )
    assert importers == ["eval_clip.py"]


def test_a_training_run_in_models_does_not_break_model_aliases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training writes its staging folder (``models/.NAME.tmp-*``, config first) next to the
    shipped models; importing ``engine.models`` meanwhile must skip it, not fail."""
    import engine.models
    import engine.settings
    from engine.models import spec

    for name in ("good-clip", ".good-clip.tmp-abc123"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "open_clip_config.json").write_text("{}")
    monkeypatch.setattr(engine.settings, "SHIPPED_MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(spec, "_aliases", {})
    engine.models._register_shipped_models()
    assert list(spec.aliases()) == ["demo:good-clip"]
