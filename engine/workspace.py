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

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from engine import settings
from engine.errors import NotFound, ParallaxError
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
from engine.store.held import Held, start_reaper

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


class NotEmbedded(NotFound):
    """A verb that reads vectors found none for this dataset and model (embed first)."""

    code = "not_embedded"


class NotMapped(NotFound):
    """No cached map of these vectors with these parameters (project first)."""

    code = "not_mapped"


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
        out = {k: getattr(self, k) for k in ("dataset", "model", "query_kind", "index", "n")}
        return out | {"results": [h.to_json() for h in self.hits], "warnings": list(self.warnings)}


class _Shared:
    """What every door of one process shares under one cache root: the cache and the held
    datasets and prompt vectors (models are held process-wide by ``engine.models``)."""

    def __init__(self, cache: Cache) -> None:
        from engine.data.base import approx_nbytes

        self.cache = cache
        idle = settings.IDLE_RELEASE_S
        self.datasets: Held[str, Dataset] = Held(
            "datasets",
            settings.DATASET_CACHE_BYTES,
            size_of=approx_nbytes,
            max_entries=16,
            max_idle_s=idle,
        )
        self.class_vectors: Held[tuple, np.ndarray] = Held(
            "prompt vectors",
            64 * 1024**2,
            size_of=lambda a: int(a.nbytes),
            max_entries=256,
            max_idle_s=idle,
        )
        if idle > 0:
            start_reaper(every_s=max(1.0, min(60.0, idle / 4)))


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
        """Refuse a model a visitor may not load (``ModelRefused``); the operator may load any."""
        if self.policy is not None:
            self.policy.check_model_spec(spec)

    def check_model_name(self, spec: str) -> None:
        """Refuse a model a visitor may not even name to read vectors cached under it."""
        if self.policy is not None:
            self.policy.check_model_name(spec)

    def allowed_model_specs(self, specs: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split ``specs`` (a link's model list: visitor input) into (allowed, refusal lines),
        by the naming rules: cached vectors may be shown; loading is checked again."""
        from engine.policy import PolicyError

        ok: list[str] = []
        refused: list[str] = []
        for spec in specs:
            try:
                self.check_model_name(spec)
            except PolicyError as exc:
                refused.append(str(exc))
            except ParallaxError:  # does not parse: it may still name cached vectors
                ok.append(spec)
            else:
                ok.append(spec)
        return ok, refused

    # -- datasets ------------------------------------------------------------------------------
    def open(self, spec: str, *, progress: ProgressCallback | None = None) -> Dataset:
        """The opened dataset for ``spec``, held for every caller under the dataset budget.
        The operator may open a manifest without images of up to ``MAX_TABLE_ITEMS`` rows
        (held as columns); a visitor stays under ``MAX_ITEMS`` for every kind."""
        self.check_dataset_spec(spec)
        from engine.data import open_dataset
        from engine.data.base import operator_tables, visitor_refusal

        with operator_tables(not self.is_visitor):
            dataset = self._shared.datasets.get_or_build(
                spec, lambda: open_dataset(spec, cache_root=self.root, progress=progress)
            )
        why = visitor_refusal(dataset) if self.is_visitor else None
        if why is not None:
            from engine.policy import DatasetRefused

            raise DatasetRefused(why)
        return dataset

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
        workers: int | None = None,
        ray_options: Any = None,
        progress: ProgressCallback | None = None,
    ) -> EmbeddingResult:
        """Embed every item of ``dataset`` with ``model`` (cached by content; resumes).
        ``ray_options``: a ``RayOptions`` or a mapping of its fields (``address``, ``actors``)."""
        if backend not in BACKENDS:
            raise ParallaxError(f"backend is one of {', '.join(BACKENDS)}, not {backend!r}")
        ds = self.dataset(dataset)
        self.check_model_spec(model)
        # What both backends take; each adds its own (Ray: its options; local: device, workers).
        common: dict[str, Any] = {
            "modality": modality,
            "cache": self.cache,
            "batch_size": batch_size,
            "progress": progress,
        }
        if backend == "ray":
            from engine.embed.ray_backend import RayOptions, embed_dataset_ray

            if isinstance(ray_options, Mapping):
                ray_options = RayOptions(**ray_options)
            return embed_dataset_ray(ds, model, options=ray_options, **common)
        from engine.embed.local import embed_dataset

        return embed_dataset(ds, model, device=device, workers=workers, **common)

    def embeddings(self, dataset: Dataset) -> dict[str, dict[str, Entry]]:
        """Every model's finished vectors of ``dataset`` (model spec -> modality -> entry)."""
        from engine.store.catalog import embeddings

        return embeddings(dataset, self.cache)

    def vectors(self, dataset: Dataset, model: str, modality: str | None = None) -> Entry:
        """The finished vectors of ``dataset`` under ``model`` (no model is loaded); images
        first when there are both. ``NotEmbedded`` when there are none yet."""
        self.check_model_name(model)  # reading vectors builds nothing: naming rules only
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
        device: str | None = None,
        embed: Callable[[EmbeddingModel, str, list[Any]], np.ndarray] | None = None,
    ) -> PredictionRun:
        """Every model's zero-shot answer for ``images`` and ``texts`` among ``labels`` (one
        loop for every door; a model that fails gets its one-line error, the others run).

        Each spec passes the policy as it loads (``model``): a refused or broken one is that
        model's one-line error and the others still answer (the HTTP service checks every spec
        up front instead, and refuses the request). Label prompts' vectors are held
        (``class_vectors``).
        ``embed`` lets a server batch the inputs with other requests (default: the model's own
        call)."""
        from engine.analysis.predict import check_request, predict_each

        check_request(len(images or []) + len(texts or []), list(models), False, labels)
        return predict_each(
            list(models),
            list(images or []),
            list(texts or []),
            labels,
            params=params,
            load=lambda spec: self.model(spec, device=device),
            on_step=on_step,
            class_vectors=lambda model, names: self.class_vectors(model, names, params),
            embed=embed,
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
        self, dataset: Dataset | str, models: Sequence[str], out: str | Path, **options: Any
    ):
        """One Parquet with ids, labels, metadata and every model's map (``ExportResult``);
        ``options`` are ``export_parquet``'s (``method``, ``vectors``, ``neighbours``,
        ``thumbnails``, ``progress``)."""
        from engine.outputs.export import export_parquet

        return self._write_out(export_parquet, dataset, models, out, options)

    def bundle(
        self, dataset: Dataset | str, models: Sequence[str], out: str | Path, **options: Any
    ):
        """A view-only bundle (``.parallax.zip``) of the dataset, its vectors and maps;
        ``options`` are ``write_bundle``'s (``methods``, ``include_vectors``, ``progress``)."""
        from engine.outputs.bundle import write_bundle

        return self._write_out(write_bundle, dataset, models, out, options)

    def _write_out(
        self,
        writer: Callable[..., Any],
        dataset: Dataset | str,
        models: Sequence[str],
        out: str | Path,
        options: dict[str, Any],
    ) -> Any:
        """Every output: the models checked against the policy first, then written from this
        workspace's cache."""
        for spec in models:
            self.check_model_spec(spec)
        return writer(self.dataset(dataset), list(models), out, cache=self.cache, **options)

    # -- housekeeping --------------------------------------------------------------------------
    def held(self) -> Mapping[str, int]:
        """Approximate bytes held in memory by kind (for /v1/health and budgets)."""
        from engine.models.registry import loaded_models

        return {
            "datasets": self._shared.datasets.nbytes,
            "models": loaded_models().nbytes,
            "prompt_vectors": self._shared.class_vectors.nbytes,
        }

    def on_release(self, hook: Callable[[], None]) -> None:
        """Have the idle reaper call ``hook`` on every tick, before it trims the heap: what a
        front end keeps per visitor beyond the workspace (a web framework's closed sessions)
        goes then too."""
        from engine.store.held import add_release_hook

        add_release_hook(hook)

    def release(self) -> None:
        """Drop every held dataset, model and prompt vector (memory comes back)."""
        from engine.models.registry import clear_cache

        self._shared.datasets.clear()
        self._shared.class_vectors.clear()
        clear_cache()

    # -- cli ---------------------------------------------------------------------------------
    # Thin delegates the command line needs beyond the verbs above (so it reaches the engine
    # through this module, params, errors and settings only).
    def _operator_only(self, verb: str) -> None:
        if self.policy is not None:
            from engine.errors import Forbidden

            raise Forbidden(f"{verb} is for the operator, not for a visitor")

    def inspect(self, spec: str) -> dict[str, Any]:
        """What ``spec`` holds: size, kinds, label counts, metadata columns, skipped files."""
        ds = self.open(spec)
        labels: dict[str, int] = {}
        for label in ds.labels:
            key = "(none)" if label is None else str(label)
            labels[key] = labels.get(key, 0) + 1
        return {
            "spec": ds.spec,
            "name": ds.name,
            "n": len(ds),
            "has_images": ds.has_images,
            "has_texts": ds.texts is not None,
            "labels": labels,
            "metadata_columns": list(ds.metadata().columns),
            "fingerprint": ds.fingerprint(),
            "skipped": [{"source": s.source, "reason": s.reason} for s in ds.skipped],
        }

    def cache_usage(self, kind: str | None = None) -> dict[str, Any]:
        """Every kind of cache entry with its count and size, and every entry (newest use
        first; vectors and maps say what made them). ``kind`` keeps that kind's entries."""
        import time

        from engine.store.space import kind_of

        self._operator_only("listing the cache")
        if kind is not None:
            kind_of(kind)  # an unknown kind is one clear line
        every, kinds = self.cache.survey()
        stored = sorted(
            (e for e in every if kind in (None, e.kind)), key=lambda e: e.last_used, reverse=True
        )
        manifests = {(e.kind, e.key): e.manifest for e in self.cache.entries()}
        rows = []
        for e in stored:
            row: dict[str, Any] = {
                "kind": e.kind,
                "key": e.key,
                "name": e.name,
                "bytes": e.bytes,
                "last_used": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(e.last_used)),
            }
            if e.kind in ("vectors", "projections"):  # array entries: say what made them
                m = manifests.get((e.kind, e.key), {})
                row |= {k: m.get(k) for k in ("dataset", "model", "method", "shape", "created")}
            rows.append(row)
        return {
            "root": str(self.root),
            "total_bytes": sum(k.bytes + k.other_bytes for k in kinds),
            "kinds": [
                {
                    "kind": k.kind,
                    "entries": k.entries,
                    "bytes": k.bytes,
                    "other_bytes": k.other_bytes,
                    "holds": k.holds,
                }
                for k in kinds
            ],
            "entries": rows,
        }

    def prune(self, max_bytes: int | str | None = None):
        """Remove leftovers, then least-recently-used entries until the cache fits in
        ``max_bytes`` (``20G`` style or bytes; default ``PARALLAX_CACHE_MAX_BYTES`` or 20 GB).
        Entries in use stay; uploads unused for ``PARALLAX_UPLOAD_TTL_S`` go first, whatever
        the size. Returns the ``PruneReport`` (its ``max_bytes`` is the limit)."""
        self._operator_only("pruning the cache")
        from engine.store.uploads import expire_uploads

        expired = expire_uploads(self.cache)
        if expired:
            log.info("prune: %d uploads past their time to live removed", len(expired))
        if max_bytes is None:
            limit = settings.cache_max_bytes()
        elif isinstance(max_bytes, str):
            limit = settings.parse_size(max_bytes)
        else:
            limit = int(max_bytes)
        report = self.cache.prune(limit)
        log.info("pruned %s to %d bytes: %d entries removed", self.root, limit, len(report.removed))
        return report

    @staticmethod
    def format_bytes(n: float) -> str:
        """``1536`` -> ``1.5 kB``: how every door prints a size."""
        from engine.store.space import format_bytes

        return format_bytes(n)

    # -- dashboard ---------------------------------------------------------------------------
    # What the pages need beyond the verbs above: thin delegates to the engine modules, each
    # taking this workspace's cache (and, where a spec is named, its policy), so the dashboard
    # reaches the engine through this class, ``params``, ``errors`` and ``settings`` only.
    def warm_up(self) -> None:
        """Import the map path's libraries in a background thread (once per process)."""
        from engine.maps.project import start_warm_up

        start_warm_up()

    def vectors_of(self, dataset: Dataset, model: str) -> list[Entry]:
        """This dataset's finished vectors made by ``model``, one per modality, newest first
        (from the cache alone: nothing is loaded, so no spec is checked)."""
        from engine.store.catalog import embeddings_by

        return embeddings_by(dataset, model, self.cache)

    def cached_report(
        self,
        dataset: Dataset,
        embedded: Mapping[str, Mapping[str, Entry]],
        models: Sequence[str],
        params: Any,
    ) -> ComparisonReport | None:
        """The comparison ``compare`` would return from the cache, or None (nothing loaded)."""
        from engine.store.catalog import cached_report

        return cached_report(dataset, embedded, list(models), params, self.cache)

    def map_quality(self, vectors: np.ndarray, coords: np.ndarray) -> dict[str, float]:
        """Trustworthiness and k-NN recall of a 2-D map of ``vectors`` (a seeded sample)."""
        from engine.maps.project import map_quality

        return map_quality(vectors, coords)

    def agreement(self, a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
        """Per row, the share of its ``k`` nearest neighbours two vector sets agree on."""
        from engine.analysis.metrics import knn_overlap

        return np.asarray(knn_overlap(np.asarray(a), np.asarray(b), int(k)), dtype=np.float32)

    def align_maps(self, maps: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every map aligned onto the first (similarity transform on the shared items)."""
        from engine.maps.align import align_maps

        return align_maps(list(maps))

    def displacement(self, reference: np.ndarray, other: np.ndarray) -> np.ndarray:
        """Each item's move between two aligned maps, in RMS radii of ``reference``."""
        from engine.maps.align import displacement

        return displacement(reference, other)

    def thumbnails(
        self,
        dataset: Dataset,
        rows: Iterable[int],
        *,
        size: int | None = None,
        build_missing: bool = False,
    ) -> list[Any]:
        """Small images of the items at ``rows`` (cut from cached sheets; an item whose sheet
        is not built is decoded alone unless ``build_missing``)."""
        from engine.data.thumbnails import THUMB_SIZE, thumbnails

        return thumbnails(
            dataset, [int(r) for r in rows], self.cache, size or THUMB_SIZE, build_missing
        )

    def thumbnail_sheet_url(self, dataset: Dataset, sheet: int) -> str:
        """One sheet of thumbnails as a ``data:`` URL (the hover cards read it)."""
        from engine.data.thumbnails import THUMB_SIZE, sheet_data_url

        return sheet_data_url(dataset, sheet, self.cache, THUMB_SIZE)

    # filters and named subsets
    def filter_columns(self, dataset: Dataset) -> dict[str, str]:
        """What control each filterable column takes (``values``, ``number``, ``text``)."""
        from engine.data.filters import column_kinds

        return column_kinds(dataset)

    def filter_mask(
        self, dataset: Dataset, clauses: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, list[str]]:
        """(rows matching every clause, one description per clause); clauses are plain JSON
        (``{"column", "op": "in"|"range"|"contains", ...}``) and are checked here."""
        from engine.data.filters import parse_filter, row_mask

        parsed = parse_filter(list(clauses))
        return row_mask(dataset, parsed), [c.describe() for c in parsed]

    @property
    def owner(self) -> str | None:
        """The visitor this workspace serves (their uploads' and subsets' namespace), or None
        for the operator."""
        return None if self.policy is None else self.policy.owner

    def subsets(self, dataset: Dataset) -> list[Any]:
        """The named subsets this visitor (or the operator) kept with this dataset: another
        visitor's subsets are never listed, only opened through their link."""
        from engine.store.subsets import list_subsets

        return list_subsets(dataset, self.cache, owner=self.owner)

    def subset(self, dataset: Dataset, name: str) -> Any:
        """One of this visitor's named subsets (``ParallaxError`` when it is not kept or no
        longer fits)."""
        from engine.store.subsets import get_subset

        return get_subset(dataset, name, self.cache, owner=self.owner)

    def subset_from_link(self, dataset: Dataset, token: str) -> Any:
        """The subset a link's unguessable token names, whoever kept it."""
        from engine.store.subsets import open_link

        return open_link(dataset, token, self.cache)

    def keep_subset(
        self,
        dataset: Dataset,
        name: str,
        rows: Sequence[int] | np.ndarray,
        filter_spec: Sequence[Mapping[str, Any]] | None = None,
    ) -> Any:
        """Keep ``rows`` under ``name`` with the dataset, in this visitor's own namespace (in
        the cache, atomically); a visitor's subset gets a link token to share it by."""
        from engine.store.subsets import save_subset

        return save_subset(
            dataset,
            name,
            rows,
            self.cache,
            filter_spec=list(filter_spec) if filter_spec else None,
            owner=self.owner,
        )

    def delete_subset(self, dataset: Dataset, name: str) -> bool:
        """Delete one of this visitor's subsets (its link stops working)."""
        from engine.store.subsets import delete_subset

        return delete_subset(dataset, name, self.cache, owner=self.owner)

    def subset_csv(self, dataset: Dataset, subset: Any) -> bytes:
        from engine.store.subsets import subset_frame

        return subset_frame(dataset, subset).to_csv(index=False).encode("utf-8")

    # uploads
    @property
    def upload_types(self) -> list[str]:
        """The file suffixes an upload may have (no dots), for a file picker."""
        from engine.store.uploads import UPLOAD_TYPES

        return list(UPLOAD_TYPES)

    def stage_upload(self, files: Sequence[tuple[str, Any]], owner: str) -> str:
        """Stage uploaded ``(name, bytes)`` under ``owner``'s namespace and return the public
        spec (``upload:<token>/<name>``) that stands for it: never the server path."""
        from engine.store.links import link_upload
        from engine.store.uploads import UploadFile, stage_upload

        staged = stage_upload([UploadFile(n, b) for n, b in files], owner=owner, cache=self.cache)
        name = files[0][0] + (f" +{len(files) - 1}" if len(files) > 1 else "")
        return link_upload(staged, name, self.cache)

    def source_kind(self, spec: str) -> str:
        """The kind of dataset behind ``spec`` (``bundle``, ``zip``, ...; an upload link's own)."""
        from engine.store.links import source_kind

        return source_kind(spec, self.cache)

    @staticmethod
    def bundle_manifest(path: str | Path) -> dict[str, Any] | None:
        """A bundle's manifest (None when ``path`` is not a Parallax bundle); nothing unpacked."""
        from engine.data.bundle import peek_manifest

        return peek_manifest(path)

    @property
    def shapes_items(self) -> tuple[int, int]:
        """The allowed range of ``demo:shapes?n=``."""
        from engine.data.shapes import MIN_ITEMS, max_items

        return MIN_ITEMS, max_items()

    # one item and its neighbours
    @property
    def neighbour_k(self) -> tuple[int, int]:
        """(default, maximum) neighbours per model of one item."""
        from engine.analysis.item_neighbours import DEFAULT_K, MAX_K

        return DEFAULT_K, MAX_K

    def item_neighbours(self, vectors_by_model: Mapping[str, np.ndarray], row: int, k: int) -> Any:
        """``row``'s ``k`` nearest rows under each model and the neighbours they share."""
        from engine.analysis.item_neighbours import item_neighbours

        return item_neighbours(vectors_by_model, row, k)

    # which models
    def model_domain(self, spec: str) -> str | None:
        """What ``spec`` was trained on, one line from its model card (None without one)."""
        from engine.models.domain import model_domain

        return model_domain(spec)

    def text_tower(self, spec: str) -> str:
        """Who reads a prompt for ``spec``: two specs with the same answer embed every text
        alike (the shipped shapes CLIPs share one frozen text tower), so on texts one of them
        is enough. Read from the weights' file, nothing loaded; a spec's own name otherwise."""
        return _text_tower(spec)

    def default_models(self, dataset: Dataset, n: int = 3) -> list[str]:
        """The models a session starts with on ``dataset``: on images the image–text models
        that answer offline (the shipped CLIPs first), then the pixel baseline; on texts the
        offline text model, then at most one image–text model per text tower."""
        offline = [m for m in self.models() if m.get("available_offline")]
        mods = {m["spec"]: set(m.get("modalities") or ()) for m in offline}
        shipped = [s for s in _PREDICTION_DEFAULTS if s in mods]
        both = [*shipped, *(s for s, m in mods.items() if {"image", "text"} <= m)]
        if getattr(dataset, "has_images", False):
            ranked = [*both, *(s for s, m in mods.items() if m == {"image"})]
        elif getattr(dataset, "texts", None) is not None:
            ranked = [s for s, m in mods.items() if m == {"text"} and not s.startswith("baseline:")]
            ranked += [*both, *(s for s, m in mods.items() if m == {"text"})]
        else:
            return []
        out: list[str] = []
        towers: set[str] = set()
        for spec in dict.fromkeys(ranked):
            tower = self.text_tower(spec) if "text" in mods[spec] else f"image:{spec}"
            if not getattr(dataset, "has_images", False) and tower in towers:
                continue  # the same text tower twice gives the same map of texts
            towers.add(tower)
            out.append(spec)
        return out[:n]

    def prediction_defaults(self, options: Sequence[str], session: Sequence[str]) -> list[str]:
        """The Compare page's prediction models: every image–text model among ``options`` that
        answers here (the session's first, then the shipped CLIPs; one needing a download only
        when the session chose it), else the first two of the session's."""
        known = {m["spec"]: m for m in self.models()}

        def clip_like(spec: str) -> bool:
            info = known.get(spec, {})
            both = {"image", "text"} <= set(info.get("modalities") or ())
            return both and (bool(info.get("available_offline")) or spec in session)

        ranked = list(
            dict.fromkeys(s for s in [*session, *_PREDICTION_DEFAULTS, *options] if s in options)
        )
        return [s for s in ranked if clip_like(s)] or ranked[:2]

    # predictions on uploads
    @property
    def image_extensions(self) -> list[str]:
        from engine.data.images import IMAGE_EXTENSIONS

        return sorted(IMAGE_EXTENSIONS)

    def decode_images(self, files: Iterable[tuple[str, bytes]]) -> tuple[list, list, list]:
        """(images, their names, one-line errors), decoded with the engine's safe decoder."""
        from engine.analysis.predict import decode_images

        return decode_images(files)

    def check_predict(
        self, n_inputs: int, models: Sequence[str], with_heads: bool, labels: Sequence[str]
    ) -> None:
        """Refuse a prediction request that cannot be answered, before anything loads."""
        from engine.analysis.predict import check_request

        check_request(n_inputs, list(models), with_heads, labels)

    def predict_with_heads(
        self,
        heads: Mapping[str, Any],
        name: str,
        image_model: str,
        text_model: str,
        *,
        images: list[Any],
        texts: list[str],
        top_k: int = PREDICT.top_k,
    ) -> Any:
        """Trained fusion heads' answer for uploads, as one ``ModelPrediction``."""
        from engine.analysis.predict import fusion_prediction

        return fusion_prediction(
            heads, name, image_model, text_model, images, texts, top_k, load=self.model
        )

    @property
    def head_variants(self) -> tuple[str, ...]:
        from engine.params import HEAD_VARIANTS

        return HEAD_VARIANTS

    def train_heads(
        self,
        dataset: Dataset | str,
        image_model: str,
        text_model: str,
        *,
        progress: ProgressCallback | None = None,
        **options: Any,
    ):
        """Image, text and fusion classifier heads on the cached vectors of ``dataset``
        (``engine.analysis.fusion.train_heads_for_dataset``; cached by vectors and settings)."""
        from engine.analysis.fusion import train_heads_for_dataset

        self.check_model_spec(image_model)
        self.check_model_spec(text_model)
        return train_heads_for_dataset(
            self.dataset(dataset),
            image_model,
            text_model,
            cache=self.cache,
            progress=progress,
            **options,
        )

    def read_image(self, path: str | os.PathLike[str]) -> Any:
        """One image file decoded with the engine's safe decoder (size and bomb limits); a
        file that is not a readable image is one ``ItemError`` line naming it."""
        from engine.data.images import open_image_safely
        from engine.errors import ItemError

        self._operator_only("reading a server file")
        p = Path(path)
        try:
            return open_image_safely(p, name=p.name)
        except ParallaxError as exc:
            raise ItemError(f"{path}: {exc}") from exc
        except OSError as exc:
            raise ItemError(f"{path}: cannot open image ({exc.strerror or exc})") from exc

    # export
    def export_columns(self, names: Sequence[str]) -> list[str]:
        """The column stem each named map gets in an export (``<stem>_x``, ``<stem>_y``)."""
        from engine.outputs.export import unique_slugs

        return unique_slugs(list(names))

    def export_bytes(self, dataset: Dataset, maps: Sequence[Mapping[str, Any]]) -> bytes:
        """Drawn maps as one Parquet file's bytes: each map is ``{"name", "coords", "vectors",
        "modality", "info"}`` (the export's own table, the same columns as ``export``)."""
        from engine.outputs.export import ModelMap, build_table, parquet_bytes

        table = build_table(
            dataset,
            [
                ModelMap(
                    m["name"], m["coords"], m.get("vectors"), m.get("modality"), m.get("info", {})
                )
                for m in maps
            ],
        )
        return parquet_bytes(table)

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
        embed: bool = True,
        compute: bool = True,
    ) -> Findings:
        """Label errors, exact and near duplicates, outliers, leaks between splits and named
        clusters of ``dataset``, per model and across ``models`` (cached; see
        ``engine.analysis.findings``). Models without finished vectors are embedded first
        (``embed`` False: ``NotEmbedded`` instead, no model loads). ``compute`` False: the
        cached findings or ``NotComputed`` (a view-only deployment, a bundle's installed
        findings). ``label_column``: a metadata column instead of the labels;
        ``split_column``: the column leaks cross (default: ``split`` when the dataset has one)."""
        from engine.analysis.findings_run import find_in_dataset

        ds, entries = self._findings_entries(dataset, models, embed=embed, progress=progress)
        return find_in_dataset(
            ds,
            entries,
            self.cache,
            label_column=label_column,
            split_column=split_column,
            params=params,
            progress=progress,
            compute=compute,
        )

    def cached_findings(
        self, dataset: Dataset | str, models: Sequence[str], **options: Any
    ) -> Findings | None:
        """The cached findings of ``dataset`` under ``models``, or None (nothing is embedded,
        computed or loaded). ``options``: ``find``'s label and split columns and params."""
        from engine.analysis.findings_run import NotComputed

        try:
            return self.find(dataset, models, embed=False, compute=False, **options)
        except (NotEmbedded, NotComputed):
            return None

    def _findings_entries(
        self,
        dataset: Dataset | str,
        models: Sequence[str],
        *,
        embed: bool,
        progress: ProgressCallback | None = None,
    ) -> tuple[Dataset, dict[str, Entry]]:
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
                if not embed:
                    raise
                result = self.embed(ds, spec, progress=progress)
                entries[spec] = self.cache.get("vectors", result.key) or self.vectors(ds, spec)
        return ds, entries


_PREDICTION_DEFAULTS = ("demo:shapes-clip", "demo:shapes-clip-small")  # shipped: answer offline


@functools.lru_cache(maxsize=64)
def _text_tower(spec: str) -> str:
    """A hash of the text-tower tensors in a local open_clip safetensors file, else ``spec``."""
    import hashlib
    import json
    import struct

    from engine.models.spec import parse_spec

    try:
        path = parse_spec(spec).path
    except ParallaxError:
        return spec
    weights = Path(path) / "open_clip_model.safetensors" if path else None
    if weights is None or not weights.is_file():
        return spec
    try:
        with open(weights, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            digest = hashlib.sha256()
            for name in sorted(header):  # the image tower is visual.*; the rest reads texts
                if name == "__metadata__" or name.startswith("visual."):
                    continue
                start, end = header[name]["data_offsets"]
                f.seek(8 + size + start)
                digest.update(name.encode() + str(header[name]["dtype"]).encode())
                digest.update(f.read(end - start))
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return spec
    return "text-tower:" + digest.hexdigest()[:16]
