"""Findings: what is wrong or interesting in a dataset, seen by every model at once.

Five kinds, each computed per model from that model's vectors and then across the models:

* **label errors**: every model gives each item out-of-sample class probabilities (a vote of its
  ``label_k`` nearest other items: leave-one-out k-NN, which is k-fold with k = N); the models'
  probabilities are averaged and confident learning (per-class thresholds at the class's mean
  self-confidence, the confident joint, pruning by noise rate; Northcutt et al. 2021) picks the
  items whose label disagrees. The suggested label is the argmax of the averaged probabilities.
* **exact duplicates**: the same content (a hash of the decoded pixels, of the normalised text,
  or, for a dataset of vectors only, of every model's vector). Candidates are the pairs every
  model puts at cosine ~1; only a content match makes them exact.
* **near duplicates**: pairs whose distance is far below that model's own typical
  nearest-neighbour distance (a robust z-score of the log distance: median and MAD), so each
  model calibrates its own threshold. Combined: the models' z-scores averaged.
* **outliers**: the distance to the ``outlier_k``-th neighbour (larger than the small groups
  outliers come in, which a plain 1-NN density misses), robust z per model, averaged.
* **leaks**: exact or near duplicates whose rows differ in the split column.
* **clusters**: HDBSCAN (scikit-learn) on a PCA of each model's vectors, named by
  ``engine.analysis.cluster_names``.

``compute_findings`` works on arrays only (no dataset, no cache); ``engine.workspace.Workspace
.find`` gathers the vectors, labels and content hashes and caches the result.

Memory (issue 31): the vectors are memory-mapped and read a block of rows at a time
(``engine.store.chunks``; random rows, for pair cosines, gathered a file window at a time and
the window's pages released), so what is held per model is its k-NN lists (N x k int32 and
float32), its out-of-sample class probabilities (N x C float32), a few per-row vectors, and
while its graph is built the N x 64 PCA coordinates; plus blocks of ``_CHUNK`` rows and the
fit samples (LDA, clusters, PCA). Nothing is N x D, and the models' mean probabilities are
computed a block at a time (``AveragedProbabilities``), never held.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ParallaxError
from engine.params import FINDINGS, FindingsParams

if TYPE_CHECKING:
    from engine.store.progress import ProgressCallback

log = logging.getLogger(__name__)

MAD_SCALE = 1.4826  # MAD -> standard deviation of a normal distribution
_CHUNK = 65_536
_EPS = 1e-6  # smallest cosine distance told apart (float32 products of unit vectors)
EXACT_COSINE = 1.0 - 1e-4  # at or above: a candidate exact copy under this model
# The smallest spread of nearest-neighbour log distance ratios a model is granted: the
# shipped models on real sets measure 0.21 to 0.44 (so it changes nothing there); a Gaussian
# blob in 512 dimensions measures 0.07, and near-copy z-scores would flag ordinary neighbours.
DUP_MAD_FLOOR = 0.2
KINDS = ("label_errors", "duplicates", "outliers", "leaks", "clusters")


# -- the result ----------------------------------------------------------------------------------
@dataclass
class Findings:
    """Every finding on one dataset under ``models``; ``to_json`` is the CLI/HTTP contract."""

    n: int
    models: list[str]
    label_errors: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    outliers: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)
    clusters: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # columns, params, key, thresholds
    cached: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "models": list(self.models),
            "label_errors": self.label_errors,
            "duplicates": self.duplicates,
            "outliers": self.outliers,
            "leaks": self.leaks,
            "clusters": self.clusters,
            "per_model": self.per_model,
            **self.info,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], cached: bool = False) -> Findings:
        known = {"n", "models", *KINDS, "per_model"}
        return cls(
            n=int(data["n"]),
            models=list(data["models"]),
            label_errors=list(data["label_errors"]),
            duplicates=list(data["duplicates"]),
            outliers=list(data["outliers"]),
            leaks=list(data["leaks"]),
            clusters=dict(data["clusters"]),
            per_model=dict(data.get("per_model", {})),
            info={k: v for k, v in data.items() if k not in known},
            cached=cached,
        )

    def for_models(self, names: Sequence[str], keys: Sequence[str]) -> Findings:
        """These findings under the model names ``names`` (whose vectors keys are ``keys``), in
        that order: the cache key does not depend on the models' names or order (the same
        vectors are the same findings), so an entry computed as ``[B, A]`` or under other
        names answers ``[A, B]``. Matched by vectors key (``info["vectors"]``), else by
        position."""
        by_key = {str(v): k for k, v in (self.info.get("vectors") or {}).items()}
        old = [by_key.get(str(k)) for k in keys]
        if any(o is None or o not in self.models for o in old):
            if len(self.models) != len(names):
                raise ParallaxError("cached findings do not match these models")
            old = list(self.models)
        rename = dict(zip(old, names, strict=True))
        rank = {name: i for i, name in enumerate(names)}

        def who(models: Sequence[str]) -> list[str]:
            return sorted((rename[m] for m in models if m in rename), key=rank.__getitem__)

        def each(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**it, "models": who(it.get("models", []))} for it in items]

        info = dict(self.info)
        if "vectors" in info:
            info["vectors"] = {name: str(k) for name, k in zip(names, keys, strict=True)}
        return Findings(
            n=self.n,
            models=list(names),
            label_errors=each(self.label_errors),
            duplicates=each(self.duplicates),
            outliers=each(self.outliers),
            leaks=each(self.leaks),
            clusters={rename[o]: self.clusters[o] for o in old if o in self.clusters},
            per_model={rename[o]: self.per_model[o] for o in old if o in self.per_model},
            info=info,
            cached=self.cached,
            seconds=self.seconds,
        )

    def counts(self) -> dict[str, int]:
        return {
            "label_errors": len(self.label_errors),
            "duplicates": len(self.duplicates),
            "exact_duplicates": sum(1 for d in self.duplicates if d["exact"]),
            "outliers": sum(1 for o in self.outliers if o["models"]),
            "leaks": len(self.leaks),
            **{f"clusters {m}": len(c) for m, c in self.clusters.items()},
        }

    def rows_of(self, kind: str, index: int) -> list[int]:
        """The dataset rows of finding ``index`` of ``kind`` (for selecting them on maps)."""
        item = getattr(self, kind)[index]
        return [int(r) for r in item.get("rows", [item.get("row")])]


# -- robust statistics ---------------------------------------------------------------------------
def robust_z(values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """``(values - median) / (1.4826 MAD)`` of ``reference`` (default: the values)."""
    ref = np.asarray(values if reference is None else reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.zeros(np.shape(values))
    med = float(np.median(ref))
    mad = float(np.median(np.abs(ref - med))) * MAD_SCALE
    if mad <= 1e-12:
        mad = float(np.std(ref)) or 1.0
    return (np.asarray(values, dtype=np.float64) - med) / mad


def log_distance(cosines: np.ndarray) -> np.ndarray:
    return np.log(np.clip(1.0 - np.asarray(cosines, dtype=np.float64), _EPS, 2.0))


# -- one model's neighbour graph ------------------------------------------------------------------
class ModelVectors:
    """One model's vectors (memory-mapped is fine), their row norms and its k-NN graph."""

    def __init__(self, name: str, vectors: np.ndarray, params: FindingsParams) -> None:
        self.name = name
        self.raw = vectors
        n = len(vectors)
        self.norms = np.empty(n, dtype=np.float32)
        from engine.store.chunks import row_chunks

        for s, block in row_chunks(vectors, rows=_CHUNK):
            self.norms[s : s + len(block)] = np.sqrt(np.einsum("ij,ij->i", block, block))
        if not np.all(np.isfinite(self.norms)):
            raise ParallaxError(f"{name}: the vectors hold non-finite values")
        zero = self.norms <= 0
        if zero.any():  # rows the model failed to embed: they stay zero (cosine 0 to all)
            log.warning("%s: %d rows have zero vectors", name, int(zero.sum()))
            self.norms[zero] = 1.0
        self.idx, self.sims = self._graph(params)

    def unit_block(self, start: int, stop: int) -> np.ndarray:
        from engine.store.chunks import release

        block = np.array(self.raw[start:stop], dtype=np.float32)
        release(self.raw, start, stop)  # this process keeps no pages of a memory-mapped file
        block /= self.norms[start:stop, None]
        return block

    def unit_rows(self, rows: np.ndarray) -> np.ndarray:
        """The unit vectors of ``rows`` (any order), read a block of the file at a time
        (``gather_rows``): this process keeps no more than one block of a mapped file's pages."""
        from engine.store.chunks import gather_rows

        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")  # sorted reads of a memory-mapped file
        out = np.empty((len(rows), self.raw.shape[1]), dtype=np.float32)
        out[order] = gather_rows(self.raw, rows[order])
        out /= self.norms[rows, None]
        return out

    def pair_cosines(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosines of rows ``a[i]`` and ``b[i]`` on the full vectors, a block of pairs at a
        time. Each block's rows are gathered a window of the file at a time and the window's
        pages released (``gather_rows``): random rows of a mapped file otherwise stay mapped,
        and the process grows by the whole file (1M x 512: +2 GB per model). The price is
        mapping the pages again for every block: 1M random pairs of a 2 GB file took 7.6 s
        released vs 3.5 s kept mapped (measured here), hence blocks as large as one
        ``CHUNK_BYTES`` a side. A row's cosine does not depend on its block."""
        out = np.empty(len(a), dtype=np.float32)
        for s in range(0, len(a), self._pair_rows):
            ua = self.unit_rows(a[s : s + self._pair_rows])
            ub = self.unit_rows(b[s : s + self._pair_rows])
            out[s : s + len(ua)] = np.einsum("ij,ij->i", ua, ub)
        return out

    @property
    def _pair_rows(self) -> int:
        """Pairs a block: each side's unit rows within one ``CHUNK_BYTES`` of float32."""
        from engine.store.chunks import CHUNK_BYTES

        return int(min(_CHUNK, max(4096, CHUNK_BYTES // (4 * self.raw.shape[1]))))

    def _graph(self, params: FindingsParams) -> tuple[np.ndarray, np.ndarray]:
        from engine.maps.knn import exact_knn

        n = len(self.raw)
        k = min(params.k, n - 1)
        if n <= params.exact_below:
            unit = self.unit_block(0, n)
            idx, sims = exact_knn(unit, k, exclude_self=True)
            return idx.astype(np.int32), sims.astype(np.float32)
        return self._approximate_graph(k, params)

    def _approximate_graph(self, k: int, params: FindingsParams) -> tuple[np.ndarray, np.ndarray]:
        """Past ``exact_below`` rows: an IVF index on a 64-d PCA of the unit vectors (the
        maps' own reduction); the nearest few are re-scored on the full vectors."""
        from engine.maps.project import PcaSpace

        n = len(self.raw)
        rng = np.random.default_rng(params.seed)
        sample = np.sort(rng.choice(n, size=min(n, 50_000), replace=False))
        pca = PcaSpace.fit(self.unit_rows(sample), min(64, self.raw.shape[1]))
        space = np.empty((n, pca.dims), dtype=np.float32)
        for s in range(0, n, _CHUNK):
            block = pca.transform(self.unit_block(s, min(n, s + _CHUNK)))
            block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            space[s : s + len(block)] = block
        idx, sims = blocked_knn(space, k, seed=params.seed)
        del space
        # The nearest few decide duplicates: their cosines on the full vectors.
        head = min(3, k)
        a = np.repeat(np.arange(n), head)
        b = idx[:, :head].reshape(-1)
        ok = b >= 0
        full = np.full(len(a), -1.0, dtype=np.float32)
        full[ok] = self.pair_cosines(a[ok], b[ok])
        sims[:, :head] = full.reshape(n, head)
        return idx, sims


@contextmanager
def _faiss_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP threads set to ``n`` meanwhile. Many small searches run faster as one
    thread each from a pool than as OpenMP teams: on a shared machine a team's threads spin at
    every barrier waiting for a core (measured here: 2 threads 2x slower than 1 under load)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


COARSE_DIMS = 16  # leading PCA dims the cells are drawn in (the search uses them all)


def blocked_knn(
    space: np.ndarray, k: int, seed: int = 0, probe: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k-NN (self excluded) of unit rows by blocks: the rows are split into
    k-means cells (faiss) drawn in the leading ``COARSE_DIMS`` coordinates (``space`` is a PCA:
    they hold the coarse structure, and cells cost a quarter as much to fit and assign), and
    each cell's rows are searched exactly against the rows of the ``probe`` cells nearest to
    its centre, one BLAS product per cell, cells spread over a thread per core. Every cell's
    search is a dense matrix product instead of one scan per query, which is what makes 1M
    rows fit in minutes on two cores."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import faiss

    n, d = space.shape
    cells = max(1, min(8192, n // 256))  # ~256 rows a cell: linear in n
    coarse = np.ascontiguousarray(space[:, : min(COARSE_DIMS, d)])
    rng = np.random.default_rng(seed)
    train = coarse[rng.choice(n, size=min(n, cells * 24), replace=False)]
    km = faiss.Kmeans(
        coarse.shape[1], cells, niter=6, seed=seed, verbose=False, min_points_per_centroid=16
    )
    km.train(np.ascontiguousarray(train))
    _, assign = km.index.search(coarse, 1)
    del coarse
    assign = assign[:, 0]
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(cells + 1))
    _, near_cells = km.index.search(km.centroids, min(probe, cells))
    idx = np.full((n, k), -1, dtype=np.int32)
    sims = np.full((n, k), -1.0, dtype=np.float32)

    def search(c: int) -> None:
        rows = order[bounds[c] : bounds[c + 1]]
        if len(rows) == 0:
            return
        base = np.concatenate([order[bounds[j] : bounds[j + 1]] for j in near_cells[c]])
        kk = min(k + 1, len(base))
        s, i = faiss.knn(
            np.ascontiguousarray(space[rows]),
            np.ascontiguousarray(space[base]),
            kk,
            metric=faiss.METRIC_INNER_PRODUCT,
        )
        found = base[i]
        own = found == rows[:, None]
        missing = ~own.any(axis=1)
        own[missing, kk - 1] = True  # drop the last column where self was not returned
        keep = ~own
        idx[rows, : kk - 1] = found[keep].reshape(len(rows), kk - 1)
        sims[rows, : kk - 1] = s[keep].reshape(len(rows), kk - 1)

    workers = max(1, min(8, os.cpu_count() or 1))
    with _faiss_threads(1), ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(search, range(cells)):  # rows of different cells never overlap
            pass
    return idx, sims


# -- outliers -----------------------------------------------------------------------------------
def lof_scores(idx: np.ndarray, sims: np.ndarray, k: int) -> np.ndarray:
    """Log local outlier factor over ``k`` neighbours (Breunig et al. 2000): how much sparser
    a row's neighbourhood is than its neighbours' own. With ``k`` above the size of the small
    groups outliers come in, a tight group far from the rest still stands out. Computed a
    block of rows at a time (two passes: densities, then their ratios)."""
    k = min(k, idx.shape[1])
    n = len(idx)

    def block(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nb = idx[s : s + _CHUNK, :k]
        d = np.clip(1.0 - sims[s : s + _CHUNK, :k].astype(np.float64), _EPS, 2.0)
        missing = nb < 0
        return np.where(missing, np.arange(s, s + len(nb))[:, None], nb), d, missing

    kdist = np.clip(1.0 - sims[:, k - 1].astype(np.float64), _EPS, 2.0)
    lrd = np.empty(n)
    for s in range(0, n, _CHUNK):
        nb, d, missing = block(s)
        reach = np.where(missing, np.nan, np.maximum(d, kdist[nb]))
        lrd[s : s + len(nb)] = 1.0 / np.nanmean(reach, axis=1)
    out = np.empty(n)
    for s in range(0, n, _CHUNK):
        nb, _, missing = block(s)
        neigh = np.where(missing, np.nan, lrd[nb])
        out[s : s + len(nb)] = np.log(np.nanmean(neigh, axis=1) / lrd[s : s + len(nb)])
    return out


# -- label errors --------------------------------------------------------------------------------
def knn_probabilities(
    idx: np.ndarray,
    sims: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    k: int,
    add_to: np.ndarray | None = None,
) -> np.ndarray:
    """Leave-one-out class probabilities: a similarity-weighted vote of the ``k`` nearest other
    labelled items, smoothed towards the class frequencies (an item with few labelled
    neighbours is not certain of anything). A block of rows at a time. ``add_to``: an N x C
    float32 array the probabilities are added to (in float32, as ``p + add_to`` would be) and
    which is returned: no second N x C."""
    n = len(idx)
    counts = np.bincount(y[y >= 0], minlength=n_classes).astype(np.float64)
    prior = counts / max(counts.sum(), 1.0)
    alpha = 1.0  # one pseudo-neighbour's weight, spread by class frequency
    out = np.empty((n, n_classes), dtype=np.float32) if add_to is None else add_to
    for s in range(0, n, _CHUNK):
        nb = idx[s : s + _CHUNK, :k]
        m = len(nb)
        valid = nb >= 0
        lab = np.where(valid, y[np.where(valid, nb, 0)], -1)
        w = np.clip(sims[s : s + m, :k].astype(np.float32), 0.0, None) + 1e-3
        w = np.where(lab >= 0, w, 0.0)
        cells = (np.arange(m)[:, None] * n_classes + np.maximum(lab, 0)).reshape(-1)
        probs = np.bincount(cells, weights=w.reshape(-1), minlength=m * n_classes)
        probs = probs.reshape(m, n_classes)
        total = w.sum(axis=1, keepdims=True)
        mean_w = np.where(total > 0, total / np.maximum(valid.sum(axis=1, keepdims=True), 1), 1.0)
        p = (probs + alpha * mean_w * prior) / (total + alpha * mean_w)
        if add_to is None:
            out[s : s + m] = p
        else:
            out[s : s + m] += p.astype(np.float32)
    return out


LDA_SAMPLE = 50_000  # labelled rows the discriminant is fitted on; every other row is predicted


def kfold_lda_probabilities(
    vec: ModelVectors,
    y: np.ndarray,
    n_classes: int,
    folds: int = 5,
    seed: int = 0,
    sample: int = LDA_SAMPLE,
) -> np.ndarray:
    """Out-of-sample class probabilities from linear discriminant analysis, ``folds``-fold.

    Closed form (class means and one pooled covariance, shrunk towards a scaled identity by the
    Ledoit-Wolf estimate), so one pass over the vectors gives every fold's statistics: a fold's
    model is the totals minus that fold's share. A linear read-out finds a class that the raw
    distances bury under another attribute (colour over shape), which k-NN cannot.

    Class means and a pooled covariance need no more than a sample: past ``sample`` labelled
    rows they are fitted on a seeded sample (its rows get the model of the other folds), and
    every other row gets the model of the whole sample, which never saw it either. The
    products are float32 blocks summed in float64; the prediction is one pass over the vectors
    in blocks, in float32."""
    from sklearn.covariance import ledoit_wolf_shrinkage

    n, d = vec.raw.shape
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, folds, n)
    labelled = np.flatnonzero(y >= 0)
    fit = labelled
    if len(labelled) > sample:
        fit = np.sort(np.random.default_rng(seed + 1).choice(labelled, sample, replace=False))
    in_fit = np.zeros(n, dtype=bool)
    in_fit[fit] = True
    sums = np.zeros((folds, n_classes, d))
    counts = np.zeros((folds, n_classes))
    scatter = np.zeros((folds, d, d))
    eye = np.eye(n_classes, dtype=np.float32)
    for s in range(0, len(fit), _CHUNK):
        rows = fit[s : s + _CHUNK]
        contiguous = len(rows) and rows[-1] - rows[0] == len(rows) - 1
        x = vec.unit_block(rows[0], rows[-1] + 1) if contiguous else vec.unit_rows(rows)
        fb, yb = fold[rows], y[rows]
        for f in range(folds):
            sel = fb == f
            xs = x[sel]
            scatter[f] += xs.T @ xs
            sums[f] += eye[yb[sel]].T @ xs
            counts[f] += np.bincount(yb[sel], minlength=n_classes)
    lw = fit
    if len(lw) > 20_000:
        lw = np.sort(rng.choice(lw, 20_000, replace=False))
    xs = vec.unit_rows(lw).astype(np.float64)
    means_all = sums.sum(0) / np.maximum(counts.sum(0), 1)[:, None]
    shrink = float(ledoit_wolf_shrinkage(xs - means_all[y[lw]]))

    def model(drop: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        cnt = counts.sum(0) - (counts[drop] if drop is not None else 0)
        tot = sums.sum(0) - (sums[drop] if drop is not None else 0)
        m = cnt.sum()
        if m <= n_classes:
            return None
        means = tot / np.maximum(cnt, 1)[:, None]
        within = (scatter.sum(0) - (scatter[drop] if drop is not None else 0)) - (
            means.T * cnt
        ) @ means
        cov = within / max(m - n_classes, 1.0)
        mu = np.trace(cov) / d
        cov = (1.0 - shrink) * cov + shrink * mu * np.eye(d)
        coef = np.linalg.solve(cov, means.T)  # d x C
        prior = np.log(np.maximum(cnt, 1e-9) / m)
        bias = -0.5 * np.einsum("cd,dc->c", means, coef) + np.where(cnt > 0, prior, -np.inf)
        return coef.astype(np.float32), bias.astype(np.float32)

    models = [model(f) for f in range(folds)] + [model(None)]
    probs = np.full((n, n_classes), 1.0 / n_classes, dtype=np.float32)
    # A row of the fitted set gets its fold's model; any other row the whole set's.
    which = np.where(in_fit, fold, folds)
    for s in range(0, n, _CHUNK):
        x = vec.unit_block(s, min(n, s + _CHUNK))
        wb = which[s : s + len(x)]
        for f, fitted in enumerate(models):
            sel = np.flatnonzero(wb == f)
            if fitted is None or len(sel) == 0:
                continue
            logits = x[sel] @ fitted[0] + fitted[1]
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            probs[s + sel] = e / e.sum(axis=1, keepdims=True)
    return probs


class AveragedProbabilities:
    """The models' class probabilities averaged with ``weights`` (summing to 1), computed for
    the rows asked (``mean[rows]``: a slice or row numbers) and never held whole. Whole, the
    mean is N x C float64, and a tensor product of the stacked models first makes a float64
    copy of every model's N x C: at 1M rows, 50 classes and 2 models, 1.6 GB at once. The sum
    is elementwise in float64 (no BLAS), so a row's value does not depend on the block it is
    computed in."""

    def __init__(self, probs: Sequence[np.ndarray], weights: np.ndarray) -> None:
        self.probs = list(probs)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.shape = self.probs[0].shape
        self.dtype = np.dtype(np.float64)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        out = self.weights[0] * self.probs[0][rows].astype(np.float64)
        for w, p in zip(self.weights[1:], self.probs[1:], strict=True):
            out += w * p[rows].astype(np.float64)
        return out


ProbabilityRows = np.ndarray | AveragedProbabilities  # N x C, read a block of rows at a time


def row_argmax(probs: ProbabilityRows) -> np.ndarray:
    """Each row's most probable class, a block of rows at a time."""
    n = len(probs)
    out = np.empty(n, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        out[s : s + _CHUNK] = probs[s : s + _CHUNK].argmax(axis=1)
    return out


def _columns(probs: ProbabilityRows, rows: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    """``probs[rows][:, cols]``, a block of rows at a time."""
    out = np.empty((len(rows), len(cols)), dtype=probs.dtype)
    for s in range(0, len(rows), _CHUNK):
        out[s : s + _CHUNK] = probs[rows[s : s + _CHUNK]][:, list(cols)]
    return out


def confident_learning(probs: ProbabilityRows, y: np.ndarray) -> np.ndarray:
    """Rows whose given label ``y`` is likely wrong under out-of-sample ``probs`` (confident
    learning, pruned by noise rate). Unlabelled rows (``y < 0``) are never flagged.

    ``probs`` is read a block of rows at a time (an array, or ``AveragedProbabilities``
    computed on demand): N-sized state is a few vectors, never another N x C. Two passes, then
    one gather per class of its members' columns for the pruning."""
    n, c = probs.shape
    labelled = y >= 0
    # Pass 1: each labelled row's probability of its own label; a class's threshold is the
    # mean over its members (the same values, in the same order, as a column of ``probs``).
    own = np.zeros(n, dtype=probs.dtype)
    for s in range(0, n, _CHUNK):
        p, yb = probs[s : s + _CHUNK], y[s : s + _CHUNK]
        lab = np.flatnonzero(yb >= 0)
        own[s + lab] = p[lab, yb[lab]]
    thresholds = np.ones(c)
    for j in range(c):
        members = labelled & (y == j)
        if members.any():
            thresholds[j] = float(own[members].mean())
    del own
    # Pass 2: the confident joint, and each row's best class.
    joint = np.zeros((c, c), dtype=np.float64)
    best = np.empty(n, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        p, yb = probs[s : s + _CHUNK], y[s : s + _CHUNK]
        above = p >= thresholds[None, :] - 1e-9
        masked = np.where(above, p, -1.0)
        confident = np.where(above.any(axis=1), masked.argmax(axis=1), -1)
        ok = (yb >= 0) & (confident >= 0)
        np.add.at(joint, (yb[ok], confident[ok]), 1.0)
        best[s : s + len(p)] = p.argmax(axis=1)
    # Calibrate each row of the joint to its class's size, as confident learning does.
    class_counts = np.bincount(y[labelled], minlength=c).astype(np.float64)
    row_sums = joint.sum(axis=1, keepdims=True)
    joint = np.where(row_sums > 0, joint / np.maximum(row_sums, 1) * class_counts[:, None], 0.0)
    flagged = np.zeros(n, dtype=bool)
    for given in range(c):
        members = np.flatnonzero(labelled & (y == given))
        counts = {o: round(float(joint[given, o])) for o in range(c) if o != given}
        others = [o for o, count in counts.items() if count > 0]
        if members.size == 0 or not others:
            continue
        cols = _columns(probs, members, [given, *others])
        for i, other in enumerate(others, start=1):
            margin = cols[:, i] - cols[:, 0]
            take = members[np.argsort(-margin, kind="stable")[: counts[other]]]
            flagged[take] = True
    # A row whose given label is still its best class is not an error, whatever its margin.
    flagged &= best != np.where(labelled, y, -1)
    return flagged


# -- duplicates ----------------------------------------------------------------------------------
class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[int]]:
        out: dict[int, list[int]] = {}
        for a in self.parent:
            out.setdefault(self.find(a), []).append(a)
        return sorted((sorted(g) for g in out.values() if len(g) > 1), key=lambda g: g[0])


def _pairs_from(idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unique (a < b) pairs of the graph's edges where ``mask`` holds, as an M x 2 array."""
    rows, cols = np.nonzero(mask)
    a, b = rows.astype(np.int64), idx[rows, cols].astype(np.int64)
    ok = b >= 0
    pairs = np.stack([np.minimum(a[ok], b[ok]), np.maximum(a[ok], b[ok])], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return _unique_pairs(pairs)


def _unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Sorted unique rows of an M x 2 array of row numbers (one int64 code a pair: a 1-d sort,
    several times faster than ``np.unique(axis=0)``)."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    pairs = pairs.astype(np.int64)
    width = int(pairs.max()) + 1
    codes = np.unique(pairs[:, 0] * width + pairs[:, 1])
    return np.stack([codes // width, codes % width], axis=1)


# -- the computation -----------------------------------------------------------------------------
class _Model:
    """One model's graph and its own calibration of "near": a pair's log distance against the
    local scale (the log distance of each row to its ``dup_scale_rank``-th neighbour), as a
    robust z over every row's nearest-neighbour ratio. A near copy is much closer than the
    row's other neighbours; a dense region's ordinary neighbours are not."""

    def __init__(self, name: str, vec: ModelVectors, params: FindingsParams) -> None:
        self.name = name
        self.vec = vec
        head = min(max(params.dup_scale_rank, 5), vec.sims.shape[1])
        ld = log_distance(vec.sims[:, :head])  # near copies sit among the first neighbours
        r = min(params.dup_scale_rank, head) - 1
        self.scale = ld[:, r]
        ref = ld[:, 0] - self.scale
        self.med = float(np.median(ref))
        mad = float(np.median(np.abs(ref - self.med))) * MAD_SCALE
        # Floored: where every row's nearest neighbours are almost equally far (a blob in
        # many dimensions), a pair a few percent closer than the row's third is no copy.
        self.mad = max(mad, DUP_MAD_FLOOR)
        self.dup_z_graph = (-((ld - self.scale[:, None]) - self.med) / self.mad).astype(np.float32)

    def pair_z(self, pairs: np.ndarray) -> np.ndarray:
        ld = log_distance(self.vec.pair_cosines(pairs[:, 0], pairs[:, 1]))
        scale = np.minimum(self.scale[pairs[:, 0]], self.scale[pairs[:, 1]])
        return -((ld - scale) - self.med) / self.mad


def compute_findings(
    vectors: Mapping[str, np.ndarray],
    *,
    labels: Sequence[str | None] | None = None,
    splits: Sequence[Any] | None = None,
    texts: Sequence[str | None] | None = None,
    modalities: Mapping[str, str] | None = None,
    content_key: Callable[[np.ndarray], list[str | None]] | None = None,
    params: FindingsParams = FINDINGS,
    progress: ProgressCallback | None = None,
) -> Findings:
    """Every kind of finding from each model's ``vectors`` (name -> N x D, same rows).

    ``labels``: one per row (None: unlabelled). ``splits``: the column whose values must not
    share duplicates (leaks). ``texts``: for naming clusters (a model whose ``modalities``
    entry is "image" names them by labels first). ``content_key(rows)``: a content
    hash per row (None: unknown) confirming exact copies among candidate rows; without it the
    vectors themselves are compared (a dataset of vectors only).
    """
    from engine.analysis.cluster_names import cluster_model
    from engine.store.progress import ProgressTracker

    names = list(vectors)
    if not names:
        raise ParallaxError("findings need at least one model")
    n = len(vectors[names[0]])
    for name in names:
        if len(vectors[name]) != n:
            raise ParallaxError(f"{name} has {len(vectors[name])} rows, {names[0]} has {n}")
    if n < 3:
        raise ParallaxError(f"findings need at least 3 items, the dataset has {n}")
    tracker = ProgressTracker("findings", 3 * len(names) + 3, progress)

    models: list[_Model] = []
    for name in names:
        vec = ModelVectors(name, vectors[name], params)
        models.append(_Model(name, vec, params))
        tracker.advance(1)

    out = Findings(n=n, models=names)
    out.per_model = {m.name: {} for m in models}

    exact_groups = _exact_groups(models, content_key, n)
    exact_pairs = {
        (g[i], g[j]) for g in exact_groups for i in range(len(g)) for j in range(i + 1, len(g))
    }
    tracker.advance(1)

    near = _near_duplicates(models, exact_pairs, params, out)
    tracker.advance(1)
    out.duplicates = [{"rows": g, "exact": True, "models": list(names)} for g in exact_groups]
    out.duplicates += near
    lone = out.info.pop("_lone_edges", {})
    out.leaks = _leaks(out.duplicates, splits, near_edges=out.info.pop("_edges", {}))
    if splits is not None:
        for (a, b), ms in lone.items():
            if _present(splits[a]) and _present(splits[b]) and str(splits[a]) != str(splits[b]):
                leak = {"rows": [a, b], "splits": [str(splits[a]), str(splits[b])]}
                out.leaks.append({**leak, "models": ms, "exact": False})

    outlier_z = _outliers(models, params, out)
    flagged_outliers = outlier_z >= params.outlier_z
    tracker.advance(len(names))

    if labels is not None:
        out.label_errors = _label_errors(models, labels, flagged_outliers, params, out)
    tracker.advance(len(names))

    for m in models:
        image = (modalities or {}).get(m.name) == "image" and labels is not None
        out.clusters[m.name] = cluster_model(
            m.vec, labels=labels, texts=None if image else texts, params=params
        )
    tracker.advance(1)
    return out


def _exact_groups(
    models: list[_Model], content_key: Callable[[np.ndarray], list[str | None]] | None, n: int
) -> list[list[int]]:
    """Groups of rows with the same content: candidates at cosine ~1 under every model, then
    confirmed by a content hash (or by identical vectors when there is no content)."""
    candidate = None
    for m in models:
        mask = m.vec.sims >= EXACT_COSINE
        pairs = {tuple(p) for p in _pairs_from(m.vec.idx, mask).tolist()}
        candidate = pairs if candidate is None else candidate & pairs
    if not candidate:
        return []
    pairs = np.array(sorted(candidate), dtype=np.int64)
    rows = np.unique(pairs)
    if content_key is not None:
        keys = dict(zip(rows.tolist(), content_key(rows), strict=True))
        same = [keys[a] is not None and keys[a] == keys[b] for a, b in pairs.tolist()]
    else:
        same = np.ones(len(pairs), dtype=bool)
        for m in models:  # identical vectors under every model
            ua, ub = m.vec.unit_rows(pairs[:, 0]), m.vec.unit_rows(pairs[:, 1])
            same &= np.all(ua == ub, axis=1)
    uf = UnionFind()
    for (a, b), s in zip(pairs.tolist(), same, strict=True):
        if s:
            uf.union(a, b)
    return uf.groups()


def _near_duplicates(
    models: list[_Model],
    exact_pairs: set[tuple[int, int]],
    params: FindingsParams,
    out: Findings,
) -> list[dict[str, Any]]:
    """Groups of rows that are near copies, with the models that see each group."""
    # A pair's z under a model is at most its z in that model's graph (the pair's scale is the
    # smaller of its rows'), and a mean of z-scores at least dup_z_combined needs one model at
    # or above it: the candidates are the graph's pairs there, less a margin for the
    # approximate graph.
    loose = min(params.dup_z, params.dup_z_combined) - 0.25
    cand: list[np.ndarray] = []
    for m in models:
        head = m.dup_z_graph.shape[1]
        cand.append(_pairs_from(m.vec.idx[:, :head], m.dup_z_graph >= loose))
    pairs = _unique_pairs(np.concatenate(cand)) if cand else np.zeros((0, 2), np.int64)
    if exact_pairs and len(pairs):
        # One int64 code a pair, not a Python tuple a candidate (millions at 1M rows).
        known = np.array(sorted(exact_pairs), dtype=np.int64).reshape(-1, 2)
        width = int(max(pairs.max(), known.max())) + 1
        code = pairs[:, 0] * width + pairs[:, 1]
        pairs = pairs[~np.isin(code, known[:, 0] * width + known[:, 1])]
    if len(pairs) == 0:
        for m in models:
            out.per_model[m.name]["duplicates"] = []
        return []
    zs = np.stack([m.pair_z(pairs) for m in models], axis=1)
    seen = zs >= params.dup_z
    combined = zs.mean(axis=1) >= params.dup_z_combined
    names = [m.name for m in models]
    for j, m in enumerate(models):
        uf = UnionFind()
        for a, b in pairs[seen[:, j]].tolist():
            uf.union(a, b)
        out.per_model[m.name]["duplicates"] = uf.groups()
    uf = UnionFind()
    edges: dict[tuple[int, int], list[str]] = {}
    for (a, b), row_seen in zip(pairs[combined].tolist(), seen[combined], strict=True):
        uf.union(a, b)
        edges[(a, b)] = [names[j] for j in np.flatnonzero(row_seen)]
    out.info["_edges"] = edges
    # Pairs one model alone sees: not a combined duplicate, but a leak candidate all the same
    # (a leak missed costs more than one checked for nothing).
    lone = seen.any(axis=1) & ~combined
    out.info["_lone_edges"] = {
        (a, b): [names[j] for j in np.flatnonzero(row_seen)]
        for (a, b), row_seen in zip(pairs[lone].tolist(), seen[lone], strict=True)
    }
    groups = []
    for g in uf.groups():
        members = set(g)
        who = sorted(
            {x for (a, b), ms in edges.items() if a in members for x in ms}, key=names.index
        )
        groups.append({"rows": g, "exact": False, "models": who})
    return groups


def _leaks(
    duplicates: list[dict[str, Any]],
    splits: Sequence[Any] | None,
    near_edges: Mapping[tuple[int, int], list[str]],
) -> list[dict[str, Any]]:
    """Pairs of duplicates whose split values differ (exact groups: every pair; near groups:
    the pairs the models linked)."""
    if splits is None:
        return []
    out = []
    for d in duplicates:
        rows = d["rows"]
        if d["exact"]:
            pairs = [(rows[i], rows[j]) for i in range(len(rows)) for j in range(i + 1, len(rows))]
            who = {p: d["models"] for p in pairs}
        else:
            members = set(rows)
            who = {p: ms for p, ms in near_edges.items() if p[0] in members}
        for (a, b), ms in who.items():
            sa, sb = splits[a], splits[b]
            if _present(sa) and _present(sb) and str(sa) != str(sb):
                out.append(
                    {
                        "rows": [a, b],
                        "splits": [str(sa), str(sb)],
                        "models": list(ms),
                        "exact": d["exact"],
                    }
                )
    return out


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _outliers(models: list[_Model], params: FindingsParams, out: Findings) -> np.ndarray:
    """Combined robust z of every row's outlier score; the ranked list goes into ``out``."""
    zs = []
    for m in models:
        z = robust_z(lof_scores(m.vec.idx, m.vec.sims, params.outlier_k))
        zs.append(z)
        flagged = np.flatnonzero(z >= params.outlier_z)
        out.per_model[m.name]["outliers"] = flagged[np.argsort(-z[flagged])].tolist()
    z_all = np.stack(zs, axis=1)
    combined = z_all.mean(axis=1)
    n = len(combined)
    listed = max(int((combined >= params.outlier_z).sum()), min(n, max(100, math.ceil(0.05 * n))))
    listed = min(listed, params.max_listed, n)
    top = np.argsort(-combined, kind="stable")[:listed]
    names = [m.name for m in models]
    out.outliers = [
        {
            "row": int(r),
            "score": round(float(combined[r]), 4),
            "models": [names[j] for j in np.flatnonzero(z_all[r] >= params.outlier_z)],
        }
        for r in top
    ]
    return combined


def _label_errors(
    models: list[_Model],
    labels: Sequence[str | None],
    outlier: np.ndarray,
    params: FindingsParams,
    out: Findings,
) -> list[dict[str, Any]]:
    classes = sorted({str(x) for x in labels if x is not None})
    if len(classes) < 2:
        return []
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(x)] if x is not None else -1 for x in labels], dtype=np.int64)
    probs = []
    flags = []
    weights = []
    chance = 1.0 / len(classes)
    labelled = y >= 0
    for m in models:
        # Two out-of-sample classifiers on this model's vectors: the neighbours' vote and a
        # linear read-out; their mean is the model's probabilities (in place: one N x C).
        p = kfold_lda_probabilities(m.vec, y, len(classes), seed=params.seed)
        knn_probabilities(m.vec.idx, m.vec.sims, y, len(classes), params.label_k, add_to=p)
        p *= 0.5
        probs.append(p)
        f = confident_learning(p, y) & ~outlier
        flags.append(f)
        out.per_model[m.name]["label_errors"] = np.flatnonzero(f).tolist()
        acc = float((row_argmax(p)[labelled] == y[labelled]).mean())
        out.per_model[m.name]["label_accuracy"] = round(acc, 4)
        # A model that cannot tell the classes apart (accuracy near chance) gets no vote.
        weights.append(max(0.0, (acc - chance) / (1.0 - chance)) ** 2)
    w = np.asarray(weights)
    if w.sum() <= 0:
        w = np.ones(len(models))
    mean = AveragedProbabilities(probs, w / w.sum())
    flagged = confident_learning(mean, y) & ~outlier
    rows = np.flatnonzero(flagged)
    found = mean[rows]
    score = 1.0 - found[np.arange(len(rows)), y[rows]]
    order = np.argsort(-score, kind="stable")
    names = [m.name for m in models]
    return [
        {
            "row": int(rows[i]),
            "label": classes[y[rows[i]]],
            "suggested": classes[int(found[i].argmax())],
            "score": round(float(score[i]), 4),
            "models": [names[j] for j in range(len(models)) if flags[j][rows[i]]],
        }
        for i in order
    ]


# -- findings from elsewhere (a bundle) ----------------------------------------------------------
_MAX_TEXT = 500  # a label, a cluster name, a split value: capped


def checked_findings(data: Any, n: int, models: Sequence[str]) -> Findings:
    """A findings JSON read from outside (a bundle: visitor input) as ``Findings``, every field
    type-checked and every row inside ``[0, n)``; ``ParallaxError`` (one line) otherwise. Rows
    are summed over every list, so a file cannot claim more than a few times ``n`` of them."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ParallaxError(f"malformed findings ({what})")

    def text(v: Any, what: str) -> str:
        need(isinstance(v, str), what)
        return v[:_MAX_TEXT]

    budget = [8 * n + 1000]  # row references, all lists together

    def rows(v: Any, what: str) -> list[int]:
        need(isinstance(v, list), what)
        budget[0] -= len(v)
        need(budget[0] >= 0, "too many rows")
        need(all(type(r) is int and 0 <= r < n for r in v), what)
        return list(v)

    def who(v: Any) -> list[str]:
        need(isinstance(v, list) and all(m in models for m in v), "models of a finding")
        return list(v)

    def score(v: Any) -> float:
        need(isinstance(v, int | float) and not isinstance(v, bool), "score")
        need(math.isfinite(float(v)), "score")
        return float(v)

    need(isinstance(data, dict), "not an object")
    need(data.get("n") == n, "n")
    need(list(data.get("models", [])) == list(models), "models")
    for kind in ("label_errors", "duplicates", "outliers", "leaks"):
        need(isinstance(data.get(kind), list), kind)
        need(all(isinstance(it, dict) for it in data[kind]), kind)
    label_errors = [
        {
            "row": rows([e.get("row")], "label error row")[0],
            "label": text(e.get("label"), "label"),
            "suggested": text(e.get("suggested"), "suggested label"),
            "score": score(e.get("score")),
            "models": who(e.get("models")),
        }
        for e in data["label_errors"]
    ]
    duplicates = []
    for d in data["duplicates"]:
        need(isinstance(d.get("exact"), bool), "exact")
        group = {"rows": rows(d.get("rows"), "duplicate rows"), "exact": d["exact"]}
        duplicates.append({**group, "models": who(d.get("models"))})
    outliers = [
        {
            "row": rows([o.get("row")], "outlier row")[0],
            "score": score(o.get("score")),
            "models": who(o.get("models")),
        }
        for o in data["outliers"]
    ]
    leaks = []
    for leak in data["leaks"]:
        pair = rows(leak.get("rows"), "leak rows")
        need(len(pair) == 2, "leak rows")
        splits = leak.get("splits")
        need(isinstance(splits, list) and len(splits) == 2, "leak splits")
        item = {"rows": pair, "splits": [text(x, "split") for x in splits]}
        item["models"] = who(leak.get("models"))
        if isinstance(leak.get("exact"), bool):
            item["exact"] = leak["exact"]
        leaks.append(item)
    clusters = data.get("clusters")
    need(isinstance(clusters, dict) and set(clusters) <= set(models), "clusters")
    checked_clusters = {}
    for model, found in clusters.items():
        need(isinstance(found, list) and all(isinstance(c, dict) for c in found), "clusters")
        checked_clusters[model] = [
            {"name": text(c.get("name"), "cluster name"), "rows": rows(c.get("rows"), "cluster")}
            for c in found
        ]
    per_model: dict[str, dict[str, Any]] = {}
    raw = data.get("per_model", {})
    need(isinstance(raw, dict) and set(raw) <= set(models), "per_model")
    for model, entry in raw.items():
        need(isinstance(entry, dict), "per_model")
        mine: dict[str, Any] = {}
        for kind in ("label_errors", "outliers"):
            if kind in entry:
                mine[kind] = rows(entry[kind], f"per_model {kind}")
        if "duplicates" in entry:
            need(isinstance(entry["duplicates"], list), "per_model duplicates")
            mine["duplicates"] = [rows(g, "per_model duplicates") for g in entry["duplicates"]]
        if "label_accuracy" in entry:
            mine["label_accuracy"] = score(entry["label_accuracy"])
        per_model[model] = mine
    info = {}
    for field_name in ("label_column", "split_column"):
        v = data.get(field_name)
        info[field_name] = None if v is None else text(v, field_name)
    params = data.get("params")
    need(isinstance(params, dict), "params")
    info["params"] = params
    kinds = (label_errors, duplicates, outliers, leaks, checked_clusters)
    return Findings(n, list(models), *kinds, per_model=per_model, info=info)
