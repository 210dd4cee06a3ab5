"""2-D maps of embedding vectors: PCA and UMAP, seeded and cached like vectors.

UMAP here needs no JIT compilation, so a fresh process on a machine that never ran Parallax
draws its first map as fast as any later one: the exact k-NN graph comes from faiss (BLAS), and
UMAP's fuzzy graph and layout from ``engine.maps.umap_layout`` (vectorised NumPy/SciPy). umap-learn
compiles its numba kernels in every such process (30-40 s on two cores). Above ``fit_sample``
points UMAP is fitted on a seeded sample and every other point is placed at the
similarity-weighted mean of its nearest sample points' coordinates (the same initialisation
umap-learn's ``transform`` starts from), found with an inverted-file index.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ParallaxError
from engine.maps import gpu_umap
from engine.params import PROJECTION, PROJECTION_METHODS, ProjectionParams
from engine.store.cache import Cache, Entry, hash_array
from engine.store.chunks import gather_rows, row_chunks
from engine.store.memo import array_entry
from engine.store.progress import ProgressCallback, ProgressTracker

METHODS = PROJECTION_METHODS
DEFAULT_FIT_SAMPLE = PROJECTION.fit_sample  # the defaults are engine.params' (one owner)
PCA_DIMS_FOR_KNN = 64  # neighbour search above EXACT_FULL_DIM_LIMIT points runs in PCA space
EXACT_FULL_DIM_LIMIT = 20_000
# Inverted lists searched per placed point. 4 (not 16) halves the placement of 1M points and
# gives the same map: trustworthiness 0.9475 vs 0.9477, 10-NN recall 0.783 vs 0.783 (1M x 512,
# BENCHMARKS.md row 5); a point lands at the weighted mean of near neighbours either way.
PLACEMENT_NPROBE = 4
# Above this many bytes (as float32), or this many rows, a PCA map is fitted on the exact
# covariance and drawn a block at a time: past a few million rows the randomised SVD's passes
# cost more than summing a D x D covariance (10M x 16: 16 s against ~2 s here).
PCA_STREAM_BYTES = 1024 * 1024 * 1024
PCA_STREAM_ROWS = 2_000_000


@dataclass
class ProjectionResult:
    method: str
    n: int
    cached: bool
    seconds: float
    path: Path
    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def coords(self) -> np.ndarray:
        return np.load(self.path, allow_pickle=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "n": self.n,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "path": str(self.path),
            "key": self.key,
            "params": self.params,
        }


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pca_2d(vectors: np.ndarray, seed: int = 0, dims: int = 2) -> np.ndarray:
    """PCA to ``dims`` dimensions (randomised SVD: 100k x 512 takes well under a second)."""
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float32)
    dims = min(dims, x.shape[1], x.shape[0])
    svd = "randomized" if min(x.shape) > 3 * dims else "full"
    out = PCA(n_components=dims, svd_solver=svd, random_state=seed).fit_transform(x)
    if out.shape[1] < 2:  # a 1-D input still gets a 2-D map
        out = np.hstack([out, np.zeros((len(out), 2 - out.shape[1]), dtype=out.dtype)])
    return out.astype(np.float32)


def knn_graph(
    x: np.ndarray, k: int, space: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """k-NN graph in UMAP's precomputed format: self first, cosine distances.

    Searched in ``space`` when given (rows matching ``x``), else in ``x`` itself up to
    ``EXACT_FULL_DIM_LIMIT`` points and in a PCA of it above."""
    from engine.maps.knn import exact_knn

    if space is None:
        big = len(x) > EXACT_FULL_DIM_LIMIT
        space = PcaSpace.fit(x, PCA_DIMS_FOR_KNN).transform(x) if big else x
    space = _normalise(space)
    idx, sims = exact_knn(space, k - 1, exclude_self=True)
    n = len(x)
    indices = np.hstack([np.arange(n)[:, None], idx]).astype(np.int32)
    dists = np.hstack([np.zeros((n, 1)), np.clip(1.0 - sims, 0.0, 2.0)]).astype(np.float32)
    return indices, dists


def warm_up() -> None:
    """Import and run the map path once on a tiny input, so the first real map pays neither.

    The layout needs no compilation (``engine.maps.umap_layout`` is plain NumPy/SciPy), so this
    costs
    about a second of imports (SciPy's sparse eigensolver, faiss); the dashboard starts it in a
    background thread with the app (``start_warm_up``).
    """
    rng = np.random.default_rng(0)
    umap_2d(rng.normal(size=(64, 8)).astype(np.float32), n_neighbors=5)


_warm_up_thread: threading.Thread | None = None
_warm_up_lock = threading.Lock()


def start_warm_up() -> threading.Thread:
    """Run ``warm_up`` once per process in a daemon thread (later calls return the same one)."""
    global _warm_up_thread
    with _warm_up_lock:
        if _warm_up_thread is None:
            _warm_up_thread = threading.Thread(target=warm_up, name="parallax-map-warm-up")
            _warm_up_thread.daemon = True
            _warm_up_thread.start()
        return _warm_up_thread


def umap_2d(
    vectors: np.ndarray,
    seed: int = PROJECTION.seed,
    n_neighbors: int = PROJECTION.n_neighbors,
    min_dist: float = PROJECTION.min_dist,
    knn_space: np.ndarray | None = None,
) -> np.ndarray:
    """Seeded UMAP of (normalised) vectors: exact k-NN graph (faiss; searched in ``knn_space``
    when given), then UMAP's fuzzy graph and layout in NumPy (``engine.maps.umap_layout``: no JIT,
    so no compile on a new machine)."""
    from engine.maps.umap_layout import LayoutParams, umap_layout

    x = _normalise(vectors)
    n = len(x)
    if n < 4:
        return pca_2d(x, seed)
    k = max(2, min(n_neighbors, n - 1))
    params = LayoutParams(min_dist=min_dist)
    if gpu_umap.enabled():  # cuML installed and a GPU here: the same fit, on the GPU
        return gpu_umap.umap_2d(x, seed, k, min_dist, params.epochs_for(n))
    indices, dists = knn_graph(x, k, space=knn_space)
    return umap_layout(indices, dists, x, params, seed=seed)


class Placer:
    """Places points among a fitted sample: each at the similarity-weighted mean of its nearest
    sample points' coordinates (an inverted-file index over the sample). Each row's place
    depends on that row alone, so any split of the queries into blocks gives the same map."""

    def __init__(
        self, sample_vectors: np.ndarray, sample_coords: np.ndarray, k: int = 10, seed: int = 0
    ) -> None:
        from engine.maps.knn import IVFIndex

        self.index = IVFIndex.build(_normalise(sample_vectors), seed=seed, nprobe=PLACEMENT_NPROBE)
        self.coords = np.asarray(sample_coords, dtype=np.float32)
        self.k = k

    def place(self, queries: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        out = np.empty((len(queries), 2), dtype=np.float32)
        for start in range(0, len(queries), chunk):
            q = _normalise(queries[start : start + chunk])
            idx, sims = self.index.search(q, self.k)
            valid = idx >= 0
            # Sharpen the weights so the nearest neighbours dominate, as UMAP's membership does.
            w = np.where(valid, np.exp((sims - sims[:, :1]) * 20.0), 0.0).astype(np.float32)
            w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
            out[start : start + len(q)] = np.einsum(
                "nk,nkd->nd", w, self.coords[np.maximum(idx, 0)]
            )
        return out


def place_by_neighbours(
    sample_vectors: np.ndarray,
    sample_coords: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    seed: int = 0,
    progress: ProgressTracker | None = None,
    chunk: int = 65_536,
) -> np.ndarray:
    """Coordinates for ``queries``: similarity-weighted mean of their nearest sample points."""
    placer = Placer(sample_vectors, sample_coords, k=k, seed=seed)
    out = np.empty((len(queries), 2), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        out[start : start + chunk] = placer.place(queries[start : start + chunk], chunk)
        if progress is not None:
            progress.advance(len(out[start : start + chunk]))
    return out


def compute_projection(
    vectors: np.ndarray,
    params: ProjectionParams = PROJECTION,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Project without touching the cache (``project`` adds caching on top).

    ``vectors`` may be memory-mapped: above ``fit_sample`` rows it is read a block at a time
    (``engine.store.chunks``), so memory is bounded by the fit sample and one block, not by N.
    """
    method, seed, fit_sample = params.method, params.seed, params.fit_sample
    umap_options = {"n_neighbors": params.n_neighbors, "min_dist": params.min_dist}
    x = np.asanyarray(vectors)  # keeps a np.memmap a memmap: its pages are released per block
    if x.ndim != 2 or len(x) == 0:
        raise ParallaxError(f"cannot project an array of shape {x.shape}: need N x D with N > 0")
    n = len(x)
    tracker = ProgressTracker(f"{method} map", n, progress)
    tracker.emit()
    if method == "pca":
        out = _pca_map(x, seed)
        tracker.advance(n)
        return out
    if n <= fit_sample:
        out = umap_2d(gather_rows(x, np.arange(n)), seed, **umap_options)
        tracker.advance(n)
        return out
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=fit_sample, replace=False))
    out = np.empty((n, 2), dtype=np.float32)
    # One PCA space, fitted on the sample, serves both neighbour searches: the sample's k-NN
    # graph and the placement of every other point.
    fitted = _normalise(gather_rows(x, sample))
    space = PcaSpace.fit(fitted, PCA_DIMS_FOR_KNN)
    sample_space = space.transform(fitted)
    out[sample] = umap_2d(fitted, seed, knn_space=sample_space, **umap_options)
    del fitted
    tracker.advance(len(sample))
    # Every other row is read once, a block at a time, projected into the PCA space and placed
    # at once: nothing N x D (or N x dims) is ever held, only the N x 2 result.
    placer = Placer(sample_space, out[sample])
    is_rest = np.ones(n, dtype=bool)
    is_rest[sample] = False
    for start, block in row_chunks(x):
        keep = is_rest[start : start + len(block)]
        if not keep.any():
            continue
        part = space.transform_unit(block[keep] if not keep.all() else block)
        del block
        placed = out[start : start + len(keep)]
        placed[keep] = placer.place(part)
        tracker.advance(int(keep.sum()))
    return out


def _pca_map(x: np.ndarray, seed: int) -> np.ndarray:
    """PCA map; an array larger than ``PCA_STREAM_BYTES`` or longer than ``PCA_STREAM_ROWS``
    is fitted on its exact covariance,
    accumulated a block at a time, and projected a block at a time (the same plane as a full
    PCA, without N x D in memory)."""
    if x.shape[0] * x.shape[1] * 4 <= PCA_STREAM_BYTES and x.shape[0] <= PCA_STREAM_ROWS:
        return pca_2d(gather_rows(x, np.arange(len(x))), seed)
    space = PcaSpace.fit_streamed(x, 2)
    out = np.empty((len(x), 2), dtype=np.float32)
    for start, block in row_chunks(x):
        out[start : start + len(block)] = space.transform(block)
    return out


@dataclass(frozen=True)
class PcaSpace:
    """A PCA basis (eigenvectors of the covariance, signs fixed): plain NumPy, deterministic,
    and cheaper than a randomised SVD for a few hundred input dimensions."""

    mean: np.ndarray
    basis: np.ndarray  # D x dims

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, x: np.ndarray, dims: int) -> PcaSpace:
        x = np.asarray(x, dtype=np.float32)
        mean = x.mean(axis=0)
        centred = x - mean
        cov = (centred.T @ centred).astype(np.float64) / max(len(x) - 1, 1)
        values, vectors = np.linalg.eigh(cov)
        top = vectors[:, np.argsort(values)[::-1][: min(dims, x.shape[1])]]
        top *= np.where(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])] < 0, -1.0, 1.0)
        return cls(mean=mean, basis=top.astype(np.float32))

    @classmethod
    def fit_streamed(cls, x: np.ndarray, dims: int) -> PcaSpace:
        """``fit`` over every row of a (memory-mapped) ``x``, a block at a time: the mean and
        covariance are summed in float64, so the basis is the full data's."""
        d = x.shape[1]
        total = np.zeros(d, dtype=np.float64)
        gram = np.zeros((d, d), dtype=np.float64)
        for _, block in row_chunks(x):
            total += block.sum(axis=0, dtype=np.float64)
            b = block.astype(np.float64)
            gram += b.T @ b
        n = len(x)
        mean = total / n
        cov = (gram - n * np.outer(mean, mean)) / max(n - 1, 1)
        values, vectors = np.linalg.eigh(cov)
        top = vectors[:, np.argsort(values)[::-1][: min(dims, d)]]
        top *= np.where(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])] < 0, -1.0, 1.0)
        if top.shape[1] < 2:
            top = np.hstack([top, np.zeros((d, 2 - top.shape[1]))])
        return cls(mean=mean.astype(np.float32), basis=top.astype(np.float32))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.mean) @ self.basis

    def transform_unit(self, x: np.ndarray) -> np.ndarray:
        """``transform`` of the L2-normalised rows of ``x``, without a normalised copy of them."""
        x = np.asarray(x, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        out = x @ self.basis
        out /= np.maximum(norms, 1e-12)[:, None]
        out -= self.mean @ self.basis
        return out


def projection_key(source_key: str, method: str, params: dict[str, Any]) -> str:
    """The cache key of a map; ``params`` as in its manifest (``ProjectionParams`` fields)."""
    return ProjectionParams(method=method, **params).cache_key(source_key)


def project(
    vectors: np.ndarray | Entry | str | Path,
    method: str = PROJECTION.method,
    *,
    seed: int = PROJECTION.seed,
    n_neighbors: int = PROJECTION.n_neighbors,
    min_dist: float = PROJECTION.min_dist,
    fit_sample: int = PROJECTION.fit_sample,
    cache: Cache | None = None,
    progress: ProgressCallback | None = None,
) -> ProjectionResult:
    """A cached 2-D map of ``vectors`` (an array, a cache entry, or a path to a ``.npy``).

    The key is the vectors' cache key when they come from the cache, else a full content hash
    of the array, plus every parameter that changes the result.
    """
    t0 = time.perf_counter()
    cache = Cache.or_default(cache)
    if isinstance(vectors, Entry):
        source_key, array = vectors.key, vectors.load()
    elif isinstance(vectors, (str, Path)):
        path = Path(vectors)
        if not path.is_file():
            raise ParallaxError(f"no vectors file at {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ParallaxError(f"cannot read vectors from {path}: {exc}") from exc
        manifest = path.parent / "manifest.json"
        source_key = path.parent.name if manifest.is_file() else hash_array(array)
    else:
        array = vectors
        source_key = hash_array(np.asanyarray(array))
    if method not in METHODS:
        raise ParallaxError(f"unknown projection method {method!r}: choose from {METHODS}")
    settings = ProjectionParams(method, seed, n_neighbors, min_dist, fit_sample)
    params = settings.key_material()
    key = settings.cache_key(source_key)

    def compute() -> tuple[np.ndarray, dict[str, Any]]:
        # ``array`` may be memory-mapped: the projection reads it in blocks, never whole.
        coords = compute_projection(array, settings, progress)
        manifest = {
            "source": source_key,
            "method": method,
            "params": params,
            "n": len(coords),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return coords, manifest

    memo = array_entry(cache, "projections", key, compute)
    entry = memo.value
    return ProjectionResult(
        method,
        int(entry.manifest["n"]),
        memo.cached,
        time.perf_counter() - t0,
        entry.array_path,
        key,
        params,
    )


def map_quality(
    vectors: np.ndarray, coords: np.ndarray, k: int = 10, sample: int = 2000, seed: int = 0
) -> dict[str, float]:
    """How far to trust a 2-D map, on a seeded sample of at most ``sample`` points.

    ``trustworthiness`` (scikit-learn; 1.0 = no false neighbours in 2-D) and ``knn_recall``:
    the mean fraction of each point's ``k`` nearest neighbours in the full space that are also
    among its ``k`` nearest in the map.
    """
    from sklearn.manifold import trustworthiness

    from engine.maps.knn import exact_knn

    n = len(vectors)
    if n < 3:  # trustworthiness needs k < n / 2 with k >= 1
        raise ParallaxError(f"map quality needs at least 3 items; this map has {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    x = _normalise(np.asarray(vectors)[rows])
    y = np.asarray(coords, dtype=np.float32)[rows]
    # scikit-learn's trustworthiness needs k < n / 2
    k = max(1, min(k, (len(rows) - 1) // 2))
    high, _ = exact_knn(x, k)
    low, _ = _euclid_knn(y, k)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(high, low, strict=True)]))
    trust = float(trustworthiness(x, y, n_neighbors=k, metric="cosine"))
    return {"trustworthiness": trust, "knn_recall": recall, "k": k, "sample": len(rows)}


def _euclid_knn(y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean k-NN in the 2-D map, self excluded."""
    import faiss

    from engine.maps.knn import drop_self

    index = faiss.IndexFlatL2(y.shape[1])
    index.add(np.ascontiguousarray(y, dtype=np.float32))
    d, idx = index.search(np.ascontiguousarray(y, dtype=np.float32), k + 1)
    idx, d = drop_self(idx, d)
    return idx[:, :k], d[:, :k]
