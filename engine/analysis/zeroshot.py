"""Zero-shot classification: prompts, class text embeddings, scores, and predictions on uploads.

A CLIP-like model puts images and texts in one space, so a label becomes a classifier by
embedding a few prompts that name it ("a photo of a {}.") and comparing images to them.
CLIP turns cosines into probabilities with ``softmax(logit_scale * cos)``; SigLIP was trained
with an independent sigmoid per pair, ``sigmoid(logit_scale * cos + logit_bias)``, so its raw
scores do not sum to one and are shown normalised (the raw sigmoid is kept alongside).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ParallaxError, one_line
from engine.params import DEFAULT_TEMPLATES as DEFAULT_TEMPLATES  # re-exported
from engine.params import PREDICT
from engine.params import check_templates as check_templates  # re-exported

if TYPE_CHECKING:
    from PIL import Image

    from engine.models.base import EmbeddingModel

log = logging.getLogger(__name__)

IMAGE = "image"
TEXT = "text"

# CLIP's learnt temperature converges to (and is clamped at) 100: the fallback for models that
# share a space but do not report their own scale (e.g. a text encoder scoring text -> label).
DEFAULT_LOGIT_SCALE = 100.0
NOT_CLIP_LIKE = "not CLIP-like: needs image and text towers"
NO_TEXT_TOWER = "no text tower: cannot embed label prompts"


# -- prompts and class vectors ----------------------------------------------------------------
# check_templates and DEFAULT_TEMPLATES live in engine.params (the defaults' one owner).


def check_labels(labels: Sequence[str]) -> list[str]:
    """Labels stripped, non-empty and unique (duplicates would split probability mass)."""
    out = [str(x).strip() for x in labels]
    if not out or any(not x for x in out):
        raise ParallaxError("labels must be a non-empty list of non-empty names")
    seen: set[str] = set()
    dupes = [x for x in out if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
    if dupes:
        raise ParallaxError(f"duplicate label {dupes[0]!r}")
    return out


def build_prompts(labels: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """``prompts[l][t]``: template ``t`` filled with label ``l``.

    ``str.replace`` rather than ``str.format`` so braces inside a label or elsewhere in a
    template are taken literally instead of raising.
    """
    return [[t.replace("{}", label) for t in check_templates(templates)] for label in labels]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)  # a zero row stays zero instead of becoming NaN


def class_text_embeddings(
    model: EmbeddingModel,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    ensemble: bool = False,
) -> np.ndarray:
    """``(L, D)`` unit class vectors: the first template per label, or, with ``ensemble``, the
    renormalised mean of every template's normalised embedding (CLIP's prompt ensembling)."""
    prompts = build_prompts(labels, templates)
    return prompt_group_embeddings(model, prompts if ensemble else [p[:1] for p in prompts])


def prompt_group_embeddings(model: EmbeddingModel, groups: Sequence[Sequence[str]]) -> np.ndarray:
    """``(G, D)`` unit vectors: per group of prompts, the renormalised mean of their normalised
    embeddings (groups may differ in length; a one-prompt group is that prompt's vector)."""
    if TEXT not in model.modalities:
        raise ParallaxError(NO_TEXT_TOWER)
    flat = [str(p) for group in groups for p in group]
    if not groups or any(len(g) == 0 for g in groups):
        raise ParallaxError("every class needs at least one prompt")
    vectors = _normalise(model.embed_texts(flat))
    bounds = np.cumsum([0, *(len(g) for g in groups)])
    means = [vectors[a:b].mean(axis=0) for a, b in pairwise(bounds)]
    return _normalise(np.stack(means))


# -- scores -----------------------------------------------------------------------------------
@dataclass
class ZeroShotScores:
    """Scores of N inputs against L classes.

    ``probs`` rows sum to one (what is displayed); ``raw`` is the per-class sigmoid for
    SigLIP-style models and None for CLIP; ``ranks[i, j]`` is class j's place for input i
    (1 = best); ``order[i]`` lists class indices best first.
    """

    probs: np.ndarray
    logits: np.ndarray
    ranks: np.ndarray
    order: np.ndarray
    raw: np.ndarray | None = None

    def predicted(self) -> np.ndarray:
        return self.order[:, 0]

    def top_k(self, i: int, labels: Sequence[str], k: int = 5) -> list[tuple[str, float, int]]:
        """``[(label, probability, rank), ...]`` for input ``i``, best first."""
        return [
            (labels[j], float(self.probs[i, j]), r + 1)
            for r, j in enumerate(self.order[i, : max(0, k)])
        ]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)  # shift for numerical stability; result unchanged
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def zero_shot_scores(
    image_vectors: np.ndarray,
    class_vectors: np.ndarray,
    logit_scale: float | None,
    logit_bias: float | None = None,
) -> ZeroShotScores:
    """Cosine scores turned into probabilities the way the model was trained to use them."""
    x = _normalise(np.atleast_2d(image_vectors)).astype(np.float64)
    c = _normalise(np.atleast_2d(class_vectors)).astype(np.float64)
    if x.shape[1] != c.shape[1]:
        raise ParallaxError(
            f"input vectors have {x.shape[1]} dims but class vectors {c.shape[1]}: "
            "they must come from the same model"
        )
    scale = DEFAULT_LOGIT_SCALE if logit_scale is None else float(logit_scale)
    logits = scale * (x @ c.T)
    raw = None
    if logit_bias is None:
        probs = _softmax(logits)
    else:
        logits = logits + float(logit_bias)
        raw = 1.0 / (1.0 + np.exp(-logits))
        probs = raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-300)
    # Stable sort on -logits: equal scores keep class order, so results are reproducible.
    order = np.argsort(-logits, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, c.shape[0] + 1)[None, :], axis=1)
    return ZeroShotScores(probs=probs, logits=logits, ranks=ranks, order=order, raw=raw)


def model_scores(
    model: EmbeddingModel, vectors: np.ndarray, class_vectors: np.ndarray
) -> ZeroShotScores:
    """``zero_shot_scores`` with the model's own temperature and (SigLIP) bias."""
    return zero_shot_scores(
        vectors,
        class_vectors,
        getattr(model, "logit_scale", None),
        getattr(model, "logit_bias", None),
    )


def is_clip_like(model: EmbeddingModel) -> bool:
    return IMAGE in model.modalities and TEXT in model.modalities


# -- dataset-level accuracy (used by engine.analysis.compare) -------------------------------
def zero_shot_accuracy(
    image_vectors: np.ndarray,
    labels: Sequence[str],
    model: EmbeddingModel,
    label_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    ensemble: bool = True,
) -> dict[str, Any]:
    """Classify every row of ``image_vectors`` among ``label_names`` and score it against
    ``labels`` (the true label string of each row).

    Returns accuracy, per-class accuracy, the confusion matrix (rows true, columns predicted,
    in ``label_names`` order) and the predicted label of every row.
    """
    from engine.analysis.answerable import collapse_warnings, label_warnings, score_warnings
    from engine.analysis.metrics import confusion_matrix, per_class_accuracy

    if not is_clip_like(model):
        raise ParallaxError(NOT_CLIP_LIKE)
    names = check_labels(label_names)
    class_vectors = class_text_embeddings(model, names, templates, ensemble)
    warnings = label_warnings(model, names, class_vectors)
    scores = model_scores(model, image_vectors, class_vectors)
    predicted = np.asarray(names, dtype=object)[scores.predicted()]
    truth = np.asarray([str(x) for x in labels], dtype=object)
    warnings += score_warnings(names, scores.probs, "item")
    warnings += collapse_warnings(predicted.tolist(), truth.tolist())
    return {
        "accuracy": float(np.mean(predicted == truth)) if len(truth) else 0.0,
        "per_class": per_class_accuracy(truth, predicted, names),
        "confusion": confusion_matrix(truth, predicted, names).tolist(),
        "classes": names,
        "predictions": predicted.tolist(),
        "templates": list(check_templates(templates)),
        "ensemble": bool(ensemble),
        "warnings": warnings,  # engine.analysis.answerable: labels this model cannot tell apart
    }


# -- predictions on user inputs ---------------------------------------------------------------
TopK = list[tuple[str, float, int]]


@dataclass
class ModelPrediction:
    """One model's answer for every input; ``error`` (one line) says what it could not do.

    ``images`` / ``texts`` hold one top-k list per input, or None where that kind of input was
    not given or could not be scored. A model can answer the texts and still carry an error
    for the images (a text-only encoder asked about pictures).
    """

    model: str
    images: list[TopK] | None = None
    texts: list[TopK] | None = None
    latency_ms: float | None = None  # embedding + scoring of the inputs and label prompts
    load_ms: float | None = None  # model loading, reported apart (0 for a passed-in object)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)  # engine.analysis.answerable, one line each
    probabilities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        def rows(items: list[TopK] | None) -> list[list[dict[str, Any]]] | None:
            if items is None:
                return None
            return [
                [{"label": lab, "prob": round(p, 6), "rank": r} for lab, p, r in top]
                for top in items
            ]

        return {
            "model": self.model,
            "images": rows(self.images),
            "texts": rows(self.texts),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "load_ms": None if self.load_ms is None else round(self.load_ms, 2),
            "error": self.error,
            "warnings": list(self.warnings),
        }


ClassVectors = Callable[["EmbeddingModel", list[str]], np.ndarray]
# (model, "image" | "text", items) -> vectors: lets a server batch inputs with other requests
Embed = Callable[["EmbeddingModel", str, list[Any]], np.ndarray]


def _embed_with_model(model: EmbeddingModel, modality: str, items: list[Any]) -> np.ndarray:
    return model.embed_images(items) if modality == IMAGE else model.embed_texts(items)


def predict_model(
    model: EmbeddingModel,
    images: Sequence[Image.Image] | None,
    texts: Sequence[str] | None,
    labels: Sequence[str],
    templates: Sequence[str] = PREDICT.templates,
    ensemble: bool = PREDICT.ensemble,
    top_k: int = PREDICT.top_k,
    *,
    class_vectors: ClassVectors | None = None,
    embed: Embed | None = None,
) -> ModelPrediction:
    """One loaded model's zero-shot answer for ``images`` and ``texts`` among ``labels``.

    Never raises for what the model cannot do: a missing tower, or an exception while it
    embeds, is the answer's one-line ``error`` (so a loop over models goes on; the one loop is
    ``engine.analysis.predict.predict_each``). ``class_vectors`` lets a caller hold the label
    prompts' vectors between requests; ``embed`` lets a server batch the inputs.
    ``latency_ms`` is inference only (prompts included); ``load_ms`` is left to the caller.
    """
    from engine.analysis.answerable import label_warnings, score_warnings

    names = list(labels)
    out = ModelPrediction(model=str(getattr(model, "spec", model)))
    images = list(images or [])
    texts = list(texts or [])
    if TEXT not in model.modalities:
        out.error = NOT_CLIP_LIKE if images else NO_TEXT_TOWER
        return out
    problems: list[str] = []
    if images and not is_clip_like(model):
        problems.append(NOT_CLIP_LIKE)
        images = []
    if not (images or texts):
        out.error = "; ".join(problems) or None
        return out
    call = embed or _embed_with_model
    t0 = time.perf_counter()
    try:
        if class_vectors is not None:
            classes = class_vectors(model, names)
        else:
            classes = class_text_embeddings(model, names, templates, ensemble)
        out.warnings = label_warnings(model, names, classes)  # said before any scoring
        for modality, items in ((IMAGE, images), (TEXT, texts)):
            if not items:
                continue
            scores = model_scores(model, call(model, modality, items), classes)
            setattr(out, f"{modality}s", [scores.top_k(i, names, top_k) for i in range(len(items))])
            out.probabilities[modality] = scores.probs
            out.warnings += score_warnings(names, scores.probs, modality)
    except Exception as exc:  # one broken model must not take the others down
        if not isinstance(exc, ParallaxError):
            log.warning("model %s failed during predict", out.model, exc_info=True)
        out.error = one_line(exc)
        return out
    out.latency_ms = (time.perf_counter() - t0) * 1000.0
    out.error = "; ".join(problems) or None
    return out
