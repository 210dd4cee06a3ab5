"""Which models fit a dataset, and which to offer first: decided from specs, nothing loaded.

A model embeds images, texts or both (``engine.models.registry.modalities_of``); a dataset has
images, texts or both. A model that shares no modality with the dataset cannot embed it, so
the pages list it apart as "not for this data", with why. A dataset's own vector columns are
models too (``column:NAME``), and only for that dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ParallaxError

IMAGE = "image"
TEXT = "text"
PREDICTION_DEFAULTS = ("demo:shapes-clip", "demo:shapes-clip-small")  # answer offline


def dataset_modalities(dataset: Any) -> frozenset[str]:
    """What ``dataset`` holds: ``image`` when it has images, ``text`` when it has texts."""
    mods = set()
    if getattr(dataset, "has_images", False):
        mods.add(IMAGE)
    if getattr(dataset, "texts", None) is not None:
        mods.add(TEXT)
    return frozenset(mods)


def column_specs(dataset: Any) -> list[str]:
    """``column:NAME`` for each vector column (or ``.vectors.json`` entry) of ``dataset``."""
    from engine.data.column_vectors import vector_columns

    try:
        return [f"column:{name}" for name in vector_columns(dataset)]
    except (ParallaxError, AttributeError, OSError, ValueError):
        return []  # a dataset without readable metadata offers no columns


def why_not_for(spec: str, data: frozenset[str], columns: Sequence[str] = ()) -> str | None:
    """Why ``spec`` cannot embed a dataset holding ``data`` (None: it can)."""
    from engine.models.registry import modalities_of

    if spec.startswith("column:"):
        if spec in columns:
            return None
        return "this dataset has no such vector column"
    try:
        mods = modalities_of(spec)
    except ParallaxError as exc:
        return str(exc).splitlines()[0] if str(exc) else "not a model spec"
    if mods & data:
        return None
    has = " and ".join(sorted(m + "s" for m in data)) or "nothing a model embeds"
    wants = " and ".join(sorted(m + "s" for m in mods))
    return f"embeds {wants} only; this dataset has {has}"


@dataclass
class ModelFit:
    """``fit``: specs that can embed the dataset, in the order given (its columns added);
    ``unfit``: the others, each with its one-line reason."""

    fit: list[str] = field(default_factory=list)
    unfit: dict[str, str] = field(default_factory=dict)


def models_for(dataset: Any, specs: Iterable[str]) -> ModelFit:
    """Split ``specs`` into those that fit ``dataset`` and those that do not (with why); the
    dataset's own ``column:`` models are offered too."""
    data = dataset_modalities(dataset)
    columns = column_specs(dataset)
    out = ModelFit()
    for spec in dict.fromkeys([*specs, *columns]):
        why = why_not_for(spec, data, columns)
        if why is None:
            out.fit.append(spec)
        else:
            out.unfit[spec] = why
    return out


def default_prediction_models(
    options: Sequence[str], session: Sequence[str], n: int = 2
) -> list[str]:
    """Up to ``n`` different models to open the Compare page's predictions with: the session's
    own models that can score labels first, then the shipped CLIPs (they answer offline)."""
    ranked = [s for s in [*session, *PREDICTION_DEFAULTS, *options] if s in options]
    return list(dict.fromkeys(ranked))[:n]
