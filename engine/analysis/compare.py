"""Compare embedding models on one dataset: how well each separates the labels, how alike they are.

Per model: leave-one-out kNN accuracy, a linear probe (logistic regression on a seeded stratified
split), zero-shot accuracy for CLIP-like models, per-class accuracy and a confusion matrix.
Per pair: linear CKA (do the two spaces share their geometry?) and kNN overlap (do they agree on
each point's neighbours?). Results are cached as JSON keyed by the vectors they were computed
from, so reopening a comparison costs a file read. The metrics themselves live in
``engine.analysis.metrics`` (pure functions on arrays).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.analysis.metrics import (
    confusion_matrix,
    disagreements,
    knn_predict,
    linear_cka,
    linear_probe_accuracy,
    mean_knn_overlap,
    per_class_accuracy,
)
from engine.errors import ParallaxError
from engine.models.base import IMAGE, TEXT
from engine.params import COMPARE, CompareParams
from engine.params import COMPARE_VERSION as COMPARE_VERSION  # re-exported
from engine.store.cache import make_key

if TYPE_CHECKING:
    import pandas as pd

    from engine.data.base import Dataset
    from engine.models.base import EmbeddingModel
    from engine.store.cache import Cache
    from engine.store.progress import ProgressCallback

# COMPARE_VERSION (bumped when a metric's definition changes) and every default: engine.params.
DEFAULT_MAX_ITEMS = COMPARE.max_items  # exact kNN is O(N^2 D): beyond this a sample is compared


# -- the full comparison ------------------------------------------------------------------------
@dataclass
class ComparisonReport:
    """Everything the Compare page shows, in the order models were given.

    ``models``: one dict per model (metrics, or ``error``). ``pairwise``: one dict per pair
    (``a``, ``b``, ``cka``, ``knn_overlap``). ``ids``/``labels``: the rows compared (a seeded
    sample past ``max_items``). ``predictions[model][source]``: per-row predicted labels
    (``"knn"`` always where labels exist, ``"zero_shot"`` for CLIP-like models), aligned with
    the labelled rows in ``ids``.
    """

    dataset: str
    key: str
    params: dict[str, Any]
    n_total: int
    n_used: int
    n_labelled: int
    models: list[dict[str, Any]]
    pairwise: list[dict[str, Any]]
    ids: list[str]
    labels: list[str | None]
    predictions: dict[str, dict[str, list[str]]]
    cached: bool = False
    seconds: float = 0.0
    _table: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def labelled_ids(self) -> list[str]:
        return [i for i, lab in zip(self.ids, self.labels, strict=True) if lab is not None]

    def disagreements(self, source: str = "knn") -> pd.DataFrame:
        """The disagreement table over labelled rows, built from one prediction source."""
        if source == "knn" and self._table is not None:
            return self._table
        preds = {m: p[source] for m, p in self.predictions.items() if source in p}
        truth = [lab for lab in self.labels if lab is not None]
        table = disagreements(preds, truth, self.labelled_ids)
        if source == "knn":
            self._table = table
        return table

    def warnings(self) -> list[str]:
        """Zero-shot results a model could not give honestly, one line each (model first)."""
        from engine.analysis.answerable import comparison_warnings

        return comparison_warnings(self.models, self.predictions, self.labels)

    def metric(self, model: str) -> dict[str, Any]:
        for m in self.models:
            if m["model"] == model:
                return m
        raise KeyError(model)

    def pairwise_matrix(self, metric: str = "cka") -> pd.DataFrame:
        """A symmetric model x model table of ``metric`` ("cka" or "knn_overlap"), 1 on the
        diagonal, for heatmaps."""
        import pandas as pd

        names = [m["model"] for m in self.models if not m.get("error")]
        out = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
        for p in self.pairwise:
            if p["a"] in out.index and p["b"] in out.index:
                out.loc[p["a"], p["b"]] = out.loc[p["b"], p["a"]] = p[metric]
        return out

    def to_json(self, include_items: bool = False) -> dict[str, Any]:
        """Per-model metrics and pairwise similarities; ``include_items`` adds the per-row
        predictions (what the cache stores) and the ids/labels they line up with."""
        payload: dict[str, Any] = {name: getattr(self, name) for name in _SUMMARY}
        payload |= {
            "n_disagreements": len(self.disagreements()) if self.predictions else 0,
            "warnings": self.warnings(),
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
        }
        if include_items:
            payload |= {name: getattr(self, name) for name in _ITEMS}
        return payload

    @classmethod
    def from_json(cls, data: Mapping[str, Any], cached: bool = True) -> ComparisonReport:
        stored = {name: read(data[name]) for name, read in (_SUMMARY | _ITEMS).items()}
        return cls(**stored, cached=cached, seconds=float(data.get("seconds", 0.0)))


# The report's stored fields, each with how it is read back from JSON: the summary always, the
# items (per-row predictions and what they line up with) in the cache entry.
_SUMMARY: dict[str, Callable[[Any], Any]] = {
    "dataset": str,
    "key": str,
    "params": dict,
    "n_total": int,
    "n_used": int,
    "n_labelled": int,
    "models": list,
    "pairwise": list,
}
_ITEMS: dict[str, Callable[[Any], Any]] = {
    "ids": list,
    "labels": list,
    "predictions": lambda stored: {m: dict(p) for m, p in stored.items()},
}


@dataclass
class _Run:
    """One model's embedding of the dataset (or why it has none).

    A model given by spec is built only when a metric needs it (zero-shot needs its text
    tower): cached vectors are found without it, so a cached comparison never loads a model.
    """

    name: str
    spec: str | EmbeddingModel
    device: str | None = None
    model: EmbeddingModel | None = None
    result: Any = None  # EmbeddingResult
    error: str | None = None
    load_failed: bool = False  # the model could not be built for a metric: do not cache

    def loaded(self) -> EmbeddingModel:
        if self.model is None:
            if not isinstance(self.spec, str):
                self.model = self.spec
            else:
                from engine.models import load_model

                try:
                    self.model = load_model(self.spec, device=self.device)
                except ParallaxError:
                    self.load_failed = True
                    raise
        return self.model

    def modalities(self) -> frozenset[str]:
        from engine.data.column_vectors import is_column_spec

        if isinstance(self.spec, str) and is_column_spec(self.spec):
            return frozenset()  # the dataset's own vectors: no model, so no zero-shot
        if self.model is not None or not isinstance(self.spec, str):
            return self.loaded().modalities
        from engine.models import modalities_of

        try:
            return modalities_of(self.spec)
        except ParallaxError:  # not a registry spec (a test's fake): ask the model itself
            return self.loaded().modalities


def _labels_digest(ids: Sequence[str], labels: Sequence[str | None]) -> str:
    # Labels are not part of a dataset fingerprint (which covers what models see), but they
    # change every supervised metric, so they are part of the comparison key.
    blob = json.dumps([list(ids), list(labels)], default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def comparison_key(
    dataset: Dataset, vectors_keys: Sequence[str], params: CompareParams | Mapping[str, Any]
) -> str:
    """The cache key of a comparison (``compare/<key>.json``): the vectors entries compared,
    the dataset's ids and labels, and every setting (``CompareParams.key_material``). Needs no
    model, so a finished comparison can be found and shown without loading one."""
    material = params.key_material() if isinstance(params, CompareParams) else dict(params)
    return make_key(
        kind="compare",
        vectors=list(vectors_keys),
        labels=_labels_digest(dataset.ids, dataset.labels),
        params=material,
    )


def _embed_all(
    dataset: Dataset,
    models: Sequence[str | EmbeddingModel],
    cache: Cache,
    modality: str | None,
    embed_options: Mapping[str, Any],
    progress: ProgressCallback | None,
) -> list[_Run]:
    from engine.embed.local import embed_dataset

    runs: list[_Run] = []
    for spec in models:
        name = spec if isinstance(spec, str) else str(spec.spec)
        run = _Run(name=name, spec=spec, device=embed_options.get("device"))
        try:
            run.result = embed_dataset(
                dataset, spec, modality=modality, cache=cache, progress=progress, **embed_options
            )
            run.name = str(run.result.model)
        except ParallaxError as exc:  # one model missing must not hide the others' results
            run.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        runs.append(run)
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ParallaxError(f"a model is listed twice: {names}")
    return runs


def _model_metrics(
    run: _Run,
    x: np.ndarray,
    labels: np.ndarray,
    labelled: np.ndarray,
    class_names: list[str],
    *,
    k: int,
    seed: int,
    test_size: float,
    templates: Sequence[str],
    ensemble: bool,
    max_train: int | None,
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    from engine.analysis.zeroshot import zero_shot_accuracy

    res = run.result
    out: dict[str, Any] = {
        "model": run.name,
        "modality": res.modality,
        "n": int(res.n),
        "dim": int(res.dim),
        "vectors_key": res.key,
        "failed": len(res.failed),
        "knn_accuracy": None,
        "linear_probe": None,
        "zero_shot": None,
        "per_class": None,
        "confusion": None,
        "confusion_source": None,
        "classes": class_names,
        "notes": [],
        "error": None,
    }
    preds: dict[str, list[str]] = {}
    xl, yl = x[labelled], labels[labelled]
    if len(class_names) < 2 or len(yl) < 2:
        out["notes"].append("no supervised metrics: the dataset needs at least 2 labels")
        return out, preds
    knn = knn_predict(xl, yl, k)
    out["knn_accuracy"] = float(np.mean(knn == yl))
    preds["knn"] = knn.tolist()
    try:
        probe = linear_probe_accuracy(xl, yl, test_size=test_size, seed=seed, max_train=max_train)
        out["linear_probe"] = {key: probe[key] for key in ("accuracy", "n_train", "n_test")}
        out["per_class"] = per_class_accuracy(
            yl[probe["test_indices"]], probe["predictions"], class_names
        )
        out["confusion"] = confusion_matrix(
            yl[probe["test_indices"]], probe["predictions"], class_names
        ).tolist()
        out["confusion_source"] = "linear_probe"
    except ParallaxError as exc:
        out["notes"].append(f"linear probe skipped: {exc}")
    try:
        clip_like = {IMAGE, TEXT} <= run.modalities()
    except ParallaxError as exc:
        clip_like = False
        out["notes"].append(f"zero-shot skipped: {exc}")
    if clip_like:
        try:
            zs = zero_shot_accuracy(xl, yl, run.loaded(), class_names, templates, ensemble)
            preds["zero_shot"] = zs.pop("predictions")
            out["zero_shot"] = zs
            if out["confusion"] is None:
                out["per_class"], out["confusion"] = zs["per_class"], zs["confusion"]
                out["confusion_source"] = "zero_shot"
        except ParallaxError as exc:
            out["notes"].append(f"zero-shot skipped: {exc}")
    return out, preds


def compare_models(
    dataset: Dataset | str,
    model_specs: Sequence[str | EmbeddingModel],
    *,
    cache: Cache | None = None,
    k: int = COMPARE.k,
    seed: int = COMPARE.seed,
    templates: Sequence[str] | None = None,
    ensemble: bool = COMPARE.ensemble,
    test_size: float = COMPARE.test_size,
    max_items: int | None = COMPARE.max_items,
    max_train: int | None = COMPARE.max_train,
    modality: str | None = None,
    embed_options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> ComparisonReport:
    """Embed ``dataset`` with every model (cached) and compare them; see ``ComparisonReport``.

    Each model embeds the dataset's images when it can, else its texts (``modality`` forces
    one). Rows a model failed to embed are left out for every model, so all metrics and pairs
    are computed on the same rows. Past ``max_items`` rows a seeded sample is used (exact kNN
    is quadratic). A model that cannot be loaded or embedded is reported with ``error``.
    """
    from engine.store.cache import Cache
    from engine.store.memo import json_entry

    t0 = time.perf_counter()
    cache = Cache.or_default(cache)
    from engine.data import as_dataset

    dataset = as_dataset(dataset, cache.root)
    if not model_specs:
        raise ParallaxError("compare needs at least one model")
    settings = CompareParams(
        k=k,
        seed=seed,
        templates=None if templates is None else tuple(templates),
        ensemble=ensemble,
        test_size=test_size,
        max_items=max_items,
        max_train=max_train,
    )
    tmpl = settings.checked_templates()
    runs = _embed_all(dataset, model_specs, cache, modality, embed_options or {}, progress)

    params = settings.key_material()
    key = comparison_key(
        dataset, [r.result.key if r.result else f"error:{r.name}" for r in runs], params
    )
    # Failed models are usually transient (weights missing, typo): never cache their absence.
    cacheable = all(r.error is None for r in runs)

    def compute() -> ComparisonReport:
        return _compute(dataset, runs, key, params, tmpl, progress)

    report = json_entry(
        cache,
        "compare",
        key,
        compute,
        decode=lambda obj: ComparisonReport.from_json(obj, cached=True) if cacheable else None,
        encode=lambda r: r.to_json(include_items=True),
        keep=lambda r: cacheable and not any(run.load_failed for run in runs),
    ).value
    report.seconds = time.perf_counter() - t0
    return report


def _compute(
    dataset: Dataset,
    runs: list[_Run],
    key: str,
    params: dict[str, Any],
    templates: list[str],
    progress: ProgressCallback | None,
) -> ComparisonReport:
    from engine.store.progress import ProgressTracker

    n = len(dataset)
    ok = [r for r in runs if r.error is None]
    # Rows any model failed on hold zero vectors: drop them for everyone.
    position = {item_id: i for i, item_id in enumerate(dataset.ids)}
    valid = np.ones(n, dtype=bool)
    for r in ok:
        for f in r.result.failed:
            if f.get("id") in position:
                valid[position[f["id"]]] = False
    rows = np.flatnonzero(valid)
    max_items = params["max_items"]
    if max_items is not None and len(rows) > max_items:
        rng = np.random.default_rng(params["seed"])
        rows = np.sort(rng.choice(rows, size=int(max_items), replace=False))
    all_labels = dataset.labels
    used_labels = [all_labels[i] for i in rows]
    labelled = np.array([lab is not None for lab in used_labels], dtype=bool)
    labels = np.array(["" if lab is None else str(lab) for lab in used_labels], dtype=object)
    # Zero-shot classes are the dataset's own label strings, whether or not the sample has them.
    class_names = sorted({str(lab) for lab in all_labels if lab is not None})

    n_pairs = len(ok) * (len(ok) - 1) // 2
    tracker = ProgressTracker("compare models", len(ok) + n_pairs, progress)
    tracker.emit()
    vectors: dict[str, np.ndarray] = {}
    metrics: list[dict[str, Any]] = []
    predictions: dict[str, dict[str, list[str]]] = {}
    for r in runs:
        if r.error is not None:
            metrics.append({"model": r.name, "error": r.error})
            continue
        # Fancy indexing a memmap reads just these rows.
        x = np.asarray(r.result.vectors()[rows], dtype=np.float32)
        vectors[r.name] = x
        m, preds = _model_metrics(
            r,
            x,
            labels,
            labelled,
            class_names,
            k=params["k"],
            seed=params["seed"],
            test_size=params["test_size"],
            templates=templates,
            ensemble=params["ensemble"],
            max_train=params["max_train"],
        )
        metrics.append(m)
        if preds:
            predictions[r.name] = preds
        tracker.advance(1)

    pairwise: list[dict[str, Any]] = []
    names = [r.name for r in ok]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if len(rows) >= 2:
                cka = linear_cka(vectors[a], vectors[b])
                overlap = mean_knn_overlap(vectors[a], vectors[b], params["k"])
            else:
                cka = overlap = None
            pairwise.append({"a": a, "b": b, "cka": cka, "knn_overlap": overlap})
            tracker.advance(1)

    return ComparisonReport(
        dataset=dataset.spec,
        key=key,
        params=params,
        n_total=n,
        n_used=len(rows),
        n_labelled=int(labelled.sum()),
        models=metrics,
        pairwise=pairwise,
        ids=[dataset.ids[i] for i in rows],
        labels=used_labels,
        predictions=predictions,
    )
