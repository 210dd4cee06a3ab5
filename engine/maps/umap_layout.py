"""UMAP's layout in vectorised NumPy: no JIT, so a fresh process on a new machine pays no compile.

umap-learn compiles its kernels with numba in every process that has no on-disk cache (30-40 s on
two cores for the first map on a machine). This module computes the same thing from a k-NN graph
the engine already has (faiss, exact): the fuzzy simplicial set (per-point bandwidths by
bisection, fuzzy union), a spectral initialisation (ARPACK through SciPy), and UMAP's
cross-entropy SGD with negative sampling, following umap-learn's recipe step by step (edge
sampling schedule, clipped gradients, linearly decaying learning rate, 5 negatives per positive).

The one deliberate difference: umap-learn applies each edge's update at once, point by point
(a sequential loop, which only compiled code makes fast); here every edge due in an epoch is
evaluated at the epoch's start positions and the updates are summed per point with
``np.bincount``. The quality is the same as umap-learn's within measurement noise (see
BENCHMARKS.md, row 3), and the result is deterministic under a seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
GRADIENT_CLIP = 4.0
CHUNK_EDGES = 16_384  # edges per vectorised block: its temporaries fit in a core's cache


SMALL_GRAPH = 10_000  # umap-learn runs more epochs up to this many points


@dataclass(frozen=True)
class LayoutParams:
    """UMAP's optimisation settings: umap-learn's defaults, except the learning rate.

    ``n_epochs`` None follows umap-learn: 500 up to ``SMALL_GRAPH`` points, 200 above.
    ``learning_rate`` is 0.2, not umap-learn's 1.0: summing an epoch's updates per point (instead
    of applying them one by one) overshoots at 1.0; at 0.2 the map's trustworthiness and 10-NN
    recall match umap-learn's (measured on digits and 10k MiniLM text vectors: BENCHMARKS.md).
    """

    min_dist: float = 0.1
    spread: float = 1.0
    n_epochs: int | None = None
    negative_sample_rate: int = 5
    repulsion_strength: float = 1.0
    learning_rate: float = 0.2

    def epochs_for(self, n: int) -> int:
        if self.n_epochs is not None:
            return int(self.n_epochs)
        return 500 if n <= SMALL_GRAPH else 200


def smooth_knn_dist(
    dists: np.ndarray, k: float, n_iter: int = 64, local_connectivity: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point bandwidth ``sigma`` and nearest distance ``rho`` (umap-learn's bisection,
    run for all points at once). ``dists`` is N x K with each point itself in column 0."""
    d = np.asarray(dists, dtype=np.float64)
    n = len(d)
    target = np.log2(k)
    # rho: the distance to the first neighbour at a positive distance (local_connectivity 1).
    positive = d > 0.0
    index = int(np.floor(local_connectivity))
    interpolation = local_connectivity - index
    sorted_pos = np.where(positive, d, np.inf)
    sorted_pos.sort(axis=1)
    counts = positive.sum(axis=1)
    rho = np.zeros(n)
    has_enough = counts >= local_connectivity
    if index > 0:
        base = sorted_pos[:, index - 1]
        rho = np.where(has_enough, base, rho)
        if interpolation > 1e-5:
            nxt = sorted_pos[:, min(index, d.shape[1] - 1)]
            rho = np.where(has_enough, base + interpolation * (nxt - base), rho)
    else:
        rho = np.where(has_enough, interpolation * sorted_pos[:, 0], rho)
    few = (counts > 0) & ~has_enough
    rho = np.where(few, np.max(np.where(positive, d, 0.0), axis=1), rho)

    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    mid = np.ones(n)
    rest = d[:, 1:] - rho[:, None]
    done = np.zeros(n, dtype=bool)
    for _ in range(n_iter):
        psum = np.where(rest > 0, np.exp(-np.maximum(rest, 0.0) / mid[:, None]), 1.0).sum(axis=1)
        done |= np.abs(psum - target) < SMOOTH_K_TOLERANCE
        if done.all():
            break
        upper = (psum > target) & ~done
        lower = ~upper & ~done
        hi = np.where(upper, mid, hi)
        lo = np.where(lower, mid, lo)
        mid = np.where(
            upper | (lower & np.isfinite(hi)), (lo + hi) / 2.0, np.where(lower, mid * 2.0, mid)
        )
    mean_all = d.mean()
    floor = MIN_K_DIST_SCALE * np.where(rho > 0.0, d.mean(axis=1), mean_all)
    return np.maximum(mid, floor), rho


def fuzzy_graph(indices: np.ndarray, dists: np.ndarray):  # -> scipy.sparse.coo_matrix
    """The symmetric fuzzy simplicial set (fuzzy union) of a k-NN graph, self in column 0."""
    import scipy.sparse

    n, k = indices.shape
    sigma, rho = smooth_knn_dist(dists, k)
    d = np.asarray(dists, dtype=np.float64)
    vals = np.exp(-np.maximum(d - rho[:, None], 0.0) / sigma[:, None])
    vals[(d - rho[:, None] <= 0.0) | (sigma[:, None] == 0.0)] = 1.0
    rows = np.repeat(np.arange(n), k)
    cols = np.asarray(indices).ravel()
    vals = vals.ravel()
    keep = (cols >= 0) & (cols != rows)
    g = scipy.sparse.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n, n))
    t = g.T.tocsr()
    prod = g.multiply(t)
    return (g + t - prod).tocoo()


def ab_params(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """UMAP's output kernel 1 / (1 + a d^2b), least-squares fitted to the min_dist / spread
    curve as umap-learn does, by Levenberg-Marquardt in NumPy (SciPy's optimiser costs an
    import in every fresh process)."""
    xv = np.linspace(0, spread * 3, 300)[1:]  # d = 0 fits any (a, b): leave it out
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    log_x = np.log(xv)

    def residual(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        xb = np.exp(2.0 * b * log_x)  # x^2b
        f = 1.0 / (1.0 + a * xb)
        jac = np.stack([-xb * f * f, -2.0 * a * xb * log_x * f * f], axis=1)
        return yv - f, jac

    a, b, damping = 1.0, 1.0, 1e-3
    r, jac = residual(a, b)
    for _ in range(200):
        jtj = jac.T @ jac
        step = np.linalg.solve(jtj + damping * np.diag(np.diag(jtj)), jac.T @ r)
        na, nb = a + step[0], b + step[1]
        nr, njac = residual(na, nb) if na > 0 and nb > 0 else (r, jac)
        if na > 0 and nb > 0 and nr @ nr < r @ r:
            a, b, r, jac, damping = na, nb, nr, njac, damping / 10.0
            if np.abs(step).max() < 1e-10:
                break
        else:
            damping *= 10.0
            if damping > 1e12:
                break
    return float(a), float(b)


def _spectral(graph, dim: int, seed: int) -> np.ndarray | None:  # graph: one connected part
    """Smallest non-trivial eigenvectors of the normalised Laplacian (largest of the normalised
    adjacency, which Lanczos finds far faster than the smallest of the Laplacian).

    ARPACK's BLAS calls are small (N x 32): BLAS threads only add overhead there, and on a busy
    machine they spin for seconds (measured: 7 s instead of 0.1 s at 10k points), so the solve
    runs with one BLAS thread."""
    import scipy.sparse
    import scipy.sparse.linalg
    from threadpoolctl import threadpool_limits

    n = graph.shape[0]
    if n <= dim + 2:
        return None
    deg = np.asarray(graph.sum(axis=0)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    scaled = scipy.sparse.diags(inv_sqrt) @ graph @ scipy.sparse.diags(inv_sqrt)
    k = dim + 1
    try:
        with threadpool_limits(1, user_api="blas"):
            if n < 200:
                _, vecs = np.linalg.eigh(scaled.toarray())
                vecs = vecs[:, ::-1][:, :k]
            else:
                rng = np.random.default_rng(seed)
                vals, vecs = scipy.sparse.linalg.eigsh(
                    scaled,
                    k,
                    which="LA",
                    ncv=min(n - 1, max(2 * k + 1, 32)),
                    tol=1e-4,
                    v0=rng.uniform(0.5, 1.0, n),
                    maxiter=n * 5,
                )
                vecs = vecs[:, np.argsort(-vals)]
    except scipy.sparse.linalg.ArpackError:
        return None
    return vecs[:, 1:k]


def spectral_init(graph, dim: int, seed: int, data: np.ndarray) -> np.ndarray:
    """umap-learn's initialisation: spectral per connected component, components placed by a
    layout of their centroids, then scaled to at most 10 with a little noise."""
    import scipy.sparse.csgraph

    rng = np.random.default_rng(seed)
    n = graph.shape[0]
    graph = graph.tocsr()
    n_parts, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    if n_parts == 1:
        out = _spectral(graph, dim, seed)
        if out is None:
            out = rng.uniform(-10, 10, size=(n, dim))
    else:
        out = np.zeros((n, dim))
        centroids = np.stack([data[labels == c].mean(axis=0) for c in range(n_parts)])
        meta = _component_positions(centroids, dim, seed)
        gaps = np.sqrt(((meta[:, None] - meta[None]) ** 2).sum(-1))
        np.fill_diagonal(gaps, np.inf)
        half_gap = gaps.min(axis=1) / 2.0
        for c in range(n_parts):
            rows = np.flatnonzero(labels == c)
            part = _spectral(graph[rows][:, rows], dim, seed + c) if len(rows) > 2 * dim else None
            if part is None:
                part = rng.uniform(-1, 1, size=(len(rows), dim))
            part = part - part.mean(axis=0)
            part /= max(np.abs(part).max(), 1e-12)
            out[rows] = meta[c] + part * half_gap[c]
    out = out * (10.0 / max(np.abs(out).max(), 1e-12))
    out += rng.normal(scale=1e-4, size=out.shape)
    return out.astype(np.float32)


def _component_positions(centroids: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Where each connected component goes: a PCA of the component centroids, or fixed
    orthogonal corners when there are too few to fit one."""
    m = len(centroids)
    if m <= 2 * dim:
        base = np.vstack([np.eye(dim), -np.eye(dim)])[:m]
        return base.astype(np.float64)
    c = centroids - centroids.mean(axis=0)
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    pos = u[:, :dim] * s[:dim]
    return pos / max(np.abs(pos).max(), 1e-12)


def epochs_per_sample(weights: np.ndarray, n_epochs: int) -> np.ndarray:
    n_samples = n_epochs * (weights / weights.max())
    out = np.full(len(weights), -1.0)
    pos = n_samples > 0
    out[pos] = n_epochs / n_samples[pos]
    return out


@dataclass(frozen=True)
class _Kernel:
    """The constants of one layout's gradients, as float32 scalars."""

    a: np.float32
    b: np.float32
    attract: np.float32  # -2ab
    repel: np.float32  # 2 * gamma * b
    clip: np.float32

    @classmethod
    def make(cls, params: LayoutParams) -> _Kernel:
        a, b = ab_params(params.min_dist, params.spread)
        return cls(
            a=np.float32(a),
            b=np.float32(b),
            attract=np.float32(-2.0 * a * b),
            repel=np.float32(2.0 * params.repulsion_strength * b),
            clip=np.float32(GRADIENT_CLIP),
        )


def _edge_gradients(
    k: _Kernel,
    cols: list[np.ndarray],
    doubled: list[np.ndarray],
    h: np.ndarray,
    t: np.ndarray,
    partner: np.ndarray,
    live: np.ndarray | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per edge and output dimension: the clipped attraction along the edge (``pulls``) and the
    summed clipped repulsion of the head from its random partners (``pushes``).

    ``partner`` is draws x edges, indices into ``doubled`` (each column twice, end to end);
    ``live`` masks the draws an edge is not owed this epoch (None: all are owed).
    """
    one = np.float32(1.0)
    diffs = [c[h] - c[t] for c in cols]
    d2 = _squared_norm(diffs)
    positive = d2 > 0
    d2b = np.power(d2, k.b, where=positive, out=np.zeros_like(d2))
    coeff = np.zeros_like(d2)
    np.divide(k.attract * d2b, d2 * (k.a * d2b + one), where=positive, out=coeff)
    pulls = [_clipped(coeff * diff, k.clip) for diff in diffs]

    heads = [c[h] for c in cols]
    ndiffs = [hc[None, :] - cc[partner] for hc, cc in zip(heads, doubled, strict=True)]
    d2 = _squared_norm(ndiffs)
    pw = np.power(d2, k.b)
    pw *= k.a
    pw += one
    coeff = d2 + np.float32(0.001)
    coeff *= pw
    np.divide(k.repel, coeff, out=coeff)
    if live is not None:
        coeff *= live
    coincident = d2 == 0
    any_coincident = bool(coincident.any())
    pushes = []
    for diff in ndiffs:
        diff *= coeff
        g = _clipped(diff, k.clip)
        if any_coincident:
            g[coincident] = k.clip  # umap-learn pushes coincident points apart by the clip
        pushes.append(g.sum(axis=0))
    return pulls, pushes


def _clipped(x: np.ndarray, bound: np.float32) -> np.ndarray:
    np.minimum(x, bound, out=x)
    np.maximum(x, -bound, out=x)
    return x


def _squared_norm(diffs: list[np.ndarray]) -> np.ndarray:
    out = diffs[0] * diffs[0]
    for extra in diffs[1:]:
        out += extra * extra
    return out


@dataclass
class _Schedule:
    """umap-learn's sampling schedule for a block of edges: an edge is due once its next
    positive sample's epoch is reached, and then owes the negative samples accrued since its
    last visit (about ``negative_sample_rate`` per visit)."""

    head: np.ndarray
    tail: np.ndarray
    eps: np.ndarray  # epochs per positive sample
    eps_neg: np.ndarray  # epochs per negative sample
    next_pos: np.ndarray
    next_neg: np.ndarray

    def due(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(heads, tails, negatives owed) of the edges due at ``epoch``; advances the schedule."""
        due = np.flatnonzero(self.next_pos <= epoch)
        if len(due) == 0:
            return None
        self.next_pos[due] += self.eps[due]
        step = self.eps_neg[due]
        owed = ((epoch - self.next_neg[due]) / step).astype(np.int64)
        np.maximum(owed, 0, out=owed)
        self.next_neg[due] += owed * step
        return self.head[due], self.tail[due], owed


def optimise(
    embedding: np.ndarray,
    head: np.ndarray,
    tail: np.ndarray,
    weights: np.ndarray,
    params: LayoutParams,
    seed: int,
    threads: int | None = None,
) -> np.ndarray:
    """UMAP's SGD, one vectorised step per epoch (see the module docstring).

    What makes NumPy fast here: each output dimension is its own contiguous float32 column;
    the negative samples of the edges due in an epoch form one (draws x edges) block whose rows
    sum contiguously; a point's random partners are offsets 1..N-1 from it, read from a doubled
    copy of each column, so no modulo is needed and the point itself is never drawn (umap-learn
    skips such a draw too); the offsets are read from one seeded pool drawn up front, at a
    seeded random start per block and epoch; and the edges are cut into fixed blocks of
    ``CHUNK_EDGES`` (temporaries that stay in the CPU cache), each scheduled and evaluated by
    one of ``threads`` workers (NumPy releases the GIL in its loops). The blocks are fixed, so
    the result does not depend on the number of threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    kernel = _Kernel.make(params)
    n, dim = embedding.shape
    cols = [np.ascontiguousarray(embedding[:, j], dtype=np.float32) for j in range(dim)]
    n_epochs = params.epochs_for(n)
    eps = epochs_per_sample(weights, n_epochs)
    keep = eps > 0
    head, tail, eps = head[keep].astype(np.intp), tail[keep].astype(np.intp), eps[keep]
    eps_neg = eps / params.negative_sample_rate
    blocks = [
        _Schedule(
            head[lo:hi],
            tail[lo:hi],
            eps[lo:hi],
            eps_neg[lo:hi],
            eps[lo:hi].copy(),
            eps_neg[lo:hi].copy(),
        )
        for lo, hi in itertools.pairwise([*range(0, len(head), CHUNK_EDGES), len(head)])
    ]
    rng = np.random.default_rng(seed)
    # An edge owes at most 2 * rate + 1 draws per visit (a visit can come a little late).
    window = (2 * params.negative_sample_rate + 1) * CHUNK_EDGES
    pool = rng.integers(1, max(n, 2), 4 * window, dtype=np.int32)
    threads = max(1, min(threads or _default_threads(), 8))
    pool_exec = ThreadPoolExecutor(threads) if threads > 1 and len(blocks) > 1 else None

    def step(block: _Schedule, epoch: int, start: int, doubled: list[np.ndarray]) -> tuple | None:
        visit = block.due(epoch)
        if visit is None:
            return None
        h, t, owed = visit
        width = max(1, int(owed.max()))
        draws = pool[start : start + width * len(h)].reshape(width, len(h))
        live = None
        if int(owed.min()) < width:
            live = (np.arange(width)[:, None] < owed[None, :]).astype(np.float32)
        pulls, pushes = _edge_gradients(kernel, cols, doubled, h, t, draws + h[None, :], live)
        return h, t, pulls, pushes

    try:
        for epoch in range(1, n_epochs):
            starts = rng.integers(0, len(pool) - window + 1, len(blocks)).tolist()
            doubled = [np.concatenate([c, c]) for c in cols]
            jobs = zip(blocks, [epoch] * len(blocks), starts, [doubled] * len(blocks), strict=True)
            if pool_exec is not None:
                parts = [p for p in pool_exec.map(lambda job: step(*job), jobs) if p is not None]
            else:
                parts = [p for p in (step(*job) for job in jobs) if p is not None]
            if not parts:
                continue
            h = np.concatenate([p[0] for p in parts])
            t = np.concatenate([p[1] for p in parts])
            alpha = params.learning_rate * (1.0 - (epoch - 1) / n_epochs)
            for j, c in enumerate(cols):
                pull = np.concatenate([p[2][j] for p in parts])
                push = np.concatenate([p[3][j] for p in parts])
                move = np.bincount(h, pull + push, minlength=n) - np.bincount(t, pull, minlength=n)
                move *= alpha
                c += move.astype(np.float32)
    finally:
        if pool_exec is not None:
            pool_exec.shutdown()
    return np.stack(cols, axis=1)


def _default_threads() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def umap_layout(
    indices: np.ndarray,
    dists: np.ndarray,
    data: np.ndarray,
    params: LayoutParams | None = None,
    seed: int = 0,
    dim: int = 2,
) -> np.ndarray:
    """A UMAP layout of N points from their k-NN graph (N x K, self in column 0, distances)."""
    from dataclasses import replace

    params = params or LayoutParams()
    params = replace(params, n_epochs=params.epochs_for(len(indices)))
    graph = fuzzy_graph(indices, dists)
    graph.sum_duplicates()
    w = graph.data
    w[w < w.max() / params.n_epochs] = 0.0  # edges too weak to be sampled once (as umap-learn)
    graph.eliminate_zeros()
    init = spectral_init(graph, dim, seed, data)
    lo, hi = init.min(axis=0), init.max(axis=0)
    init = 10.0 * (init - lo) / np.maximum(hi - lo, 1e-12)
    return optimise(init, graph.row, graph.col, graph.data, params, seed)
