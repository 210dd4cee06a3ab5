"""engine.maps.umap_layout: UMAP's fuzzy graph and layout in NumPy, checked against umap-learn."""

from __future__ import annotations

import numpy as np
import pytest

from engine.maps.project import knn_graph, map_quality
from engine.maps.umap_layout import (
    LayoutParams,
    ab_params,
    fuzzy_graph,
    smooth_knn_dist,
    umap_layout,
)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def digits() -> np.ndarray:
    from sklearn.datasets import load_digits  # shipped with scikit-learn: no download

    return unit(load_digits().data)


def blobs(n: int = 600, d: int = 16, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(size=(k, d)) * 10
    return unit(centres[labels] + rng.normal(size=(n, d))), labels


def test_bandwidths_hit_umaps_target_membership_sum():
    x, _ = blobs(300)
    _, dists = knn_graph(x, 15)
    sigma, rho = smooth_knn_dist(dists, 15)
    # each point's memberships to its neighbours sum to log2(k), as UMAP's bisection aims for
    psum = np.exp(-np.maximum(dists[:, 1:] - rho[:, None], 0.0) / sigma[:, None]).sum(axis=1)
    np.testing.assert_allclose(psum, np.log2(15), atol=1e-3)
    assert (rho > 0).all() and np.allclose(rho, dists[:, 1])


def test_fuzzy_graph_is_a_symmetric_fuzzy_union():
    x, _ = blobs(200)
    idx, dists = knn_graph(x, 10)
    g = fuzzy_graph(idx, dists).tocsr()
    assert abs(g - g.T).max() < 1e-6
    assert g.data.min() > 0 and g.data.max() <= 1.0 + 1e-6
    assert g.diagonal().max() == 0  # no self loops
    # each point's nearest neighbour gets membership 1 (distance == rho)
    assert np.allclose(g[np.arange(200), idx[:, 1]].A1, 1.0)


def test_ab_params_match_umaps_published_values():
    a, b = ab_params(0.1, 1.0)
    assert a == pytest.approx(1.577, abs=0.01) and b == pytest.approx(0.895, abs=0.01)


def test_layout_is_deterministic_under_a_seed():
    x, _ = blobs(400)
    idx, dists = knn_graph(x, 15)
    a = umap_layout(idx, dists, x, LayoutParams(n_epochs=60), seed=3)
    b = umap_layout(idx, dists, x, LayoutParams(n_epochs=60), seed=3)
    c = umap_layout(idx, dists, x, LayoutParams(n_epochs=60), seed=4)
    assert a.dtype == np.float32 and a.shape == (400, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_layout_does_not_depend_on_the_number_of_threads(monkeypatch):
    import engine.maps.umap_layout as layout

    monkeypatch.setattr(layout, "CHUNK_EDGES", 500)  # several edge blocks at this size
    x, _ = blobs(400)
    idx, dists = knn_graph(x, 15)
    graph = fuzzy_graph(idx, dists)
    init = np.random.default_rng(0).uniform(0, 10, (400, 2)).astype(np.float32)
    params = LayoutParams(n_epochs=40)
    one = layout.optimise(init, graph.row, graph.col, graph.data, params, seed=1, threads=1)
    two = layout.optimise(init, graph.row, graph.col, graph.data, params, seed=1, threads=2)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, init)


def test_disconnected_clusters_stay_apart():
    # three far-apart clusters give a k-NN graph with three connected components
    x, labels = blobs(450, k=3)
    idx, dists = knn_graph(x, 10)
    y = umap_layout(idx, dists, x, LayoutParams(n_epochs=100), seed=0)
    assert np.isfinite(y).all()
    centroids = np.stack([y[labels == c].mean(axis=0) for c in range(3)])
    nearest = ((y[:, None] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    assert (nearest == labels).mean() > 0.98


@pytest.mark.slow
def test_map_quality_matches_umap_learn_on_digits():
    """Trustworthiness and 10-NN recall within tolerance of umap-learn's own fit (same data).

    umap-learn compiles its numba kernels here (tens of seconds in a fresh process)."""
    import warnings

    x = digits()
    idx, dists = knn_graph(x, 15)
    ours = [map_quality(x, umap_layout(idx, dists, x, seed=s)) for s in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap
        from umap.umap_ import find_ab_params

        theirs = [map_quality(x, umap.UMAP(random_state=s).fit_transform(x)) for s in (0, 1)]
    for min_dist, spread in ((0.0, 1.0), (0.1, 1.0), (0.5, 1.0), (0.25, 2.0), (0.99, 1.0)):
        want = find_ab_params(spread, min_dist)
        np.testing.assert_allclose(ab_params(min_dist, spread), want, rtol=1e-4)
    for metric in ("trustworthiness", "knn_recall"):
        mine = np.mean([q[metric] for q in ours])
        ref = np.mean([q[metric] for q in theirs])
        assert mine >= ref - 0.01, (metric, mine, ref)
