"""Pure metrics (``engine.analysis.metrics``), each checked on cases small enough to work out by
hand."""

from __future__ import annotations

import numpy as np
import pytest

import engine.analysis.metrics as metrics
from engine.analysis.metrics import (
    confusion_matrix,
    disagreements,
    knn_accuracy,
    knn_overlap,
    knn_predict,
    linear_cka,
    linear_probe_accuracy,
    mean_knn_overlap,
    per_class_accuracy,
)
from engine.errors import ParallaxError


def _angles(degrees: list[float]) -> np.ndarray:
    rad = np.deg2rad(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def _clusters(n: int = 60, d: int = 8, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, d), np.float32)
    centres[0, 0] = centres[1, 1] = 10.0
    y = np.arange(n) % 2
    x = centres[y] + rng.normal(size=(n, d)).astype(np.float32)
    return x, ["a" if v == 0 else "b" for v in y]


# -- CKA and kNN overlap ----------------------------------------------------------------------
def test_identical_embeddings_have_cka_one_and_full_overlap() -> None:
    x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    overlap = knn_overlap(x, x, k=10)
    assert overlap.shape == (200,)
    assert np.all(overlap == 1.0)
    assert mean_knn_overlap(x, x, k=10) == 1.0


def test_cka_invariant_to_rotation_and_isotropic_scaling() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12))
    z = np.tanh(x @ rng.normal(size=(12, 20))) + 0.5 * rng.normal(size=(300, 20))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    rotated_scaled = 7.5 * x @ q
    assert linear_cka(x, rotated_scaled) == pytest.approx(1.0, abs=1e-5)
    base = linear_cka(x, z)
    assert 0.05 < base < 0.95  # a genuinely partial similarity, so the check below means something
    assert linear_cka(rotated_scaled, z) == pytest.approx(base, abs=1e-5)
    assert linear_cka(z, x) == pytest.approx(base, abs=1e-6)  # symmetric


def test_cka_matches_the_sample_space_formula() -> None:
    # HSIC form on centred Gram matrices: the feature-space shortcut must give the same number.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 6)), rng.normal(size=(50, 9))
    h = np.eye(50) - 1.0 / 50
    kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
    expected = np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky))
    assert linear_cka(x, y) == pytest.approx(expected, abs=1e-6)


def test_cka_blocks_give_the_same_answer_as_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(101, 5)), rng.normal(size=(101, 4))
    whole = linear_cka(x, y)
    monkeypatch.setattr(metrics, "ROW_CHUNK", 16)
    assert linear_cka(x, y) == pytest.approx(whole, abs=1e-6)


def test_permuted_rows_have_low_neighbour_overlap() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    shuffled = x[rng.permutation(300)]
    # Random neighbour sets of 10 among 299 share ~0.33 points on average.
    assert mean_knn_overlap(x, shuffled, k=10) < 0.1
    assert linear_cka(x, shuffled) < 0.2


def test_knn_overlap_hand_case() -> None:
    # x at 0, 10, 25, 45 degrees; y moves item 2 to 45 and item 3 to 25.
    # k=1 neighbours: x -> [1, 0, 1, 2]; y -> [1, 0, 3, 1].
    x = _angles([0, 10, 25, 45])
    y = _angles([0, 10, 45, 25])
    assert knn_overlap(x, y, k=1).tolist() == [1.0, 1.0, 0.0, 0.0]
    # k=2: x -> {1,2}, {0,2}, {1,3}, {2,1}; y -> {1,3}, {0,3}, {3,1}, {1,2}.
    assert knn_overlap(x, y, k=2).tolist() == [0.5, 0.5, 1.0, 1.0]


# -- kNN accuracy -----------------------------------------------------------------------------
def test_knn_accuracy_on_well_separated_clusters_is_one() -> None:
    x, y = _clusters()
    assert knn_accuracy(x, y, k=10) == 1.0


def test_knn_accuracy_hand_built_six_points() -> None:
    # Angles (deg) and labels; cosine neighbours follow angular distance.
    x = _angles([0, 12, 20, 33, 90, 100])
    y = ["A", "A", "B", "A", "B", "B"]
    # k=1: 0->1 A ok, 1->2 B no, 2->1 A no, 3->2 B no, 4->5 B ok, 5->4 B ok.
    assert knn_accuracy(x, y, k=1) == pytest.approx(3 / 6)
    # k=2 (1-1 ties go to the nearest): [A, B, A, B, B, B].
    assert knn_predict(x, y, k=2).tolist() == ["A", "B", "A", "B", "B", "B"]
    assert knn_accuracy(x, y, k=2) == pytest.approx(3 / 6)
    # k=3: 2's neighbours 1,3,0 are all A; everything else votes its own label.
    assert knn_predict(x, y, k=3).tolist() == ["A", "A", "A", "A", "B", "B"]
    assert knn_accuracy(x, y, k=3) == pytest.approx(5 / 6)


def test_knn_k_larger_than_dataset_is_clamped() -> None:
    x = _angles([0, 5, 90])
    assert knn_predict(x, ["a", "a", "b"], k=50).tolist() == ["a", "a", "a"]


# -- confusion, per-class, probe, disagreements ------------------------------------------------
def test_known_confusion_matrix_and_per_class_accuracy() -> None:
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "b", "b", "b", "a"]
    cm = confusion_matrix(y_true, y_pred, ["a", "b", "c"])
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert per_class_accuracy(y_true, y_pred, ["a", "b", "c", "d"]) == {
        "a": 0.5,
        "b": 1.0,
        "c": 0.0,
        "d": None,
    }


def test_linear_probe_is_deterministic_under_seed() -> None:
    x, y = _clusters(n=80)
    first = linear_probe_accuracy(x, y, test_size=0.25, seed=3)
    again = linear_probe_accuracy(x, y, test_size=0.25, seed=3)
    other = linear_probe_accuracy(x, y, test_size=0.25, seed=4)
    assert first == again
    assert first["accuracy"] == 1.0
    assert first["n_test"] == 20 and first["n_train"] == 60
    assert first["classes"] == ["a", "b"]
    # Stratified: both classes equally represented in the test split.
    test_labels = [y[i] for i in first["test_indices"]]
    assert test_labels.count("a") == test_labels.count("b") == 10
    assert other["test_indices"] != first["test_indices"]
    assert np.asarray(first["confusion"]).sum() == 20


def test_linear_probe_needs_two_classes() -> None:
    with pytest.raises(ParallaxError):
        linear_probe_accuracy(np.ones((10, 3)), ["a"] * 10)


def test_disagreement_table() -> None:
    table = disagreements(
        {"m1": ["a", "b", "a", "c"], "m2": ["a", "a", "b", "c"]},
        y_true=["a", "b", "b", "a"],
        ids=["i0", "i1", "i2", "i3"],
    )
    assert list(table.columns) == ["id", "label", "m1", "m2", "n_correct"]
    # i0 and i3: the models agree, so they are not listed; i1 and i2 each have one correct.
    assert table["id"].tolist() == ["i1", "i2"]
    assert table["n_correct"].tolist() == [1, 1]
    full = disagreements(
        {"m1": ["a", "b"], "m2": ["a", "a"]}, ["b", "b"], ["x", "y"], only_disagreements=False
    )
    assert full["id"].tolist() == ["x", "y"]  # fewest correct first
    assert full["n_correct"].tolist() == [0, 1]
