"""2-D projection: determinism under a seed, caching, the sample-fit path, map quality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ParallaxError
from engine.maps.knn import IVFIndex, exact_knn
from engine.maps.project import compute_projection, map_quality, project
from engine.params import ProjectionParams
from engine.store.cache import Cache

REPO = Path(__file__).resolve().parent.parent


def clustered(n: int, d: int = 32, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.normal(size=(n, d))
    return x.astype(np.float32), labels


def test_umap_is_deterministic_under_a_seed_and_cached(tmp_path):
    x, _ = clustered(300)
    a = project(x, "umap", seed=3, cache=Cache(tmp_path / "a"))
    b = project(x, "umap", seed=3, cache=Cache(tmp_path / "b"))
    assert not a.cached and not b.cached
    np.testing.assert_array_equal(a.coords(), b.coords())
    again = project(x, "umap", seed=3, cache=Cache(tmp_path / "a"))
    assert again.cached and again.key == a.key
    other_seed = project(x, "umap", seed=4, cache=Cache(tmp_path / "a"))
    assert other_seed.key != a.key


def test_umap_map_separates_clusters(tmp_path):
    x, labels = clustered(400)
    coords = project(x, "umap", cache=Cache(tmp_path)).coords()
    assert coords.shape == (400, 2) and np.isfinite(coords).all()
    q = map_quality(x, coords, k=10)
    assert q["trustworthiness"] > 0.8
    # the nearest map neighbour of most points shares its cluster
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.9


def test_pca_matches_numpy_svd_up_to_sign(tmp_path):
    x, _ = clustered(200, d=8)
    coords = project(x, "pca", cache=Cache(tmp_path)).coords()
    centred = x - x.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    expected = u[:, :2] * s[:2]
    for j in range(2):
        sign = np.sign(coords[:, j] @ expected[:, j])
        np.testing.assert_allclose(coords[:, j] * sign, expected[:, j], atol=1e-3)


def test_sample_fit_path_places_every_point_near_its_cluster():
    x, labels = clustered(1500, d=16, k=4)
    coords = compute_projection(x, ProjectionParams("umap", fit_sample=500))
    assert coords.shape == (1500, 2) and np.isfinite(coords).all()
    # points placed by neighbours land with their own cluster's fitted points
    centroids = np.stack([coords[labels == c].mean(0) for c in range(4)])
    nearest = ((coords[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == labels).mean() > 0.9


def test_projection_errors_are_user_errors(tmp_path):
    with pytest.raises(ParallaxError, match="unknown projection method"):
        project(np.zeros((5, 3), np.float32), "tsne", cache=Cache(tmp_path))
    with pytest.raises(ParallaxError, match="no vectors file"):
        project(tmp_path / "missing.npy", "pca", cache=Cache(tmp_path))


def test_exact_knn_excludes_self_and_matches_brute_force():
    x, _ = clustered(120, d=6)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx, sims = exact_knn(x, 5)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    brute = np.argsort(-s, axis=1)[:, :5]
    assert not (idx == np.arange(120)[:, None]).any()
    np.testing.assert_allclose(sims, np.take_along_axis(s, brute, 1), atol=1e-5)


def test_ivf_index_recall_on_clustered_data():
    x, _ = clustered(5000, d=32, k=50)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = IVFIndex.build(x, nprobe=16)
    got, _ = index.search(x[:200], 10)
    want, _ = exact_knn(x, 10, queries=x[:200])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])
    assert recall > 0.9


def test_cli_project_vectors_file(tmp_path):
    x, _ = clustered(150)
    path = tmp_path / "v.npy"
    np.save(path, x)
    cmd = [sys.executable, "-m", "engine", "project", "--vectors", str(path), "--method", "pca"]
    cmd += ["--json", "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["n"] == 150 and payload["method"] == "pca" and payload["cached"] is False
    assert np.load(payload["path"]).shape == (150, 2)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["cached"] is True


def test_cli_user_error_is_one_line_and_exit_2(tmp_path):
    cmd = [sys.executable, "-m", "engine", "project", "--vectors", str(tmp_path / "nope.npy")]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no vectors file" in out.stderr
    assert "Traceback" not in out.stderr


# -- out of core: memory-mapped vectors read a block at a time (issue 31) ---------------------
def _rss_file_kb() -> int:
    """This process's resident pages of mapped files (Linux), in kB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def test_reading_a_mapped_file_in_blocks_keeps_its_pages_out_of_the_process(tmp_path):
    from engine.store.chunks import row_chunks

    path = tmp_path / "x.npy"
    np.save(path, np.ones((48 * 1024, 256), dtype=np.float32))  # 48 MiB
    x = np.load(path, mmap_mode="r")
    before = _rss_file_kb()
    total = 0.0
    for _, block in row_chunks(x, max_bytes=4 * 1024 * 1024):
        total += float(block.sum())
    grown = _rss_file_kb() - before
    assert total == 48 * 1024 * 256
    assert grown < 16 * 1024, f"{grown} kB of the 48 MiB file stayed mapped"
    # The same pass without releasing keeps every page (what the engine did before).
    for start in range(0, len(x), 4096):
        float(np.asarray(x[start : start + 4096]).sum())
    assert _rss_file_kb() - before > 40 * 1024


def test_a_memory_mapped_map_matches_the_in_memory_one_whatever_the_block(tmp_path, monkeypatch):
    from engine.store import chunks

    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 24))[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 24)) * 0.3
    x = x.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    params = ProjectionParams("umap", fit_sample=800)
    whole = compute_projection(x, params)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 24 * 4 * 257)  # 257-row blocks, a ragged tail
    mapped = compute_projection(np.load(tmp_path / "x.npy", mmap_mode="r"), params)
    np.testing.assert_array_equal(mapped, whole)


def test_a_large_pca_map_streamed_gives_the_full_pca_plane(tmp_path, monkeypatch):
    from engine.maps import project as proj

    rng = np.random.default_rng(4)
    x = (rng.normal(size=(5000, 16)) * np.linspace(5, 0.1, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    full = proj.pca_2d(x)
    streams = []
    for setting, value in (("PCA_STREAM_BYTES", 1024), ("PCA_STREAM_ROWS", 4000)):
        with monkeypatch.context() as m:  # past the byte bound, then past the row bound
            m.setattr(proj, setting, value)
            m.setattr(proj, "PcaSpace", CountingSpace := _counting(proj.PcaSpace))
            streams.append(
                compute_projection(
                    np.load(tmp_path / "x.npy", mmap_mode="r"), ProjectionParams("pca")
                )
            )
            assert CountingSpace.streamed == 1  # fitted on the covariance, not by the SVD
    for streamed in streams:
        for axis in range(2):  # the same axes (a PCA axis has no preferred sign)
            r = np.corrcoef(full[:, axis], streamed[:, axis])[0, 1]
            assert abs(r) > 0.9999


def _counting(space: type) -> type:
    """``PcaSpace`` counting its streamed fits."""

    class Counting(space):  # type: ignore[misc, valid-type]
        streamed = 0

        @classmethod
        def fit_streamed(cls, x, dims):  # type: ignore[no-untyped-def]
            Counting.streamed += 1
            return space.fit_streamed(x, dims)

    return Counting


def test_self_knn_of_a_mapped_file_equals_the_whole_search(tmp_path):
    from engine.maps.knn import exact_knn, self_knn

    rng = np.random.default_rng(5)
    x = rng.normal(size=(9000, 20)).astype(np.float32)
    x[7] = x[8]  # a duplicate: self must still be the row dropped
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    got = self_knn(mapped, 5, chunk_rows=4096)
    want = exact_knn(x, 5)
    np.testing.assert_array_equal(got[0], want[0])  # the same neighbours, in the same order
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)  # BLAS blocking: an ulp apart
    assert 7 not in got[0][7] and 8 not in got[0][8]
