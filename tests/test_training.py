"""The shipped shapes CLIPs load and work; training (``training/``) runs and is deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import REPO_ROOT
from engine.datasets.shapes import SHAPES

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
    from engine.datasets.shapes import open_shapes

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


def _train_tiny(out: Path, seed: int = 0, evaluate: bool = False, config: str = "tiny") -> dict:
    from training.train_clip import train

    return train(
        out=out,
        config=config,
        steps=4,
        batch_size=16,
        seed=seed,
        n_train=200,
        evaluate=evaluate,
        eval_n=100,
    )


def test_training_smoke(tmp_path: Path) -> None:
    import open_clip

    out = tmp_path / "tiny-clip"
    summary = _train_tiny(out, evaluate=True)
    assert summary["steps"] == 4 and summary["final_loss"] > 0
    assert "shape_acc_ensemble" in summary["eval"]["zero_shot"]
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


# "tiny" is a ViT; the shipped presets are ResNets (BatchNorm running stats included).
@pytest.mark.parametrize("config", ["tiny", "shapes-clip-small"])
def test_training_is_deterministic(tmp_path: Path, config: str) -> None:
    from safetensors.torch import load_file

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _train_tiny(a, seed=5, config=config)
    _train_tiny(b, seed=5, config=config)
    _train_tiny(c, seed=6, config=config)
    wa = load_file(a / "open_clip_model.safetensors")
    wb = load_file(b / "open_clip_model.safetensors")
    wc = load_file(c / "open_clip_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert wa[key].dtype == wb[key].dtype
        assert (wa[key] == wb[key]).all(), key  # bit for bit, not approximately
    assert any(not (wa[k] == wc[k]).all() for k in wa)


def test_engine_holds_no_training_loop() -> None:
    """Training lives in ``training/``; the engine never imports it and trains only the fusion
    heads (``engine/fusion.py``)."""
    offenders = []
    for path in sorted((REPO_ROOT / "engine").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(REPO_ROOT).as_posix()
        if ".backward(" in text and rel != "engine/fusion.py":
            offenders.append(f"{rel}: calls .backward()")
        if "from training" in text or "import training" in text:
            offenders.append(f"{rel}: imports training/")
    assert offenders == []
