"""engine.maps.payload (binary map payloads) and engine.maps.align (Procrustes alignment of
maps)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from engine.maps import align
from engine.maps import payload as mapdata


def test_positions_are_float32_pairs_in_the_shared_frame() -> None:
    a = np.array([[0, 0], [10, 0], [0, 5]], dtype=np.float32)
    b = np.array([[-10, 0], [0, 0], [np.nan, 1]], dtype=np.float32)
    frame = mapdata.shared_frame([a, b])
    xy = np.frombuffer(mapdata.position_bytes(a, frame), dtype="<f4").reshape(-1, 2)
    assert xy.shape == (3, 2)
    assert np.isclose(np.abs(xy).max(), mapdata.FRAME_MARGIN)  # the widest map fills the frame
    both = np.concatenate([frame.apply(a), frame.apply(b)[:2]])
    assert np.isclose(both[:, 0].min(), -both[:, 0].max())  # centred on the joint box
    parked = np.frombuffer(mapdata.position_bytes(b, frame), dtype="<f4").reshape(-1, 2)
    assert (np.abs(parked[2]) > 10).all()  # a NaN point lands outside the view, not at 0,0


def test_colour_codes_are_one_byte_a_point() -> None:
    cat = mapdata.category_codes(np.array([0, 3, -1, 2]))
    assert list(cat) == [0, 3, mapdata.MISSING_CODE, 2]
    num = np.frombuffer(mapdata.quantise(np.array([0.0, 0.5, 1.0, np.nan])), np.uint8)
    assert list(num) == [0, mapdata.LEVELS // 2, mapdata.LEVELS - 1, mapdata.MISSING_CODE]
    with pytest.raises(ValueError):
        mapdata.category_codes(np.array([300]))
    n = 1000
    frame = mapdata.shared_frame([np.zeros((n, 2))])
    sent = len(mapdata.position_bytes(np.zeros((n, 2)), frame)) + len(
        mapdata.category_codes(np.zeros(n, int))
    )
    assert sent == mapdata.BYTES_PER_POINT * n <= 10 * n


def test_selection_round_trips_as_rows_list_or_bitmask() -> None:
    n = 100
    rows = np.array([3, 7, 64, 99])
    assert mapdata.decode_rows({"rows": [7, 3, 3, 500, -1]}, n).tolist() == [3, 7]
    packed = base64.b64encode(mapdata.encode_rows(rows)).decode()
    assert mapdata.decode_rows({"rows_b64": packed}, n).tolist() == rows.tolist()
    mask = np.zeros(n, bool)
    mask[rows] = True
    bits = base64.b64encode(np.packbits(mask, bitorder="little").tobytes()).decode()
    assert mapdata.decode_rows({"mask_b64": bits}, n).tolist() == rows.tolist()
    assert mapdata.decode_rows(None, n).tolist() == []


def test_procrustes_puts_a_rotated_scaled_map_back_on_the_first() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 2))
    th = 2.0
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    b = (a @ rot) * 4 + 7 + 0.01 * rng.normal(size=a.shape)
    b[:, 0] *= -1  # and mirrored
    gap = align.alignment_gap(a, b)
    assert gap["before"] > 0.5 and gap["after"] < 0.05, gap
    first, aligned = align.align_maps([a, b])
    assert np.allclose(first, a.astype(np.float32))
    assert np.abs(aligned - a).mean() < 0.05
    d = align.displacement(a, aligned)
    assert d.shape == (2000,) and d.dtype == np.float32 and d.mean() < 0.05


def test_alignment_keeps_each_map_shape() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
    aligned = align.fit_alignment(a, b).apply(b)
    pd_b = np.linalg.norm(b[:50, None] - b[None, :50], axis=2)
    pd_al = np.linalg.norm(aligned[:50, None] - aligned[None, :50], axis=2)
    ratio = pd_al[pd_b > 0] / pd_b[pd_b > 0]
    assert np.allclose(ratio, ratio[0], rtol=1e-4)  # a similarity: distances scale uniformly
    with pytest.raises(ValueError):
        align.fit_alignment(a, b[:10])


def test_parts_interleave_rows_and_rejoin_exactly():
    from engine.maps.payload import join_parts, part_count, part_rows, split_parts

    rng = np.random.default_rng(0)
    n = 1_003
    xy = rng.normal(size=(n, 2)).astype("<f4")
    codes = rng.integers(0, 7, n).astype(np.uint8)
    parts = part_count(n, part_points=250)
    assert parts == 5 and part_count(250, part_points=250) == 1
    pos, col = split_parts(xy, parts), split_parts(codes, parts)
    # Still 9 bytes a point in all: no row ids travel with the parts.
    assert sum(map(len, pos)) + sum(map(len, col)) == mapdata.BYTES_PER_POINT * n
    # Part j's k-th point is row j + k * parts.
    rows = part_rows(3, parts, n)
    np.testing.assert_array_equal(np.frombuffer(pos[3], "<f4").reshape(-1, 2), xy[rows])
    np.testing.assert_array_equal(join_parts(pos, n, "<f4", 2), xy)
    np.testing.assert_array_equal(join_parts(col, n, "u1"), codes)
    # Before the last parts arrive, their rows are missing, never someone else's point.
    early = join_parts([pos[0], pos[1], None, None, None], n, "<f4", 2)
    arrived = np.concatenate([part_rows(0, parts, n), part_rows(1, parts, n)])
    np.testing.assert_array_equal(early[arrived], xy[arrived])
    assert np.isnan(np.delete(early, arrived, axis=0)).all()


def test_first_part_is_an_even_sample_of_a_class_ordered_map():
    from engine.maps.payload import part_rows

    labels = np.repeat(np.arange(10), 1_000)  # datasets often come sorted by class
    first = labels[part_rows(0, 20, len(labels))]
    assert np.bincount(first, minlength=10).tolist() == [50] * 10
