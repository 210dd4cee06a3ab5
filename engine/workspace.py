"""The engine's one door: a ``Workspace`` owns the cache, the policy, the held datasets and
models, and offers every verb (open, embed, map, compare, predict, search, find, export, bundle).

The dashboard, the CLI and the HTTP service each build one ``Workspace`` and call only it (plus
the parameter, error and settings types), so a job is written once and a rule written here
holds on every door. A workspace is either the operator's (``policy`` is None: the command
line, trusted) or a visitor's (``Workspace.visitor``: the same cache and held objects, seen
through that visitor's ``VisitorPolicy``, so every spec a visitor names is checked here and
nowhere else).

Heavy libraries are imported inside the verbs that need them: building a workspace and
browsing cached maps never imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from engine import settings
from engine.errors import ParallaxError
from engine.params import (
    FINDINGS,
    PREDICT,
    PROJECTION,
    SEARCH,
    FindingsParams,
    PredictParams,
    ProjectionParams,
)
from engine.policy import VisitorPolicy
from engine.store.cache import Cache
from engine.store.held import Held

if TYPE_CHECKING:
    from engine.analysis.compare import ComparisonReport
    from engine.analysis.findings import Findings
    from engine.analysis.predict import PredictionRun
    from engine.data.base import Dataset
    from engine.embed.local import EmbeddingResult
    from engine.maps.project import ProjectionResult
    from engine.models.base import EmbeddingModel
    from engine.store.cache import Entry
    from engine.store.progress import ProgressCallback

log = logging.getLogger(__name__)

Backend = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = ("local", "ray")


class NotEmbedded(ParallaxError):
    """A verb that reads vectors found none for this dataset and model (embed first)."""


class NotMapped(ParallaxError):
    """No cached map of these vectors with these parameters (project first)."""


@dataclass(frozen=True)
class SearchHit:
    row: int
    id: str
    label: str | None
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"index": self.row, "id": self.id, "label": self.label, "score": self.score}


@dataclass
class SearchResult:
    """The ``k`` nearest rows to a query, how they were found, and what the model missed."""

    dataset: str
    model: str
    query_kind: str
    index: str  # "exact" or "ivf"
    n: int
    hits: list[SearchHit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None  # every row's cosine (asked for by maps that colour by it)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "query_kind": self.query_kind,
            "index": self.index,
            "n": self.n,
            "results": [h.to_json() for h in self.hits],
            "warnings": list(self.warnings),
        }


class _Shared:
    """What every door of one process shares under one cache root: the cache and the held
    datasets and prompt vectors (models are held process-wide by ``engine.models``)."""

    def __init__(self, cache: Cache) -> None:
        from engine.data.base import approx_nbytes

        self.cache = cache
        self.datasets: Held[str, Dataset] = Held(
            "datasets", settings.DATASET_CACHE_BYTES, size_of=approx_nbytes, max_entries=16
        )
        self.class_vectors: Held[tuple, np.ndarray] = Held(
            "prompt vectors", 64 * 1024**2, size_of=lambda a: int(a.nbytes), max_entries=256
        )


_SHARED: dict[str, _Shared] = {}


def _shared_for(root: Path) -> _Shared:
    key = str(root)
    hit = _SHARED.get(key)
    if hit is None:
        hit = _SHARED.setdefault(key, _Shared(Cache(root)))
    return hit


class Workspace:
    """One deployment's engine: build it once per process (``Workspace()``), hand visitors
    ``ws.visitor(owner)``. ``cache_root`` defaults to ``PARALLAX_CACHE`` or ``./cache``."""

    def __init__(
        self,
        cache_root: str | os.PathLike[str] | None = None,
        *,
        policy: VisitorPolicy | None = None,
    ) -> None:
        root = settings.cache_dir(cache_root)
        self._shared = _shared_for(root)
        self.policy = policy

    # -- who is asking -------------------------------------------------------------------------
    @property
    def cache(self) -> Cache:
        return self._shared.cache

    @property
    def root(self) -> Path:
        return self.cache.root

    @property
    def is_visitor(self) -> bool:
        return self.policy is not None

    def visitor(
        self, owner: str | None = None, operator_files: Iterable[str | os.PathLike[str] | None] = ()
    ) -> Workspace:
        """The same workspace seen by a visitor of a shared deployment: every spec they name
        is checked by their policy (deny by default); their own uploads are theirs."""
        ws = Workspace.__new__(Workspace)
        ws._shared = self._shared
        ws.policy = VisitorPolicy.for_visitor(self.root, owner, operator_files)
        return ws

    def check_dataset_spec(self, spec: str) -> None:
        if self.policy is not None:
            self.policy.check_dataset_spec(spec)

    def check_model_spec(self, spec: str) -> None:
        if self.policy is not None:
            self.policy.check_model_spec(spec)

    # -- datasets ------------------------------------------------------------------------------
    def open(self, spec: str, *, progress: ProgressCallback | None = None) -> Dataset:
        """The opened dataset for ``spec``, held for every caller under the dataset budget."""
        self.check_dataset_spec(spec)
        from engine.data import open_dataset

        return self._shared.datasets.get_or_build(
            spec, lambda: open_dataset(spec, cache_root=self.root, progress=progress)
        )

    def dataset(self, dataset: Dataset | str, *, progress: ProgressCallback | None = None):
        """A dataset object from a spec or an already opened dataset."""
        return self.open(dataset, progress=progress) if isinstance(dataset, str) else dataset

    def demos(self) -> list[dict[str, Any]]:
        from engine.data import list_demos

        return [dict(d) for d in list_demos()]

    # -- models --------------------------------------------------------------------------------
    def model(self, spec: str, *, device: str | None = None) -> EmbeddingModel:
        """The loaded model for ``spec``, held process-wide under the model budget."""
        self.check_model_spec(spec)
        from engine.models import load_model

        return load_model(spec, device=device)

    def models(self) -> list[dict[str, Any]]:
        """The model catalogue (spec, kind, modalities, description, available offline)."""
        from engine.models import known_models

        return [dict(m) for m in known_models()]

    def models_for(self, dataset: Dataset, specs: Iterable[str]):
        """Which of ``specs`` fit ``dataset`` (nothing is loaded), and why the others do not."""
        from engine.models.choice import models_for

        return models_for(dataset, specs)

    # -- vectors -------------------------------------------------------------------------------
    def embed(
        self,
        dataset: Dataset | str,
        model: str,
        *,
        backend: Backend = "local",
        modality: str | None = None,
        batch_size: int | None = None,
        device: str | None = None,
        ray_options: Any = None,
        progress: ProgressCallback | None = None,
    ) -> EmbeddingResult:
        """Embed every item of ``dataset`` with ``model`` (cached by content; resumes)."""
        if backend not in BACKENDS:
            raise ParallaxError(f"backend is one of {', '.join(BACKENDS)}, not {backend!r}")
        ds = self.dataset(dataset)
        self.check_model_spec(model)
        if backend == "ray":
            from engine.embed.ray_backend import embed_dataset_ray

            return embed_dataset_ray(
                ds,
                model,
                modality=modality,
                cache=self.cache,
                batch_size=batch_size,
                options=ray_options,
                progress=progress,
            )
        from engine.embed.local import embed_dataset

        return embed_dataset(
            ds,
            model,
            modality=modality,
            cache=self.cache,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )

    def embeddings(self, dataset: Dataset) -> dict[str, dict[str, Entry]]:
        """Every model's finished vectors of ``dataset`` (model spec -> modality -> entry)."""
        from engine.store.catalog import embeddings

        return embeddings(dataset, self.cache)

    def vectors(self, dataset: Dataset, model: str, modality: str | None = None) -> Entry:
        """The finished vectors of ``dataset`` under ``model`` (no model is loaded); images
        first when there are both. ``NotEmbedded`` when there are none yet."""
        self.check_model_spec(model)
        from engine.store.catalog import embeddings_by

        entries = embeddings_by(dataset, model, self.cache)
        if modality is not None:
            entries = [e for e in entries if e.manifest.get("modality") == modality]
        if not entries:
            raise NotEmbedded(
                f"{dataset.spec} is not embedded with {model} yet: embed it first "
                f"(python -m engine embed --dataset {dataset.spec} --model {model})"
            )
        entries.sort(key=lambda e: (e.manifest.get("modality") != "image", e.key))
        return entries[0]

    # -- maps ----------------------------------------------------------------------------------
    def map(
        self,
        vectors: Entry | np.ndarray | str | Path,
        params: ProjectionParams = PROJECTION,
        *,
        progress: ProgressCallback | None = None,
    ) -> ProjectionResult:
        """A 2-D map of ``vectors`` (cached under the vectors' key and ``params``)."""
        from engine.maps.project import project

        return project(
            vectors,
            params.method,
            seed=params.seed,
            n_neighbors=params.n_neighbors,
            min_dist=params.min_dist,
            fit_sample=params.fit_sample,
            cache=self.cache,
            progress=progress,
        )

    def cached_map(self, vectors: Entry | str, params: ProjectionParams = PROJECTION):
        """The cached map of ``vectors`` under ``params``, or None (nothing is computed)."""
        from engine.store.catalog import cached_map

        return cached_map(vectors, params, self.cache)

    def map_coords(
        self, dataset: Dataset, model: str, params: ProjectionParams = PROJECTION
    ) -> np.ndarray:
        """The cached map's coordinates (N x 2); ``NotMapped`` when there is none."""
        entry = self.vectors(dataset, model)
        found = self.cached_map(entry, params)
        if found is None:
            raise NotMapped(
                f"no cached {params.method} map of {dataset.spec} under {model}: run `python "
                f"-m engine project --dataset {dataset.spec} --model {model} --method "
                f"{params.method}` first"
            )
        return np.asarray(found.load(), dtype=np.float32)

    # -- analysis ------------------------------------------------------------------------------
    def compare(
        self,
        dataset: Dataset | str,
        models: Sequence[str],
        params: Any = None,
        *,
        progress: ProgressCallback | None = None,
        **options: Any,
    ) -> ComparisonReport:
        """Metrics of every model and every pair of models on ``dataset`` (cached)."""
        from engine.analysis.compare import compare_models

        for spec in models:
            self.check_model_spec(spec)
        if params is not None:  # a CompareParams: its fields are compare_models' options
            fields = ("k", "seed", "templates", "ensemble", "test_size", "max_items", "max_train")
            options = {**{f: getattr(params, f) for f in fields}, **options}
        return compare_models(
            self.dataset(dataset), list(models), cache=self.cache, progress=progress, **options
        )

    def predict(
        self,
        models: Sequence[str],
        labels: Sequence[str],
        *,
        images: list[Any] | None = None,
        texts: list[str] | None = None,
        params: PredictParams = PREDICT,
        on_step: Callable[..., None] | None = None,
    ) -> PredictionRun:
        """Every model's zero-shot answer for ``images`` and ``texts`` among ``labels`` (one
        loop for every door; a model that fails gets its one-line error, the others run)."""
        from engine.analysis.predict import check_request, predict_each

        check_request(len(images or []) + len(texts or []), list(models), False, labels)
        return predict_each(
            list(models),
            list(images or []),
            list(texts or []),
            labels,
            params=params,
            load=self.model,
            on_step=on_step,
        )

    def class_vectors(
        self, model: EmbeddingModel, labels: Sequence[str], params: PredictParams = PREDICT
    ) -> np.ndarray:
        """Label-prompt embeddings, held for the next request with the same labels."""
        from engine.analysis.zeroshot import class_text_embeddings

        key = (str(model.spec), tuple(labels), tuple(params.templates), params.ensemble)
        return self._shared.class_vectors.get_or_build(
            key,
            lambda: class_text_embeddings(
                model, list(labels), list(params.templates), params.ensemble
            ),
        )

    def search(
        self,
        dataset: Dataset | str,
        model: str,
        query: str | np.ndarray | Any,
        *,
        k: int = SEARCH.k,
        all_scores: bool = False,
        embed: Callable[[EmbeddingModel, str, list[Any]], np.ndarray] | None = None,
    ) -> SearchResult:
        """The ``k`` items nearest to ``query`` (a text, an image, or a vector) under ``model``.

        Exact cosine search below ``SearchParams.ivf_above`` rows, faiss IVF above, the same on
        every door. ``all_scores`` also returns every row's cosine (for colouring a map).
        ``embed`` lets a server batch the query with others (default: the model's own call).
        """
        from engine.analysis.search import index_for, normalise

        if not 1 <= int(k) <= SEARCH.max_k:
            raise ParallaxError(f"k is 1 to {SEARCH.max_k}, not {k}")
        ds = self.dataset(dataset)
        entry = self.vectors(ds, model)
        warnings: list[str] = []
        if isinstance(query, np.ndarray):
            kind, vector = "vector", np.asarray(query, dtype=np.float32).reshape(1, -1)
        else:
            m = self.model(model)
            kind = "text" if isinstance(query, str) else "image"
            if kind not in m.modalities:
                raise ParallaxError(f"{model} cannot embed a {kind} query")
            call = embed or (lambda mm, mod, items: getattr(mm, f"embed_{mod}s")(items))
            vector = np.asarray(call(m, kind, [query]), dtype=np.float32).reshape(1, -1)
            if kind == "text":
                from engine.analysis.answerable import query_warnings

                warnings = query_warnings(m, query)
        index = index_for(entry.key, entry.load)
        if vector.shape[1] != index.dim:
            raise ParallaxError(f"query has {vector.shape[1]} dimensions, the vectors {index.dim}")
        idx, sims = index.search(vector, int(k))
        hits = [
            SearchHit(int(i), ds.ids[int(i)], ds.labels[int(i)], round(float(s), 6))
            for i, s in zip(idx[0], sims[0], strict=True)
            if i >= 0
        ]
        scores = None
        if all_scores:
            scores = normalise(np.asarray(entry.load(), dtype=np.float32)) @ normalise(vector)[0]
        return SearchResult(ds.spec, model, kind, index.kind, index.n, hits, warnings, scores)

    # -- outputs -------------------------------------------------------------------------------
    def export(
        self,
        dataset: Dataset | str,
        models: Sequence[str],
        out: str | Path,
        *,
        progress: ProgressCallback | None = None,
        **options: Any,
    ):
        """One Parquet with ids, labels, metadata and every model's map (``ExportResult``)."""
        from engine.outputs.export import export_parquet

        for spec in models:
            self.check_model_spec(spec)
        return export_parquet(
            self.dataset(dataset), list(models), out, cache=self.cache, progress=progress, **options
        )

    def bundle(
        self,
        dataset: Dataset | str,
        models: Sequence[str],
        out: str | Path,
        *,
        progress: ProgressCallback | None = None,
        **options: Any,
    ):
        """A view-only bundle (``.parallax.zip``) of the dataset, its vectors and maps."""
        from engine.outputs.bundle import write_bundle

        for spec in models:
            self.check_model_spec(spec)
        return write_bundle(
            self.dataset(dataset), list(models), out, cache=self.cache, progress=progress, **options
        )

    # -- housekeeping --------------------------------------------------------------------------
    def held(self) -> Mapping[str, int]:
        """Approximate bytes held in memory by kind (for /v1/health and budgets)."""
        from engine.models.registry import loaded_models

        return {
            "datasets": self._shared.datasets.nbytes,
            "models": loaded_models().nbytes,
            "prompt_vectors": self._shared.class_vectors.nbytes,
        }

    def release(self) -> None:
        """Drop every held dataset, model and prompt vector (memory comes back)."""
        from engine.models.registry import clear_cache

        self._shared.datasets.clear()
        self._shared.class_vectors.clear()
        clear_cache()

    # -- findings ------------------------------------------------------------------------------
    def find(
        self,
        dataset: Dataset | str,
        models: Sequence[str],
        *,
        label_column: str | None = None,
        split_column: str | None = None,
        params: FindingsParams = FINDINGS,
        progress: ProgressCallback | None = None,
    ) -> Findings:
        """Label errors, exact and near duplicates, outliers, leaks between splits and named
        clusters of ``dataset``, per model and across ``models`` (cached; see
        ``engine.analysis.findings``). Models without finished vectors are embedded first.
        ``label_column``: a metadata column instead of the labels; ``split_column``: the
        column leaks cross (default: ``split`` when the dataset has one)."""
        from engine.analysis.findings_run import find_in_dataset

        names = list(dict.fromkeys(models))
        if not names:
            raise ParallaxError("findings need at least one --model")
        for spec in names:
            self.check_model_spec(spec)
        ds = self.dataset(dataset, progress=progress)
        entries: dict[str, Entry] = {}
        for spec in names:
            try:
                entries[spec] = self.vectors(ds, spec)
            except NotEmbedded:
                result = self.embed(ds, spec, progress=progress)
                entries[spec] = self.cache.get("vectors", result.key) or self.vectors(ds, spec)
        return find_in_dataset(
            ds,
            entries,
            self.cache,
            label_column=label_column,
            split_column=split_column,
            params=params,
            progress=progress,
        )
