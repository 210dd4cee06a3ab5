"""float16 vector files (issue 31): read as float32 a block at a time, never upcast whole, and
mapped under their own key (a float16 copy is not the float32 vectors)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from engine.maps.project import compute_projection, project
from engine.params import ProjectionParams
from engine.store import chunks
from engine.store.cache import Cache


def _mixture(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(6, d))[rng.integers(0, 6, n)] + rng.normal(size=(n, d)) * 0.3


def test_a_float16_file_is_read_as_float32_blocks_never_whole(tmp_path):
    x = _mixture(64 * 1024, 64).astype(np.float16)  # 8 MiB as float16, 16 MiB as float32
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    block_bytes = 1024 * 1024
    tracemalloc.start()
    try:
        seen = 0
        for start, block in chunks.row_chunks(mapped, max_bytes=block_bytes):
            assert block.dtype == np.float32 and block.nbytes <= block_bytes
            np.testing.assert_array_equal(block, x[start : start + len(block)].astype(np.float32))
            seen += len(block)
            del block
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == len(x)
    # numpy reports its buffers to tracemalloc: the blocks (and a comparison's copies), far
    # below the 16 MiB a whole float32 copy would take.
    assert peak < 6 * block_bytes, f"peak {peak / 2**20:.1f} MiB"


def test_gathered_rows_of_a_float16_file_are_its_values_in_float32(tmp_path):
    x = _mixture(5000, 16).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    rows = np.sort(np.random.default_rng(1).choice(len(x), 700, replace=False))
    got = chunks.gather_rows(np.load(tmp_path / "x.npy", mmap_mode="r"), rows)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x[rows].astype(np.float32))


def test_a_float16_vectors_file_maps_like_its_values_under_its_own_key(tmp_path):
    """``project --vectors`` on a float16 ``.npy``: the map of the float32 values it holds (the
    fit sample gathered and every other row placed a block at a time), cached under a key of
    its own bytes, not the float32 file's."""
    x16 = _mixture(3000, 24, seed=2).astype(np.float16)
    np.save(tmp_path / "x16.npy", x16)
    np.save(tmp_path / "x32.npy", x16.astype(np.float32))  # the same values, float32 bytes
    params = ProjectionParams("umap", fit_sample=800)
    mapped = compute_projection(np.load(tmp_path / "x16.npy", mmap_mode="r"), params)
    np.testing.assert_array_equal(mapped, compute_projection(x16.astype(np.float32), params))
    cache = Cache(tmp_path / "cache")
    half = project(tmp_path / "x16.npy", "pca", cache=cache)
    single = project(tmp_path / "x32.npy", "pca", cache=cache)
    assert half.key != single.key and not single.cached
    assert project(tmp_path / "x16.npy", "pca", cache=cache).cached
    np.testing.assert_array_equal(np.load(half.path), np.load(single.path))
