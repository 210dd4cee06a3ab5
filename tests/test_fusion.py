"""Fusion heads: each modality holds half of the label, so only fusion can get it right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.analysis.fusion import (
    SIDECAR_FILE,
    TrainConfig,
    load_head,
    predict_with_head,
    save_head,
    train_heads,
    train_heads_for_dataset,
)
from engine.errors import CacheError, ParallaxError
from engine.store.cache import Cache
from tests.fakes import ArrayImageDataset, MeanColourModel

FAST = TrainConfig(hidden=64, max_epochs=40, patience=5, lr=3e-3)


def half_signal(n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Label = (a, b) with a, b in 0..3: image vectors encode a only, text vectors b only."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 4, n), rng.integers(0, 4, n)

    def encode(code: np.ndarray, dim: int) -> np.ndarray:
        x = np.eye(dim, dtype=np.float32)[code] + 0.15 * rng.normal(size=(n, dim))
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))  # hide the one-hot axes
        x = x @ q
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return encode(a, 12), encode(b, 10), [f"{i}-{j}" for i, j in zip(a, b, strict=True)]


@pytest.fixture(scope="module")
def trained() -> dict:
    xi, xt, y = half_signal()
    return train_heads(xi, xt, y, seed=0, config=FAST)


def test_fusion_beats_each_single_modality(trained: dict) -> None:
    acc = {v: r.accuracy for v, r in trained.items()}
    # Each single side can at best pick the right quarter of 16 classes: ~0.25.
    assert acc["image"] < 0.45 and acc["text"] < 0.45, acc
    for fused in ("concat", "gated"):
        assert acc[fused] > 0.85, acc
        assert acc[fused] > max(acc["image"], acc["text"]) + 0.4, acc
    for r in trained.values():
        assert len(r.classes) == 16 and 1 <= r.best_epoch <= r.epochs <= FAST.max_epochs
    assert 0.0 < trained["gated"].head.meta["mean_gate"] < 1.0


def test_training_is_deterministic_under_seed(trained: dict) -> None:
    xi, xt, y = half_signal()
    again = train_heads(xi, xt, y, variants=("gated",), seed=0, config=FAST)["gated"]
    first = trained["gated"]
    assert again.accuracy == first.accuracy and again.epochs == first.epochs
    for name, tensor in first.head.state.items():
        assert np.array_equal(tensor.numpy(), again.head.state[name].numpy()), name


def test_progress_reports_every_epoch() -> None:
    xi, _, y = half_signal(n=200)
    seen = []
    res = train_heads(xi, None, y, variants=("image",), config=FAST, progress=seen.append)
    epochs = [p for p in seen if p.stage == "train image head"]
    assert len(epochs) == res["image"].epochs + 1  # one per epoch, plus the final 'done'
    assert epochs[-1].done == epochs[-1].total


def test_save_load_round_trip_gives_identical_predictions(trained: dict, tmp_path: Path) -> None:
    xi, xt, _ = half_signal(n=50, seed=9)
    for variant, res in trained.items():
        folder = save_head(res.head, tmp_path / variant)
        assert sorted(p.name for p in folder.iterdir()) == ["head.json", "head.safetensors"]
        loaded = load_head(folder)
        assert loaded.classes == res.classes and loaded.variant == variant
        before = predict_with_head(res.head, xi, xt)
        after = predict_with_head(loaded, xi, xt)
        assert before.shape == (50, 16)
        np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-6)
        assert np.array_equal(before, after)
    # A single-modality head does not need the other side; a single vector works.
    one = predict_with_head(trained["image"].head, xi[0], None)
    assert one.shape == (1, 16)


def test_load_rejects_mismatched_or_missing_heads(trained: dict, tmp_path: Path) -> None:
    folder = save_head(trained["concat"].head, tmp_path / "h")
    side = json.loads((folder / SIDECAR_FILE).read_text())
    side["hidden"] = 7
    (folder / SIDECAR_FILE).write_text(json.dumps(side))
    with pytest.raises(CacheError):
        load_head(folder)
    with pytest.raises(CacheError):
        load_head(tmp_path / "nothing-here")


def test_predict_with_head_checks_inputs(trained: dict) -> None:
    with pytest.raises(ParallaxError):
        predict_with_head(trained["gated"].head, np.zeros((1, 12)), None)
    with pytest.raises(ParallaxError):
        predict_with_head(trained["image"].head, np.zeros((1, 5)), None)


def test_train_heads_validates() -> None:
    xi, xt, y = half_signal(n=100)
    with pytest.raises(ParallaxError):
        train_heads(xi, None, y, variants=("concat",))
    with pytest.raises(ParallaxError):
        train_heads(xi, xt, y, variants=("bogus",))
    with pytest.raises(ParallaxError):
        train_heads(xi, xt, ["same"] * 100)


def test_train_heads_for_dataset_saves_and_reuses(cache_root: Path) -> None:
    ds = ArrayImageDataset(90, seed=3)
    model = MeanColourModel(dim=8, version="fusion")
    cache = Cache(cache_root)
    first = train_heads_for_dataset(
        ds, model, model, cache=cache, variants=("image", "concat"), config=FAST
    )
    assert list(first) == ["image", "concat"]
    for res in first.values():
        assert not res.cached and res.path is not None and res.path.parent == cache_root / "heads"
        assert (res.path / "head.safetensors").is_file()
        assert res.head.meta["dataset"] == ds.spec
    assert first["image"].head.meta["text_model"] is None
    again = train_heads_for_dataset(
        ds, model, model, cache=cache, variants=("concat", "image"), config=FAST
    )
    assert list(again) == ["concat", "image"]
    for v in ("image", "concat"):
        assert again[v].cached and again[v].path == first[v].path
        assert again[v].accuracy == first[v].accuracy


def test_train_heads_for_dataset_needs_texts(cache_root: Path) -> None:
    ds = ArrayImageDataset(20, texts=False)
    model = MeanColourModel(dim=8)
    with pytest.raises(ParallaxError):
        train_heads_for_dataset(ds, model, model, cache=Cache(cache_root))


# -- CLI, through the real demo dataset and baseline models ---------------------------------------
def _require_baselines() -> None:
    models = pytest.importorskip("engine.models")
    try:
        models.load_model("baseline:pixels")
        models.load_model("baseline:text")
    except (AttributeError, ParallaxError) as exc:
        pytest.skip(f"baseline models unavailable: {exc}")


def test_cli_train_head_on_shapes_with_baselines(
    cache_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _require_baselines()
    from engine.cli import main

    argv = ["train-head", "--dataset", "demo:shapes?n=300&seed=1"]
    argv += ["--image-model", "baseline:pixels", "--text-model", "baseline:text"]
    argv += ["--variants", "text", "concat", "--epochs", "30", "--hidden", "64"]
    argv += ["--json", "--cache-dir", str(cache_root)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert set(payload["heads"]) == {"text", "concat"}
    for head in payload["heads"].values():
        assert 0.0 <= head["accuracy"] <= 1.0 and not head["cached"]
        assert Path(head["path"], "head.safetensors").is_file()
    # Captions name the shape, so the text head reads the label off almost every caption.
    assert payload["heads"]["text"]["accuracy"] > 0.8
    assert "train concat head" in captured.err
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert all(h["cached"] for h in again["heads"].values())


def test_cli_train_head_rejects_modality(cache_root: Path, capsys: pytest.CaptureFixture[str]):
    from engine.cli import main

    argv = ["train-head", "--dataset", "demo:shapes", "--image-model", "a", "--text-model", "b"]
    assert main([*argv, "--modality", "image", "--cache-dir", str(cache_root)]) == 2
    assert "--modality does not apply" in capsys.readouterr().err
