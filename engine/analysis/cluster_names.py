"""Clusters with names: HDBSCAN on a PCA of one model's vectors, each cluster named.

Names come from what the items carry: the distinctive words of the cluster's texts (class-based
TF-IDF, "c-TF-IDF": a word's frequency in the cluster against its frequency over all clusters),
else its majority labels, else a number. Every cluster of one model gets a distinct name.

Past ``FindingsParams.cluster_sample`` rows HDBSCAN is fitted on a seeded sample and every other
row joins the cluster of its nearest sample row (HDBSCAN is far from linear in the rows).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from engine.params import FINDINGS, FindingsParams


class ModelVectors(Protocol):
    """What clustering reads of a model's vectors (``engine.analysis.findings.ModelVectors``)."""

    raw: Any

    def unit_rows(self, rows: np.ndarray) -> np.ndarray: ...

    def unit_block(self, start: int, stop: int) -> np.ndarray: ...


_WORD = re.compile(r"[^\W\d_][\w'-]{2,}", re.UNICODE)
_NAME_WORDS = 3
NAME_SAMPLE = 2_000


def min_cluster_size(n: int, params: FindingsParams = FINDINGS) -> int:
    if params.min_cluster_size is not None:
        return max(2, int(params.min_cluster_size))
    return int(min(max(5, round(0.02 * n)), 1000))


def cluster_labels(vec: ModelVectors, params: FindingsParams = FINDINGS) -> np.ndarray:
    """A cluster number per row (-1: noise) from HDBSCAN on a PCA of the unit vectors."""
    from sklearn.cluster import HDBSCAN

    from engine.maps.project import PcaSpace

    n = len(vec.raw)
    rng = np.random.default_rng(params.seed)
    sample = np.arange(n)
    if n > params.cluster_sample:
        sample = np.sort(rng.choice(n, size=params.cluster_sample, replace=False))
    unit = vec.unit_rows(sample)
    pca = PcaSpace.fit(unit, min(params.cluster_dims, unit.shape[1]))
    space = pca.transform(unit)
    mcs = min_cluster_size(len(sample), params)
    fitted = HDBSCAN(min_cluster_size=mcs, min_samples=max(2, mcs // 2), copy=True).fit(space)
    found = np.asarray(fitted.labels_, dtype=np.int64)
    if len(sample) == n:
        return found
    labels = np.empty(n, dtype=np.int64)
    for s in range(0, n, 65_536):
        block = pca.transform(vec.unit_block(s, min(n, s + 65_536)))
        # Nearest sample row in the PCA space (inner product of centred coordinates would
        # not be a distance: L2 search through faiss on the raw coordinates).
        idx = _nearest_l2(space, block)
        labels[s : s + len(block)] = found[idx]
    return labels


def _nearest_l2(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    _, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return idx[:, 0]


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def ctfidf_words(groups: Sequence[Sequence[str | None]], top: int = 10) -> list[list[str]]:
    """The most distinctive words of each group of texts, best first (class-based TF-IDF)."""
    stop = _stop_words()
    counts = []
    for texts in groups:
        c: Counter[str] = Counter()
        for t in texts:
            if t:
                c.update(w for w in (x.lower() for x in _WORD.findall(t)) if w not in stop)
        counts.append(c)
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    avg = max(1.0, sum(total.values()) / max(1, len(counts)))
    out = []
    for c in counts:
        size = max(1, sum(c.values()))
        scored = sorted(
            c.items(), key=lambda kv: (-(kv[1] / size) * np.log1p(avg / total[kv[0]]), kv[0])
        )
        out.append([w for w, _ in scored[:top]])
    return out


def _label_name(labels: Sequence[str | None]) -> list[str]:
    counts = Counter(str(x) for x in labels if x is not None)
    total = sum(counts.values())
    if not total:
        return []
    ranked = [lab for lab, _ in counts.most_common()]
    share = counts[ranked[0]] / total
    words = [ranked[0] if share >= 0.5 else f"mixed: {ranked[0]}"]
    words += [lab for lab in ranked[1:] if counts[lab] / total >= 0.1]
    return words


def name_clusters(
    members: Sequence[np.ndarray],
    *,
    labels: Sequence[str | None] | None = None,
    texts: Sequence[str | None] | None = None,
) -> list[str]:
    """A distinct name for each cluster (rows in ``members``): texts' distinctive words, else
    labels, else a number. A name already taken is extended with the next word, then numbered."""
    candidates: list[list[str]]
    if texts is not None and any(texts[int(r)] for m in members for r in m[:50]):
        # Words are counted on at most NAME_SAMPLE texts a cluster (evenly spaced rows): the
        # most distinctive words of a large cluster show in any few thousand of its texts.
        candidates = ctfidf_words(
            [[texts[int(r)] for r in m[:: max(1, len(m) // NAME_SAMPLE)]] for m in members]
        )
        sep = " · "
    elif labels is not None and any(labels[int(r)] is not None for m in members for r in m[:50]):
        candidates = [_label_name([labels[int(r)] for r in m]) for m in members]
        sep = " + "
    else:
        candidates = [[] for _ in members]
        sep = " "
    names: list[str] = []
    taken: set[str] = set()
    for i, words in enumerate(candidates):
        use = min(len(words), _NAME_WORDS if sep == " · " else 1)
        name = sep.join(words[:use]) if use else f"cluster {i + 1}"
        while name in taken and use < len(words):
            use += 1
            name = sep.join(words[:use])
        base, k = name, 2
        while name in taken:
            name = f"{base} ({k})"
            k += 1
        taken.add(name)
        names.append(name)
    return names


def cluster_model(
    vec: ModelVectors,
    *,
    labels: Sequence[str | None] | None = None,
    texts: Sequence[str | None] | None = None,
    params: FindingsParams = FINDINGS,
) -> list[dict[str, Any]]:
    """``[{"name", "rows"}]`` of one model, largest cluster first (noise rows belong to none)."""
    found = cluster_labels(vec, params)
    ids = [c for c in np.unique(found) if c >= 0]
    members = [np.flatnonzero(found == c) for c in ids]
    members.sort(key=lambda m: (-len(m), int(m[0])))
    names = name_clusters(members, labels=labels, texts=texts)
    return [
        {"name": name, "rows": m.astype(int).tolist()}
        for name, m in zip(names, members, strict=True)
    ]
