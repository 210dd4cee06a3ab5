"""engine.analysis.item_neighbours: one item's neighbours under every model, and their overlap."""

from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.item_neighbours import item_neighbours, nearest_rows
from engine.errors import ParallaxError


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_nearest_rows_by_cosine_excluding_the_item_ties_by_row() -> None:
    v = unit(np.array([[1, 0], [1, 0.1], [1, 0.1], [0, 1], [-1, 0]], dtype=np.float32))
    rows, cos = nearest_rows(v, 0, 3)
    assert rows.tolist() == [1, 2, 3]  # rows 1 and 2 tie: the lower row first
    assert cos[0] == pytest.approx(cos[1]) and cos[2] == pytest.approx(0.0, abs=1e-6)
    # unnormalised rows give the same order (cosines, not dot products)
    rows2, _ = nearest_rows(v * np.array([[3], [1], [5], [2], [1]], dtype=np.float32), 0, 3)
    assert rows2.tolist() == [1, 2, 3]
    with pytest.raises(ParallaxError, match="outside the dataset"):
        nearest_rows(v, 5, 2)


def test_brute_force_agrees_on_random_vectors() -> None:
    rng = np.random.default_rng(0)
    v = unit(rng.normal(size=(500, 16)))
    rows, cos = nearest_rows(v, 42, 10)
    sims = v @ v[42]
    sims[42] = -np.inf
    assert rows.tolist() == np.argsort(-sims, kind="stable")[:10].tolist()
    np.testing.assert_allclose(cos, sims[rows], rtol=1e-5)


def test_overlap_between_models_and_shared_by_all() -> None:
    rng = np.random.default_rng(1)
    a = unit(rng.normal(size=(200, 8)))
    b = a.copy()  # same space: same neighbours
    c = unit(rng.normal(size=(200, 8)))  # unrelated space
    out = item_neighbours({"a": a, "b": b, "c": c}, row=7, k=5)
    assert [m.model for m in out.models] == ["a", "b", "c"]
    assert out.models[0].rows == out.models[1].rows and len(out.models[2].rows) == 5
    assert out.overlap[("a", "b")] == 5
    expected = len(set(out.models[0].rows) & set(out.models[2].rows))
    assert out.overlap[("a", "c")] == expected == out.overlap[("b", "c")]
    names, matrix = out.overlap_matrix()
    assert names == ["a", "b", "c"] and matrix.tolist()[0] == [5, 5, expected]
    assert set(out.shared_by_all) == set(out.models[0].rows) & set(out.models[2].rows)
    assert out.to_json()["overlap"][0] == {"a": "a", "b": "b", "shared": 5}


def test_bad_requests_are_one_line() -> None:
    v = unit(np.eye(4, dtype=np.float32))
    with pytest.raises(ParallaxError, match="nothing is embedded"):
        item_neighbours({}, 0)
    with pytest.raises(ParallaxError, match="different row counts"):
        item_neighbours({"a": v, "b": v[:3]}, 0)
    with pytest.raises(ParallaxError, match="k must be"):
        item_neighbours({"a": v}, 0, k=0)
    assert item_neighbours({"a": v}, 0, k=10).k == 3  # at most the other rows
