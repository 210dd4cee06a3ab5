"""Thumbnail sprite sheets: built once, reused, the right size, in the right place."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.data import thumbnails as th
from engine.store.cache import Cache
from tests.fakes import ArrayImageDataset


class CountingDataset(ArrayImageDataset):
    """Counts image decodes so a test can tell a rebuilt sheet from a reused one."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.loads = 0

    def load_image(self, index: int) -> Image.Image:
        self.loads += 1
        return super().load_image(index)


def test_layout_locates_items() -> None:
    layout = th.SheetLayout(600)
    assert layout.per_sheet == 256 and layout.n_sheets == 3
    assert layout.locate(0) == (0, 0, 0)
    assert layout.locate(17) == (0, 1, 1)
    assert layout.locate(256) == (1, 0, 0)
    assert list(layout.rows_of_sheet(2)) == list(range(512, 600))
    with pytest.raises(IndexError):
        layout.locate(600)


def test_sheet_built_once_then_reused(tmp_path) -> None:
    cache = Cache(tmp_path)
    ds = CountingDataset(300)
    first = th.get_sheet(ds, 1, cache)
    assert ds.loads == 300 - 256  # only the items of sheet 1 were decoded
    again = th.get_sheet(ds, 1, cache)
    assert again == first and ds.loads == 44
    path = th.sheet_path(ds, 1, cache)
    assert path.is_file()
    # under cache/thumbs/<dataset fingerprint>/
    assert path.relative_to(tmp_path).parts[:2] == ("thumbs", ds.fingerprint())
    # a fresh dataset object with the same content reuses the same files
    twin = CountingDataset(300)
    th.thumbnail(twin, 260, cache)
    assert twin.loads == 0


def test_sheet_and_thumbnail_sizes(tmp_path) -> None:
    cache = Cache(tmp_path)
    ds = ArrayImageDataset(300)
    with Image.open(io.BytesIO(th.get_sheet(ds, 0, cache))) as im:
        assert im.format == "WEBP"
        assert im.size == (th.GRID * th.THUMB_SIZE, th.GRID * th.THUMB_SIZE)
    with Image.open(io.BytesIO(th.get_sheet(ds, 1, cache))) as im:  # 44 items: 3 grid rows
        assert im.size == (th.GRID * th.THUMB_SIZE, 3 * th.THUMB_SIZE)
    thumb = th.thumbnail(ds, 5, cache)
    assert thumb.size == (th.THUMB_SIZE, th.THUMB_SIZE)
    # an 8x8 image is blown up crisply: the thumbnail's mean colour matches the source's
    src = np.asarray(ds.load_image(5), dtype=np.float32).mean(axis=(0, 1))
    got = np.asarray(thumb, dtype=np.float32).mean(axis=(0, 1))
    assert np.abs(src - got).max() < 12
    small = th.get_sheet(ds, 0, cache, size=32)
    with Image.open(io.BytesIO(small)) as im:
        assert im.size == (th.GRID * 32, th.GRID * 32)


def test_fit_thumbnail_keeps_aspect() -> None:
    wide = Image.new("RGB", (400, 100), (255, 0, 0))
    tile = th.fit_thumbnail(wide, 64)
    assert tile.size == (64, 64)
    arr = np.asarray(tile)
    assert tuple(arr[32, 32]) == (255, 0, 0)
    assert tuple(arr[2, 32]) == th.BACKGROUND  # letterboxed top


def test_broken_items_get_a_placeholder(tmp_path) -> None:
    ds = ArrayImageDataset(10, bad=(3,))
    thumbs = th.thumbnails(ds, [2, 3], Cache(tmp_path))
    assert len(thumbs) == 2
    assert thumbs[1].size == (th.THUMB_SIZE, th.THUMB_SIZE)


def test_build_all_writes_manifest_and_resumes(tmp_path) -> None:
    cache = Cache(tmp_path)
    ds = CountingDataset(600)
    th.get_sheet(ds, 0, cache)
    assert not th.is_complete(ds, cache)
    done: list[int] = []
    folder = th.build_thumbnails(ds, cache, workers=2, progress=lambda p: done.append(p.done))
    assert th.is_complete(ds, cache)
    assert ds.loads == 600  # sheet 0 was not decoded twice
    assert sorted(p.name for p in folder.glob("sheet-*.webp")) == [
        "sheet-000000.webp",
        "sheet-000001.webp",
        "sheet-000002.webp",
    ]
    assert done[-1] == 600
    th.build_thumbnails(ds, cache)
    assert ds.loads == 600


def test_gallery_without_building_decodes_single_items(tmp_path) -> None:
    cache = Cache(tmp_path)
    ds = CountingDataset(600)
    out = th.thumbnails(ds, [5, 300, 599], cache, build_missing=False)
    assert len(out) == 3 and ds.loads == 3
    assert not th.sheet_path(ds, 1, cache).exists()


def test_data_url_and_no_images(tmp_path) -> None:
    cache = Cache(tmp_path)
    ds = ArrayImageDataset(10)
    assert th.sheet_data_url(ds, 0, cache).startswith("data:image/webp;base64,")
    ds.has_images = False
    from engine.errors import ParallaxError

    with pytest.raises(ParallaxError):
        th.render_sheet(ds, 0)
