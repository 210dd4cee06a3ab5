"""The demo:shapes generator: deterministic, lazy, captioned, bounded."""

from __future__ import annotations

import numpy as np
import pytest

from engine import settings
from engine.data.base import Dataset
from engine.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    MIN_ITEMS,
    SHAPES,
    SIZES,
    ShapesDataset,
    open_shapes,
)
from engine.errors import DatasetError, ItemError


def _bytes(ds: ShapesDataset, i: int) -> bytes:
    return ds.load_image(i).tobytes()


def test_protocol_and_columns() -> None:
    ds = open_shapes(n=300, seed=3)
    assert isinstance(ds, Dataset)
    assert ds.spec == "demo:shapes?n=300&seed=3"
    assert len(ds) == len(ds.ids) == len(ds.labels) == len(ds.texts) == 300
    assert ds.ids[0] == "shapes-000000" and ds.ids[-1] == "shapes-000299"
    assert len(set(ds.ids)) == 300
    assert ds.has_images and ds.skipped == []
    assert set(ds.labels) <= set(SHAPES)
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8 and len(SIZES) == 3
    meta = ds.metadata()
    assert len(meta) == 300
    assert {"colour", "size", "background", "template"} <= set(meta.columns)
    assert set(meta["colour"]) <= set(COLOURS)
    assert set(meta["background"]) <= set(BACKGROUNDS)
    # Several wordings and every background kind show up in a few hundred items.
    assert meta["template"].nunique() >= 5
    assert meta["background"].nunique() == len(BACKGROUNDS)


def test_images_are_64px_rgb_and_deterministic() -> None:
    a, b = open_shapes(n=200, seed=7), open_shapes(n=200, seed=7)
    other = open_shapes(n=200, seed=8)
    img = a.load_image(5)
    assert img.mode == "RGB" and img.size == (64, 64)
    for i in (0, 5, 199):
        assert _bytes(a, i) == _bytes(b, i)
    # Rendering order does not matter: image 5 is the same after rendering others.
    b.load_image(199)
    assert _bytes(b, 5) == _bytes(a, 5)
    assert any(_bytes(a, i) != _bytes(other, i) for i in range(5))
    assert a.texts != other.texts
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()
    assert open_shapes(n=201, seed=7).fingerprint() != a.fingerprint()


def test_item_does_not_depend_on_n() -> None:
    small, big = open_shapes(n=150, seed=1), open_shapes(n=5000, seed=1)
    assert big.texts[:150] == small.texts
    assert _bytes(small, 149) == _bytes(big, 149)


def test_captions_name_shape_and_colour() -> None:
    ds = open_shapes(n=500, seed=11)
    meta = ds.metadata()
    for i in range(len(ds)):
        text = ds.texts[i]
        assert ds.labels[i] in text
        assert meta["colour"].iloc[i] in text
    # Varied wording: many distinct sentence patterns for the same (shape, colour).
    assert len(set(ds.texts)) > 200


def test_shape_colour_differs_from_background() -> None:
    # The shape's pixels (image centre region of a large shape) must stand out: compare the
    # mean of the most shape-like pixels with the item's colour.
    ds = open_shapes(n=400, seed=2)
    for i in range(40):
        attrs = ds.attributes(i)
        img = np.asarray(ds.load_image(i), dtype=np.float32)
        c = ds.columns
        x, y = int(c["cx"][i]), int(c["cy"][i])
        corner = img[:3, :3].reshape(-1, 3).mean(axis=0)
        if attrs["shape"] in {"crescent", "cross", "star"}:
            continue  # the centre pixel may lie outside these shapes
        centre = img[y, x]
        assert np.linalg.norm(centre - corner) > 60, (i, attrs)


def test_lazy_million() -> None:
    ds = open_shapes(n=1_000_000, seed=0)
    assert len(ds) == 1_000_000
    assert ds.ids[-1] == "shapes-999999"
    assert ds.labels[123_456] in SHAPES
    assert ds.labels[123_456] in ds.texts[123_456]
    assert ds.load_image(999_999).size == (64, 64)


@pytest.mark.parametrize("n", [0, MIN_ITEMS - 1, settings.MAX_ITEMS + 1, -5])  # its own bounds
def test_n_out_of_range(n: int) -> None:
    with pytest.raises(DatasetError):
        open_shapes(n=n)


def test_n_follows_the_items_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upper bound is PARALLAX_MAX_ITEMS, read at call time: an operator who raised it
    opens a larger demo, and the refusal names the setting."""
    monkeypatch.setattr(settings, "MAX_ITEMS", 5_000)
    with pytest.raises(DatasetError, match="PARALLAX_MAX_ITEMS"):
        open_shapes(n=5_001)
    monkeypatch.setattr(settings, "MAX_ITEMS", 6_000)
    assert len(open_shapes(n=5_001)) == 5_001


def test_bad_index() -> None:
    ds = open_shapes(n=100)
    with pytest.raises(ItemError):
        ds.load_image(100)
