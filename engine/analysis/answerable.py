"""Know when a model cannot answer: labels or queries it cannot tell apart, said before scoring.

A CLIP-like model turns labels into classifiers by embedding prompts that name them. When it
does not know a label's words (its tokenizer maps them to ``[UNK]``), or embeds two labels'
prompts to (nearly) the same vector, no input can make it prefer one over the other: the
probabilities come out flat (33.33 % for three labels) and the top label is an accident of
order. These checks say so, one line each, naming the labels:

- ``unknown words``: words outside the tokenizer's vocabulary (where it has an unknown token);
- ``indistinguishable labels``: the largest logit gap any unit input could produce between two
  labels, ``logit_scale * ||c_a - c_b||``, is below ``MIN_LOGIT_GAP`` (odds of at most e:1 even
  for an input aligned perfectly with one of them);
- ``near chance``: for most inputs the top probability is within ``NEAR_CHANCE`` of 1/L;
- ``one answer``: a dataset's predictions collapse onto one label while its true labels do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engine.models.base import EmbeddingModel

MIN_LOGIT_GAP = 1.0  # below this two labels' prompts are the same classifier for every input
NEAR_CHANCE = 0.05  # a top probability within 5 points of 1/L says "no idea"
NEAR_CHANCE_SHARE = 0.5  # warn when at least this share of the inputs scored near chance
ONE_ANSWER_SHARE = 0.95  # predictions this concentrated on one label look like a collapse
DEFAULT_SCALE = 100.0  # CLIP's clamp; engine.analysis.zeroshot uses the same fallback


def _names(labels: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(str(x)) for x in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def unknown_word_warnings(model: EmbeddingModel, labels: Sequence[str]) -> list[str]:
    """One line naming the labels whose words the model's tokenizer does not know."""
    ask = getattr(model, "unknown_words", None)
    if ask is None:
        return []
    missing: dict[str, list[str]] = {}
    for label in labels:
        words = ask(str(label))
        if words:
            missing[str(label)] = list(words)
    if not missing:
        return []
    spec = getattr(model, "spec", "the model")
    words = sorted({w for ws in missing.values() for w in ws})
    fully = [lab for lab, ws in missing.items() if len(ws) == len(_words(lab))]
    same = "they all" if len(fully) == len(missing) else _names(fully)
    tail = f"; {same} read as the same unknown token" if len(fully) > 1 else ""
    return [
        f"{_names(list(missing))}: words outside {spec}'s vocabulary ({', '.join(words)}){tail}"
    ]


def _words(text: str) -> list[str]:
    from engine.models.vocab import words_of

    return words_of(text)


def indistinguishable_groups(
    class_vectors: np.ndarray, logit_scale: float | None, min_gap: float = MIN_LOGIT_GAP
) -> list[list[int]]:
    """Groups (of 2 or more label indices) whose class vectors no input can separate by
    ``min_gap`` logits; linked pairs are joined (a ~ b and b ~ c: one group)."""
    c = np.asarray(class_vectors, dtype=np.float64)
    if c.ndim != 2 or len(c) < 2:
        return []
    scale = DEFAULT_SCALE if logit_scale is None else float(logit_scale)
    sq = np.maximum((c * c).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * c @ c.T, 0.0)
    close = scale * np.sqrt(sq) < min_gap
    parent = list(range(len(c)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(close, k=1)), strict=True):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(c)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def label_warnings(
    model: EmbeddingModel, labels: Sequence[str], class_vectors: np.ndarray
) -> list[str]:
    """Before scoring: unknown words, and labels whose prompts the model embeds alike."""
    out = unknown_word_warnings(model, labels)
    spec = getattr(model, "spec", "the model")
    for group in indistinguishable_groups(class_vectors, getattr(model, "logit_scale", None)):
        names = [str(labels[i]) for i in group]
        out.append(
            f"{_names(names)}: {spec} embeds these labels' prompts alike and cannot tell them "
            "apart (every input scores them the same)"
        )
    return out


def score_warnings(labels: Sequence[str], probs: np.ndarray, what: str = "input") -> list[str]:
    """After scoring: most inputs near chance across ``labels``."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    n, k = p.shape
    if n == 0 or k < 2:
        return []
    chance = 1.0 / k
    near = p.max(axis=1) - chance < NEAR_CHANCE
    if near.mean() < NEAR_CHANCE_SHARE:
        return []
    share = f"every {what}" if near.all() else f"{int(near.sum())} of {n} {what}s"
    return [
        f"{_names(list(labels))}: {share} scored near chance "
        f"({100 * chance:.1f} % each): the model has no preference among these labels"
    ]


def collapse_warnings(predicted: Sequence[str], truth: Sequence[str]) -> list[str]:
    """Dataset predictions that all (nearly) name one label while the truth has several."""
    pred = [str(x) for x in predicted]
    if len(pred) < 10 or len({str(x) for x in truth}) < 2:
        return []
    values, counts = np.unique(np.asarray(pred, dtype=object), return_counts=True)
    top = int(np.argmax(counts))
    share = counts[top] / len(pred)
    if share < ONE_ANSWER_SHARE:
        return []
    return [
        f"{values[top]!r}: predicted for {100 * share:.1f} % of the items although the dataset "
        f"has {len({str(x) for x in truth})} labels: the model is not telling them apart"
    ]


def query_warnings(model: EmbeddingModel, query: str) -> list[str]:
    """A text search query's words the model does not know (one line; [] when all known)."""
    ask = getattr(model, "unknown_words", None)
    words = ask(str(query)) if ask is not None else None
    if not words:
        return []
    spec = getattr(model, "spec", "the model")
    known = [w for w in _words(query) if w not in words]
    if not known:
        return [f"{spec} knows none of the words of {query!r}: the ranking is arbitrary"]
    return [
        f"{spec} does not know {', '.join(repr(w) for w in words)}: it searches for "
        f"{' '.join(known)!r} only"
    ]


def comparison_warnings(
    models: Sequence[dict[str, Any]],
    predictions: dict[str, dict[str, list[str]]],
    labels: Sequence[str | None],
) -> list[str]:
    """Every model's zero-shot warnings in a comparison report, prefixed with its name: those
    stored with its result, plus a collapse read from its predictions (so a report cached
    before these checks existed still gets that one)."""
    truth = [str(x) for x in labels if x is not None]
    out: list[str] = []
    for m in models:
        zs = m.get("zero_shot") or {}
        lines = list(zs.get("warnings") or [])
        predicted = (predictions.get(m.get("model", "")) or {}).get("zero_shot")
        if predicted is not None:
            lines += [w for w in collapse_warnings(predicted, truth) if w not in lines]
        out += [f"{m.get('model')}: zero-shot: {w}" for w in lines]
    return out
