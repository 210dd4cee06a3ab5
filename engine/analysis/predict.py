"""Predictions on uploads: each model's zero-shot answer, and the fusion heads', side by side.

The Compare page, the CLI and a service share this: decode untrusted uploads safely, load each
model through a caller-given loader (the dashboard's shared, policy-checked one; the engine's
``load_model`` by default), time the load apart from inference, and answer with one
``ModelPrediction`` per model (a model that fails gets its one-line ``error``; the others
still answer). Trained fusion heads answer too: the image head for images, the text head for
texts (an uploaded image has no caption to pair it with).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import ParallaxError, one_line
from engine.params import PREDICT, PredictParams, check_templates

if TYPE_CHECKING:
    from PIL import Image

    from engine.analysis.fusion import HeadResult
    from engine.analysis.zeroshot import ClassVectors, Embed, ModelPrediction
    from engine.models.base import EmbeddingModel

log = logging.getLogger(__name__)

MAX_INPUTS = 64  # images + texts per prediction run: every answer is drawn side by side
ModelLoader = Callable[[str], "EmbeddingModel"]
# (index of the model, its spec, "loading" / "predicting" / "done", its answer once done)
StepCallback = Callable[[int, str, str, "ModelPrediction | None"], None]


def check_request(
    n_inputs: int, specs: Sequence[str], with_heads: bool, labels: Sequence[str]
) -> None:
    """Refuse a prediction request that cannot be answered, before anything loads."""
    if n_inputs == 0:
        raise ParallaxError("upload at least one image or type a text to classify")
    if n_inputs > MAX_INPUTS:
        raise ParallaxError(f"at most {MAX_INPUTS} inputs at a time")
    if not specs and not with_heads:
        raise ParallaxError("pick at least one model")
    if specs and not labels:
        raise ParallaxError("give at least one candidate label")


def decode_images(
    files: Iterable[tuple[str, bytes]],
) -> tuple[list[Image.Image], list[str], list[str]]:
    """(images, their names, one-line errors) for uploaded ``(name, bytes)``, decoded with the
    engine's safe decoder (size and decompression-bomb limits). The pixels of all the images
    count against one request budget (``PixelBudget``, from the headers, before decoding):
    past it the whole request is refused with one ``BudgetError`` line, since many images
    each under the per-image limit would otherwise add up to gigabytes."""
    from engine.data.images import PixelBudget, open_image_safely
    from engine.errors import BudgetError

    budget = PixelBudget()
    images, names, errors = [], [], []
    for name, data in files:
        try:
            images.append(open_image_safely(data, name=name, budget=budget))
            names.append(name)
        except BudgetError:
            raise
        except ParallaxError as exc:
            errors.append(f"{name}: {exc}")
    return images, names, errors


def score_rule(model: Any) -> str:
    """How ``model`` turns cosines into probabilities (what ``engine.analysis.zeroshot``
    applies)."""
    from engine.analysis.zeroshot import DEFAULT_LOGIT_SCALE

    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    shown = f"{DEFAULT_LOGIT_SCALE if scale is None else float(scale):.3g}"
    if bias is not None:
        return f"sigmoid({shown}·cos {float(bias):+.3g}), normalised"
    return f"softmax({shown}·cos)" + (" (default scale)" if scale is None else "")


def head_topk(
    probs: np.ndarray, classes: Sequence[str], k: int
) -> list[list[tuple[str, float, int]]]:
    """Top-k ``(label, probability, rank)`` lists from an ``(N, C)`` probability matrix."""
    p = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    order = np.argsort(-p, axis=1, kind="stable")[:, : max(0, int(k))]
    return [
        [(str(classes[j]), float(p[i, j]), r + 1) for r, j in enumerate(order[i])]
        for i in range(len(p))
    ]


@dataclass
class PredictionRun:
    """Every model's answer, in order, and how each scored (``score_rule``)."""

    preds: list[ModelPrediction] = field(default_factory=list)
    scales: dict[str, str] = field(default_factory=dict)


def _default_loader(spec: str) -> EmbeddingModel:
    from engine.models import load_model

    return load_model(spec)


def predict_each(
    specs: Sequence[str],
    images: list[Image.Image],
    texts: list[str],
    labels: Sequence[str],
    *,
    params: PredictParams = PREDICT,
    load: ModelLoader = _default_loader,
    on_step: StepCallback | None = None,
    class_vectors: ClassVectors | None = None,
    embed: Embed | None = None,
) -> PredictionRun:
    """Zero-shot answers of every model in ``specs`` for ``images`` and ``texts``: the engine's
    one loop over models (``Workspace.predict`` calls it for every door).

    Labels and templates are checked once, before any model loads. Each model is independent:
    one that cannot be loaded, lacks a tower or raises gets its one-line ``error`` and the next
    still runs. ``load_ms`` is the time ``load`` took (a held model costs ~0); ``latency_ms``
    is inference only. ``class_vectors`` and ``embed`` go to ``zeroshot.predict_model``.
    """
    from engine.analysis.zeroshot import ModelPrediction, check_labels, predict_model

    names: list[str] = []
    templates: list[str] = []
    if specs:
        names = check_labels(labels)
        templates = check_templates(params.templates)
    run = PredictionRun()
    for i, spec in enumerate(specs):
        if on_step is not None:
            on_step(i, spec, "loading", None)
        t0 = time.perf_counter()
        try:
            model = load(spec)
        except Exception as exc:  # one broken spec must not stop the others
            if not isinstance(exc, ParallaxError):
                log.warning("loading %s failed", spec, exc_info=True)
            pred = ModelPrediction(model=spec, error=f"cannot load: {one_line(exc)}")
            run.preds.append(pred)
            if on_step is not None:
                on_step(i, spec, "done", pred)
            continue
        load_ms = (time.perf_counter() - t0) * 1000.0
        if on_step is not None:
            on_step(i, spec, "predicting", None)
        pred = predict_model(
            model,
            images,
            texts,
            names,
            templates,
            params.ensemble,
            params.top_k,
            class_vectors=class_vectors,
            embed=embed,
        )
        pred.load_ms = load_ms
        run.scales[pred.model] = score_rule(model)
        run.preds.append(pred)
        if on_step is not None:
            on_step(i, spec, "done", pred)
    return run


def fusion_prediction(
    heads: Mapping[str, HeadResult],
    name: str,
    image_model: str,
    text_model: str,
    images: list[Image.Image],
    texts: list[str],
    top_k: int = PREDICT.top_k,
    load: ModelLoader = _default_loader,
) -> ModelPrediction:
    """The trained heads' answer as one ``ModelPrediction`` named ``name``: the image head
    labels images (embedded by ``image_model``), the text head labels texts (``text_model``).
    A missing head or a failure is its one-line ``error``."""
    from engine.analysis.fusion import predict_with_head
    from engine.analysis.zeroshot import ModelPrediction

    pred = ModelPrediction(model=name)
    t0 = time.perf_counter()
    problems = []
    try:
        for side, items, model in (("image", images, image_model), ("text", texts, text_model)):
            if not items:
                continue
            if side not in heads:
                problems.append(f"no {side} head trained")
                continue
            head = heads[side].head
            vecs = getattr(load(model), f"embed_{side}s")(items)
            sides_vecs = (vecs, None) if side == "image" else (None, vecs)
            probs = predict_with_head(head, *sides_vecs)
            setattr(pred, f"{side}s", head_topk(probs, head.classes, top_k))
        pred.latency_ms = (time.perf_counter() - t0) * 1000.0
        pred.load_ms = 0.0
    except Exception as exc:  # reported in the heads' column; the models' answers still show
        if not isinstance(exc, ParallaxError):
            log.warning("fusion heads failed on uploads", exc_info=True)
        problems.append(one_line(exc))
    pred.error = "; ".join(problems) or None
    return pred
