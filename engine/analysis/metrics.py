"""Pure metrics on arrays: kNN and linear-probe accuracy, confusion matrices, CKA, kNN overlap.

No model, no cache, no dataset: every function takes arrays (rows are items) and labels, so the
comparison pipeline (``engine.analysis.compare``), zero-shot scoring
(``engine.analysis.zeroshot``), the fusion
heads and the pages share one definition of each number. Vectors are L2-normalised before any
cosine neighbour search (engine convention, re-done here so raw arrays work too).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ParallaxError

if TYPE_CHECKING:
    import pandas as pd

ROW_CHUNK = 8192  # rows per block in the O(N k^2) and O(N D^2) loops: bounded memory


# -- small helpers ----------------------------------------------------------------------------
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _as_labels(labels: Sequence[Any]) -> np.ndarray:
    """Labels as an object array of ``str`` (mixed ints/strings compare consistently)."""
    return np.asarray([str(x) for x in labels], dtype=object)


def _check_rows(*arrays: Any) -> int:
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ParallaxError(f"inputs have different numbers of rows: {sorted(lengths)}")
    return lengths.pop()


# -- classification metrics -------------------------------------------------------------------
def confusion_matrix(
    y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any]
) -> np.ndarray:
    """``(C, C)`` int64 counts: row = true class, column = predicted class, in ``classes`` order.

    Pairs whose true or predicted label is not in ``classes`` are left out.
    """
    _check_rows(y_true, y_pred)
    names = [str(c) for c in classes]
    index = {c: i for i, c in enumerate(names)}
    t = np.array([index.get(str(x), -1) for x in y_true], dtype=np.int64)
    p = np.array([index.get(str(x), -1) for x in y_pred], dtype=np.int64)
    ok = (t >= 0) & (p >= 0)
    out = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(out, (t[ok], p[ok]), 1)
    return out


def per_class_accuracy(
    y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any] | None = None
) -> dict[str, float | None]:
    """Accuracy within each true class (its recall); None for a class with no examples."""
    truth, pred = _as_labels(y_true), _as_labels(y_pred)
    _check_rows(truth, pred)
    names = [str(c) for c in classes] if classes is not None else sorted(set(truth.tolist()))
    out: dict[str, float | None] = {}
    for c in names:
        mask = truth == c
        out[c] = float(np.mean(pred[mask] == c)) if mask.any() else None
    return out


def knn_predict(vectors: np.ndarray, labels: Sequence[Any], k: int = 10) -> np.ndarray:
    """Leave-one-out kNN label of every row (cosine neighbours, self excluded).

    Majority vote over the ``k`` nearest; a tie goes to the tied label whose first
    neighbour is nearest (so k=1 behaviour falls out naturally and results are deterministic).
    """
    from engine.maps.knn import exact_knn

    y = _as_labels(labels)
    n = _check_rows(vectors, y)
    if n < 2:
        raise ParallaxError("kNN accuracy needs at least 2 labelled items")
    k = max(1, min(int(k), n - 1))
    classes, codes = np.unique(y, return_inverse=True)
    idx, _ = exact_knn(_normalise(vectors), k, exclude_self=True)
    neigh = codes[idx]  # (n, k) class codes, nearest first
    pred = np.empty(n, dtype=np.int64)
    # Score for neighbour position j: votes for its label, then a small bonus for being early;
    # votes dominate because the bonus (< k+1) never outweighs one extra vote.
    bonus = (k - np.arange(k))[None, :]
    for s in range(0, n, ROW_CHUNK):
        block = neigh[s : s + ROW_CHUNK]
        votes = (block[:, :, None] == block[:, None, :]).sum(axis=2)
        best = np.argmax(votes * (k + 1) + bonus, axis=1)
        pred[s : s + ROW_CHUNK] = block[np.arange(len(block)), best]
    return classes[pred]


def knn_accuracy(vectors: np.ndarray, labels: Sequence[Any], k: int = 10) -> float:
    """Fraction of rows whose leave-one-out kNN vote equals their own label."""
    return float(np.mean(knn_predict(vectors, labels, k) == _as_labels(labels)))


def split_indices(
    labels: Sequence[Any], test_size: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test row indices, stratified whenever every class can appear on both sides."""
    from sklearn.model_selection import train_test_split

    y = _as_labels(labels)
    n = len(y)
    if not 0.0 < test_size < 1.0:
        raise ParallaxError(f"test_size must be between 0 and 1, got {test_size}")
    _, counts = np.unique(y, return_counts=True)
    n_test = int(np.ceil(test_size * n))
    stratify = counts.min() >= 2 and len(counts) <= n_test and len(counts) <= n - n_test
    train, test = train_test_split(
        np.arange(n), test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    return np.sort(train), np.sort(test)


def linear_probe_accuracy(
    vectors: np.ndarray,
    labels: Sequence[Any],
    test_size: float = 0.25,
    seed: int = 0,
    max_train: int | None = None,
) -> dict[str, Any]:
    """Logistic regression on standardised vectors, scored on a held-out stratified split.

    Standardising first makes one regularisation strength fit every model: unit-norm vectors
    of different dimensions otherwise have very different per-feature scales. ``max_train``
    caps the training rows (seeded) so that very large datasets stay interactive.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = _as_labels(labels)
    x = np.asarray(vectors, dtype=np.float32)
    _check_rows(x, y)
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ParallaxError("a linear probe needs at least 2 classes")
    train, test = split_indices(y, test_size, seed)
    if max_train is not None and len(train) > max_train:
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(train, size=max_train, replace=False))
    if len(set(y[train].tolist())) < 2:
        raise ParallaxError("the training split holds a single class: too few labelled items")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    with warnings.catch_warnings():
        # Reaching max_iter still gives a usable probe; the warning would only be noise here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[train], y[train])
    pred = np.asarray(clf.predict(x[test]), dtype=object)
    return {
        "accuracy": float(np.mean(pred == y[test])),
        "per_class": per_class_accuracy(y[test], pred, classes),
        "confusion": confusion_matrix(y[test], pred, classes).tolist(),
        "classes": classes,
        "test_indices": test.tolist(),
        "predictions": pred.tolist(),
        "n_train": len(train),
        "n_test": len(test),
    }


# -- similarity between two embeddings of the same rows ---------------------------------------
def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same N rows, in [0, 1].

    Feature-space form ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` (Kornblith et al.
    2019), accumulated over row blocks so N = 100k with D <= 1024 needs only D x D matrices.
    Products run in float32 per block and accumulate in float64.
    """
    n = _check_rows(x, y)
    if n < 2:
        raise ParallaxError("CKA needs at least 2 rows")
    mx = np.zeros(x.shape[1], np.float64)
    my = np.zeros(y.shape[1], np.float64)
    for s in range(0, n, ROW_CHUNK):
        mx += np.asarray(x[s : s + ROW_CHUNK], np.float64).sum(axis=0)
        my += np.asarray(y[s : s + ROW_CHUNK], np.float64).sum(axis=0)
    mx, my = (mx / n).astype(np.float32), (my / n).astype(np.float32)
    xx = np.zeros((x.shape[1], x.shape[1]), np.float64)
    yy = np.zeros((y.shape[1], y.shape[1]), np.float64)
    yx = np.zeros((y.shape[1], x.shape[1]), np.float64)
    for s in range(0, n, ROW_CHUNK):
        xc = np.asarray(x[s : s + ROW_CHUNK], np.float32) - mx
        yc = np.asarray(y[s : s + ROW_CHUNK], np.float32) - my
        xx += xc.T @ xc
        yy += yc.T @ yc
        yx += yc.T @ xc
    denom = np.linalg.norm(xx) * np.linalg.norm(yy)
    if denom <= 0.0:
        return 0.0  # a constant representation shares no structure with anything
    return float(min(1.0, max(0.0, np.sum(yx * yx) / denom)))


def knn_overlap(x: np.ndarray, y: np.ndarray, k: int = 10) -> np.ndarray:
    """Per row, ``|NN_k(x) ∩ NN_k(y)| / k``: how far two models agree on its neighbours.

    1.0 means the same k neighbours (order ignored), 0.0 none in common. Also the Map page's
    "neighbourhood agreement" colour.
    """
    from engine.maps.knn import exact_knn

    n = _check_rows(x, y)
    if n < 2:
        raise ParallaxError("kNN overlap needs at least 2 rows")
    k = max(1, min(int(k), n - 1))
    ix, _ = exact_knn(_normalise(x), k, exclude_self=True)
    iy, _ = exact_knn(_normalise(y), k, exclude_self=True)
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, ROW_CHUNK):
        a, b = ix[s : s + ROW_CHUNK], iy[s : s + ROW_CHUNK]
        out[s : s + ROW_CHUNK] = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1) / k
    return out


def mean_knn_overlap(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    return float(np.mean(knn_overlap(x, y, k)))


# -- where models disagree ----------------------------------------------------------------------
def disagreements(
    predictions: Mapping[str, Sequence[Any]],
    y_true: Sequence[Any],
    ids: Sequence[str],
    only_disagreements: bool = True,
) -> pd.DataFrame:
    """Rows on which the models' predicted labels differ (columns: id, label, one per model,
    n_correct), fewest correct first. With ``only_disagreements=False`` every row is kept."""
    import pandas as pd

    names = list(predictions)
    truth = _as_labels(y_true)
    cols = {m: _as_labels(predictions[m]) for m in names}
    _check_rows(truth, ids, *cols.values())
    frame = pd.DataFrame({"id": [str(i) for i in ids], "label": truth, **cols})
    if not names:
        frame["n_correct"] = 0
        return frame.iloc[0:0] if only_disagreements else frame
    stacked = np.stack([cols[m] for m in names], axis=1)
    frame["n_correct"] = (stacked == truth[:, None]).sum(axis=1).astype(np.int64)
    if only_disagreements:
        frame = frame[(stacked != stacked[:, :1]).any(axis=1)]
    return frame.sort_values(["n_correct", "id"], kind="stable").reset_index(drop=True)
