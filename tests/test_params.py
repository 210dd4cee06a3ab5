"""engine.params: one owner per default, and cache keys that never drift.

The pinned hex strings are the keys the engine produced before the parameter objects existed
(computed with the old inline recipes): a finished cache entry is found by its key, so a change
here silently orphans every user's cache.
"""

from __future__ import annotations

import inspect

import pytest

from engine import params
from engine.errors import ParallaxError
from engine.params import CompareParams, HeadParams, ProjectionParams, TrainConfig


class _Labelled:
    ids = ("a", "b")
    labels = ("x", None)


def test_projection_keys_are_pinned() -> None:
    assert ProjectionParams().cache_key("abc") == (
        "21bf5223e01fe215d21b08b2d9ac2c66ba63725a5e38af4b5bf64c35c7357f0e"
    )
    assert ProjectionParams(method="pca").cache_key("abc") == (
        "1767b653e065c27c1c65e1bd8f3ccf0a42ebda02cea2a7819b76db4b9c93c085"
    )
    custom = ProjectionParams(seed=3, n_neighbors=30, min_dist=0.5, fit_sample=1000)
    assert custom.cache_key("abc") == (
        "3ad2af118327afd46dab8ca0a39a7d7cff2c3696b0ca90970c07ac64eb8640fb"
    )


def test_pca_key_ignores_umap_settings() -> None:
    a = ProjectionParams(method="pca", n_neighbors=5).cache_key("v")
    assert a == ProjectionParams(method="pca").cache_key("v")
    assert ProjectionParams(n_neighbors=5).cache_key("v") != ProjectionParams().cache_key("v")


def test_comparison_keys_are_pinned() -> None:
    from engine.analysis.compare import comparison_key

    assert comparison_key(_Labelled(), ["k1", "k2"], CompareParams()) == (
        "c730c3f205f4dc1f2dc8c03c9142b1a629067db3c770ab1136a18cee099f5b9a"
    )
    quick = CompareParams(k=5, ensemble=False, max_items=None)
    assert comparison_key(_Labelled(), ["k1"], quick) == (
        "1ea32dd49f4a5427bd3b34222ab1597df02b241856e1636f6783ff9c776f39f2"
    )


def test_head_and_vectors_keys_are_pinned() -> None:
    assert HeadParams().cache_key("concat", "i", "t", "L") == (
        "284f61395867c65224800e364f05510b7a49d4a26f0196756fe77f2300985a94"
    )
    small = HeadParams(seed=1).with_epochs(7, hidden=64)
    # an image head's key leaves the text vectors out
    assert small.cache_key("image", "i", "anything", "L") == (
        "c97e78c08e27401fd788aa98d955634df664d4902c27831d2221155d31063a1b"
    )
    identity = {"spec": "baseline:pixels", "v": 1}
    assert params.EmbedParams.vectors_key("fp", identity, "image") == (
        "d8a29eda5f5793a668f4837149f2aa4be5b6794ec8dc23ef4d97b035945733f9"
    )


def test_engine_signatures_read_their_defaults_here() -> None:
    from engine.analysis.compare import compare_models
    from engine.analysis.fusion import train_heads_for_dataset
    from engine.maps.project import compute_projection, project

    sig = inspect.signature(project).parameters
    assert sig["n_neighbors"].default == params.PROJECTION.n_neighbors
    assert sig["min_dist"].default == params.PROJECTION.min_dist
    assert sig["fit_sample"].default == params.PROJECTION.fit_sample
    # compute_projection takes the parameter object itself: its default is the one value
    assert inspect.signature(compute_projection).parameters["params"].default is params.PROJECTION
    sig = inspect.signature(compare_models).parameters
    for name in ("k", "seed", "ensemble", "test_size", "max_items", "max_train"):
        assert sig[name].default == getattr(params.COMPARE, name), name
    from engine.data.shapes import open_shapes

    sig = inspect.signature(open_shapes).parameters
    assert (sig["n"].default, sig["seed"].default) == (params.SHAPES.n, params.SHAPES.seed)
    sig = inspect.signature(train_heads_for_dataset).parameters
    assert sig["seed"].default == params.HEADS.seed
    assert sig["test_size"].default == params.HEADS.test_size
    assert TrainConfig().max_epochs == params.HEADS.train.max_epochs


def test_cli_flags_read_their_defaults_here() -> None:
    from engine.cli import build_parser

    parser = build_parser()
    project = parser.parse_args(["project", "--vectors", "x.npy"])
    assert (project.fit_sample, project.n_neighbors, project.min_dist) == (
        params.PROJECTION.fit_sample,
        params.PROJECTION.n_neighbors,
        params.PROJECTION.min_dist,
    )
    compare = parser.parse_args(["compare", "--model", "m"])
    assert (compare.k, compare.max_items, compare.test_size) == (
        params.COMPARE.k,
        params.COMPARE.max_items,
        params.COMPARE.test_size,
    )
    head = parser.parse_args(["train-head", "--image-model", "a", "--text-model", "b"])
    assert (head.epochs, head.hidden) == (
        params.HEADS.train.max_epochs,
        params.HEADS.train.hidden,
    )
    predict = parser.parse_args(["predict", "--model", "m", "--label", "a"])
    assert predict.top_k == params.PREDICT.top_k


def test_bad_parameters_are_one_line_errors() -> None:
    with pytest.raises(ParallaxError, match="unknown projection method"):
        ProjectionParams(method="tsne")
    with pytest.raises(ParallaxError, match="exactly once"):
        CompareParams(templates=("no placeholder",)).key_material()


def test_items_compared() -> None:
    assert CompareParams().items_compared(50) == 50
    assert CompareParams().items_compared(10**6) == params.COMPARE.max_items
    assert CompareParams(max_items=None).items_compared(10**6) == 10**6
