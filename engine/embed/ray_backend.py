"""The embed job on Ray Data: past one machine, into the same cache entry as the local backend.

The job is the local one (``engine.embed.local``) spread over a Ray cluster:

- the driver computes the cache key and the shard plan exactly as the local backend does
  (``open_plan``), so both backends share keys, shards and resumption;
- the batches of every shard still missing become a Ray Dataset; CPU tasks decode their images
  (``dataset.load_image``, the same safe decoder) and stream them on, never the whole dataset at
  once;
- the model runs in an actor pool (``map_batches`` with a callable class): one replica per GPU
  (``num_gpus=1``) or per CPU slot, each loaded once through the same registry and adapters;
- the driver gathers the vectors by item index, writes each shard atomically as soon as it is
  complete (a killed driver leaves finished shards; a rerun with either backend resumes), then
  assembles the entry and writes the manifest last (``finish_entry``).

Ray retries failed tasks, and restarts a killed actor and re-runs its batches
(``max_restarts`` / ``max_task_retries``), so a lost worker costs time, not vectors. Ray is an
optional dependency (requirements-ray.txt).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.base import Dataset, past_items_limit
from engine.embed.local import (
    EmbeddingResult,
    choose_modality,
    claim_vectors,
    finish_entry,
    open_plan,
    plan_shape,
    vectors_key,
)
from engine.errors import ItemError, ParallaxError
from engine.models.base import IMAGE
from engine.params import EmbedParams
from engine.store.cache import Cache, Entry, atomic_save_npy
from engine.store.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt"


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray job runs.

    ``address``: None starts a private local Ray (one machine); ``"auto"`` joins the cluster this
    machine belongs to (``ray start``); ``"ray://HOST:10001"`` connects a Ray client.
    ``actors``: model replicas; default one per GPU when the cluster has GPUs, else one per
    ``cpus_per_actor`` CPUs, leaving one CPU for decoding. ``gpus_per_actor``: default 1 when the
    cluster has GPUs, else 0.
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    decode_cpus: float = 1.0  # CPUs each decoding task reserves
    max_restarts: int = 3  # a killed model actor is restarted this many times
    # Custom resources every model actor needs (e.g. ``{"gpu_node": 1}``): pins the actors to
    # the nodes that advertise them (``ray start --resources``).
    actor_resources: dict[str, float] | None = None
    # A lost node can take with it what Ray cannot rebuild (blocks in its object store, a
    # restarting actor's queue): the job is then run again for the shards not yet on disk,
    # at most this many times.
    reruns: int = 3


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ParallaxError(
            f"--backend ray needs Ray, which is not installed ({INSTALL_HINT})"
        ) from None
    return ray


# -- what runs on the workers ------------------------------------------------------------------
_worker_datasets: dict[tuple[str, str], Dataset] = {}


def _worker_dataset(spec: str, cache_root: str, tables: bool = False) -> Dataset:
    """The dataset, opened once per worker process (workers see the same paths: shared storage).
    ``tables``: the driver opened it under the operator's allowance for large tables
    (``MAX_TABLE_ITEMS``), so the workers open it under the same allowance."""
    key = (spec, cache_root)
    if key not in _worker_datasets:
        from engine.data import open_dataset
        from engine.data.base import operator_tables

        with operator_tables(tables):
            _worker_datasets[key] = open_dataset(spec, cache_root=Path(cache_root))
    return _worker_datasets[key]


def _decode_batches(
    batch: dict[str, np.ndarray], spec: str, cache_root: str, images: bool, tables: bool = False
):
    """CPU task: one row per item of each batch span, with the decoded image (or the text)."""
    ds = _worker_dataset(spec, cache_root, tables)
    index, payload, error = [], [], []
    for start, stop in zip(batch["start"], batch["stop"], strict=True):
        for i in range(int(start), int(stop)):
            index.append(i)
            if images:
                try:
                    payload.append(np.asarray(ds.load_image(i).convert("RGB"), dtype=np.uint8))
                    error.append("")
                except ItemError as exc:
                    payload.append(np.zeros((1, 1, 3), np.uint8))
                    error.append(str(exc) or "unreadable image")
            else:
                text = (ds.texts or [None] * len(ds))[i]
                payload.append(text or "")
                error.append("" if text else "no text")
    out: dict[str, Any] = {"index": np.asarray(index, np.int64), "error": np.asarray(error)}
    out["item"] = np.asarray(payload, dtype=object) if images else np.asarray(payload)
    return out


class EmbedActor:
    """One model replica: loaded once, then fed batches by Ray Data."""

    def __init__(self, model_spec: str, device: str, modality: str) -> None:
        from engine.models import load_model

        self.model = load_model(model_spec, device=device)
        self.modality = modality
        self.dim = int(self.model.dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        errors = batch["error"]
        ok = [j for j, e in enumerate(errors) if not e]
        out = np.zeros((len(errors), self.dim), dtype=np.float32)
        if ok:
            if self.modality == IMAGE:
                from PIL import Image

                items = [Image.fromarray(np.asarray(batch["item"][j], np.uint8)) for j in ok]
                out[ok] = self.model.embed_images(items)
            else:
                # Similar lengths together, as the local backend batches texts.
                order = sorted(ok, key=lambda j: (len(str(batch["item"][j])), j))
                out[order] = self.model.embed_texts([str(batch["item"][j]) for j in order])
        return {"index": batch["index"], "vector": out, "error": errors}


def _compute_material(device: str) -> dict[str, str]:
    from engine.models.device import compute_material

    return compute_material(device)


# -- the driver --------------------------------------------------------------------------------
def _connect(ray: Any, options: RayOptions) -> bool:
    """Initialise Ray unless it already is; True when this call started it."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if options.address:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = options.address or "a local Ray"
        raise ParallaxError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from exc
    return True


def _pool_shape(ray: Any, options: RayOptions) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for this cluster and these options."""
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    per_gpu = (
        options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    )
    if per_gpu > 0:
        actors = options.actors or max(1, int(gpus // per_gpu))
        return actors, per_gpu, options.cpus_per_actor
    spare = max(1.0, cpus - options.decode_cpus)  # keep a CPU for decoding tasks
    actors = options.actors or max(1, int(spare // options.cpus_per_actor))
    return actors, 0.0, options.cpus_per_actor


def embed_dataset_ray(
    dataset: Dataset | str,
    model_spec: str,
    *,
    modality: str | None = None,
    cache: Cache | None = None,
    batch_size: int | None = None,
    options: RayOptions | None = None,
    progress: ProgressCallback | None = None,
) -> EmbeddingResult:
    """``engine.embed.local.embed_dataset`` on Ray Data: the same result and the same cache
    entry."""
    t0 = time.perf_counter()
    ray = require_ray()
    options = options or RayOptions()
    cache = cache or Cache()
    from engine.data import as_dataset

    dataset = as_dataset(dataset, cache.root)
    from engine.data.column_vectors import is_column_spec

    if is_column_spec(model_spec):  # nothing to compute: the local path caches it
        from engine.embed.local import embed_dataset

        return embed_dataset(dataset, model_spec, modality=modality, cache=cache)
    from engine.models import load_model

    # The driver's copy tells the key, dimension and default batch size (on the CPU: the driver
    # need not have a GPU); the actors load their own replicas.
    driver_model = load_model(model_spec, device="cpu")
    modality = choose_modality(dataset, driver_model, modality)
    started = _connect(ray, options)
    try:
        actors, gpus, cpus = _pool_shape(ray, options)
        device = "cuda" if gpus > 0 else "cpu"
        if gpus > 0:  # precision is part of the key: ask a GPU worker what it will run in
            compute = ray.get(ray.remote(num_gpus=gpus)(_compute_material).remote(device))
            key = EmbedParams.vectors_key(
                dataset.fingerprint(), driver_model.identity, modality, compute
            )
        else:
            key = vectors_key(dataset, driver_model, modality)
        return _run(
            ray,
            dataset,
            driver_model,
            model_spec,
            modality,
            key,
            cache,
            batch_size,
            (actors, gpus, cpus, device),
            options,
            progress,
            t0,
        )
    finally:
        if started:
            ray.shutdown()


def _run(
    ray: Any,
    dataset: Dataset,
    driver_model: Any,
    model_spec: str,
    modality: str,
    key: str,
    cache: Cache,
    batch_size: int | None,
    pool: tuple[int, float, float, str],
    options: RayOptions,
    progress: ProgressCallback | None,
    t0: float,
) -> EmbeddingResult:
    n, dim = len(dataset), int(driver_model.dim)

    def result(entry: Entry, cached: bool) -> EmbeddingResult:
        return EmbeddingResult.from_entry(
            dataset, str(driver_model.spec), modality, entry, cached, t0
        )

    actors, gpus, cpus, device = pool
    with claim_vectors(cache, key) as entry:
        if entry is not None:
            return result(entry, cached=True)
        plan = open_plan(cache, key, n, dim, int(batch_size or driver_model.default_batch_size))
        bs, shard_size, n_shards = plan_shape(plan)
        missing = [s for s in range(n_shards) if not cache.shard_path("vectors", key, s).is_file()]
        done_before = n - sum(min(n, (s + 1) * shard_size) - s * shard_size for s in missing)
        tracker = ProgressTracker(
            f"embed {modality}s with {driver_model.spec} on Ray ({actors} actors)",
            n,
            progress,
            already_done=done_before,
        )
        tracker.emit()
        spans = _missing_spans(cache, key, n, bs, shard_size, n_shards)
        failures: dict[int, str] = {}
        for attempt in range(options.reruns + 1):
            if not spans:
                break
            try:
                _stream(
                    ray,
                    dataset,
                    model_spec,
                    modality,
                    key,
                    cache,
                    plan,
                    spans,
                    (actors, gpus, cpus, device),
                    options,
                    tracker,
                    failures,
                )
                break
            except _lost_work_errors(ray) as exc:
                if attempt == options.reruns:
                    raise ParallaxError(
                        f"the Ray job lost work {attempt + 1} times (last: "
                        f"{type(exc).__name__}); its finished shards are kept: run it again "
                        "to resume"
                    ) from exc
                # The shards written so far are on disk: only the others run again.
                spans = _missing_spans(cache, key, n, bs, shard_size, n_shards)
                log.warning(
                    "Ray lost work (%s: %s); running the %d batches of unfinished shards again",
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    len(spans),
                )
                tracker.done = n - sum(span["stop"] - span["start"] for span in spans)
        entry = finish_entry(
            cache,
            key,
            cache.read_partial_plan("vectors", key) or plan,
            dataset,
            failures,
            {
                "model": str(driver_model.spec),
                "model_identity": driver_model.identity,
                "modality": modality,
                "device": device,
                "decode": "pillow",
                "backend": f"ray ({actors} actors)",
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )
    return result(entry, cached=False)


def _missing_spans(
    cache: Cache, key: str, n: int, bs: int, shard_size: int, n_shards: int
) -> list[dict[str, int]]:
    """The batches (``start``/``stop`` rows) of every shard not yet written."""
    missing = [s for s in range(n_shards) if not cache.shard_path("vectors", key, s).is_file()]
    return [
        {"start": b, "stop": min(b + bs, (s + 1) * shard_size, n)}
        for s in missing
        for b in range(s * shard_size, min(n, (s + 1) * shard_size), bs)
    ]


def _lost_work_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's errors for work lost with a process or a node (not errors in the engine's code,
    which are raised as they are)."""
    names = (
        "ActorDiedError",
        "ActorUnavailableError",
        "RayActorError",
        "ObjectLostError",
        "ObjectReconstructionFailedError",
        "OwnerDiedError",
        "WorkerCrashedError",
        "NodeDiedError",
        "LocalRayletDiedError",
    )
    found = tuple(getattr(ray.exceptions, name, None) for name in names)
    return tuple(e for e in found if isinstance(e, type))


def _stream(
    ray: Any,
    dataset: Dataset,
    model_spec: str,
    modality: str,
    key: str,
    cache: Cache,
    plan: dict[str, Any],
    spans: list[dict[str, int]],
    pool: tuple[int, float, float, str],
    options: RayOptions,
    tracker: ProgressTracker,
    failures: dict[int, str],
) -> None:
    """Run the pipeline and write each shard as soon as all its rows are back."""
    actors, gpus, cpus, device = pool
    bs, shard_size, _ = plan_shape(plan)
    n, dim = int(plan["n"]), int(plan["dim"])
    images = modality == IMAGE
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the engine reports progress itself, on stderr
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    items = ray.data.from_items(spans, override_num_blocks=min(len(spans), 10 * max(actors, 1)))
    decoded = items.map_batches(
        _decode_batches,
        batch_size=1,
        num_cpus=options.decode_cpus,
        fn_kwargs={
            "spec": dataset.spec,
            "cache_root": str(cache.root),
            "images": images,
            # a table past MAX_ITEMS was opened here under the operator's allowance
            "tables": past_items_limit(dataset),
        },
    )
    embedded = decoded.map_batches(
        EmbedActor,
        batch_size=bs,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus or None,
        num_cpus=cpus,
        fn_constructor_kwargs={"model_spec": model_spec, "device": device, "modality": modality},
        # A killed actor is restarted and the batches it held are sent again.
        ray_remote_args_fn=lambda: {"max_restarts": options.max_restarts, "max_task_retries": -1},
        **({"resources": dict(options.actor_resources)} if options.actor_resources else {}),
    )
    buffers: dict[int, np.ndarray] = {}
    filled: dict[int, int] = {}
    shard_failed: dict[int, dict[int, str]] = {}
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        for i, row, err in zip(batch["index"], batch["vector"], batch["error"], strict=True):
            i = int(i)
            s = i // shard_size
            if s not in buffers:
                length = min(n, (s + 1) * shard_size) - s * shard_size
                buffers[s], filled[s] = np.zeros((length, dim), np.float32), 0
            buffers[s][i - s * shard_size] = row
            filled[s] += 1
            if err:
                shard_failed.setdefault(s, {})[i] = str(err)
            if filled[s] == len(buffers[s]):
                _write_shard(cache, key, s, buffers.pop(s), shard_failed.pop(s, {}), failures)
        tracker.advance(len(batch["index"]))
    if buffers:  # every span was sent: rows missing now mean a bug, not a lost worker
        raise ParallaxError(f"internal error: shards {sorted(buffers)} came back incomplete")


def _write_shard(
    cache: Cache, key: str, s: int, rows: np.ndarray, failed: dict[int, str], failures: dict
) -> None:
    """Failures into the plan first, then the shard file (which marks the shard complete)."""
    if failed:
        plan = cache.read_partial_plan("vectors", key) or {}
        cache.write_partial_plan(
            "vectors", key, {**plan, f"failed_{s}": {str(k): v for k, v in failed.items()}}
        )
        failures.update(failed)
    atomic_save_npy(cache.shard_path("vectors", key, s), rows)
    log.debug("shard %d written (%d rows, pid %d)", s, len(rows), os.getpid())
