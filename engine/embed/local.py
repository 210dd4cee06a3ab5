"""Embed a whole dataset with one model: batched, decode overlapped with compute, cached, resumable.

The job is cut into shards of whole batches. Each finished shard is written atomically under
``vectors/<key>.partial/``; a job killed half-way resumes at the first missing shard. Because the
shard and batch boundaries are fixed by the plan stored with the shards, a resumed job feeds the
model exactly the same batches as an uninterrupted one and so produces identical vectors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from engine.data.base import Dataset
from engine.data.column_vectors import SideFile, check_column, is_column_spec, locate_column
from engine.embed import gpu_decode
from engine.errors import CacheError, ItemError, ParallaxError
from engine.models.base import IMAGE, TEXT, EmbeddingModel
from engine.models.identity import KnownModel, runs_on_cpu
from engine.models.identity import recall as recall_identity
from engine.models.identity import remember as remember_identity
from engine.params import EmbedParams
from engine.store.atomic import TEMP_PREFIX, atomic_file, atomic_save_npy, atomic_write, write_error
from engine.store.cache import Cache, Entry
from engine.store.chunks import copy_file_bytes
from engine.store.memo import claim, read_through
from engine.store.progress import ProgressCallback, ProgressTracker

log = logging.getLogger(__name__)

SHARD_TARGET_ITEMS = 2048  # rows per resumable shard (rounded to whole batches)


@dataclass
class EmbeddingResult:
    """What an embed job produced (or found in the cache). ``path`` is an N x D ``.npy``."""

    dataset: str
    model: str
    modality: str
    n: int
    dim: int
    cached: bool
    seconds: float
    path: Path
    key: str
    skipped: int  # items the dataset skipped + items that failed while embedding
    failed: list[dict[str, str]] = field(default_factory=list)  # rows left as zero vectors

    @classmethod
    def from_entry(
        cls, dataset: Dataset, model: str, modality: str, entry: Entry, cached: bool, t0: float
    ) -> EmbeddingResult:
        """The result a finished cache entry stands for (the local and the Ray path alike)."""
        failed = entry.manifest.get("failed", [])
        return cls(
            dataset=dataset.spec,
            model=model,
            modality=modality,
            n=int(entry.manifest["n"]),
            dim=int(entry.manifest["dim"]),
            cached=cached,
            seconds=time.perf_counter() - t0,
            path=entry.array_path,
            key=entry.key,
            skipped=len(dataset.skipped) + len(failed),
            failed=failed,
        )

    def vectors(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "modality": self.modality,
            "n": self.n,
            "dim": self.dim,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "path": str(self.path),
            "key": self.key,
        }


def choose_modality(
    dataset: Dataset, model: EmbeddingModel | KnownModel, requested: str | None = None
) -> str:
    """The modality to embed: the one asked for, else images if both sides have them, else text."""
    has_text = dataset.texts is not None
    if requested is not None:
        if requested not in (IMAGE, TEXT):
            raise ParallaxError(f"unknown modality {requested!r}: use 'image' or 'text'")
        if requested not in model.modalities:
            raise ParallaxError(f"model {model.spec} does not embed {requested}s")
        if (requested == IMAGE and not dataset.has_images) or (requested == TEXT and not has_text):
            raise ParallaxError(f"dataset {dataset.spec} has no {requested}s")
        return requested
    if IMAGE in model.modalities and dataset.has_images:
        return IMAGE
    if TEXT in model.modalities and has_text:
        return TEXT
    have = "images" if dataset.has_images else "texts"
    wants = " and ".join(sorted(m + "s" for m in model.modalities))
    raise ParallaxError(f"model {model.spec} embeds {wants}, but dataset {dataset.spec} has {have}")


def vectors_key(
    dataset: Dataset, model: EmbeddingModel | KnownModel, modality: str, decode: str | None = None
) -> str:
    """The key of these vectors; GPU precision and decoder are part of it (CPU keys unchanged)."""
    compute: dict[str, str] = {}
    if str(getattr(model, "device", "cpu")) != "cpu" or decode:
        from engine.models.device import compute_material

        compute = compute_material(str(model.device), decode)
    return EmbedParams.vectors_key(dataset.fingerprint(), model.identity, modality, compute)


def _batches(start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
    return [(b, min(b + batch_size, stop)) for b in range(start, stop, batch_size)]


# (batch span, positions in the batch that decoded, the model's input for those, failures)
ImageBatch = tuple[tuple[int, int], list[int], Any, dict[int, str]]


def _prefetched_image_batches(
    dataset: Dataset,
    model: EmbeddingModel,
    batches: list[tuple[int, int]],
    workers: int,
) -> Iterator[ImageBatch]:
    """Yield image batches with Pillow decoding running ahead in threads.

    Pillow's decoders and resizers release the GIL, so threads overlap decoding of the next
    batches with the model's forward pass on the current one without pickling images.
    """

    def load(i: int) -> Any:
        return model.preprocess_image(dataset.load_image(i))

    lookahead = 2  # batches decoded ahead of the one being embedded
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[tuple[int, int], list[Future[Any]]]] = deque()
        queue = iter(batches)

        def submit_next() -> None:
            batch = next(queue, None)
            if batch is not None:
                pending.append((batch, [pool.submit(load, i) for i in range(*batch)]))

        for _ in range(lookahead + 1):
            submit_next()
        while pending:
            batch, futures = pending.popleft()
            submit_next()
            inputs: list[Any] = []
            failures: dict[int, str] = {}
            for i, fut in zip(range(*batch), futures, strict=True):
                try:
                    inputs.append(fut.result())
                except ItemError as exc:
                    failures[i] = str(exc)
                    inputs.append(None)
            ok = [j for j, x in enumerate(inputs) if x is not None]
            yield batch, ok, [inputs[j] for j in ok], failures


def _device_image_batches(
    dataset: Dataset, model: EmbeddingModel, batches: list[tuple[int, int]], workers: int
) -> Iterator[ImageBatch]:
    """Yield image batches decoded, resized and normalised on the model's device
    (``engine.embed.gpu_decode``), the next one prepared while the model runs on this one."""
    spec = gpu_decode.pixel_spec(model)
    assert spec is not None  # embed_dataset checked gpu_decode.used_for(model)
    pipeline = gpu_decode.DeviceImagePipeline(dataset, spec, str(model.device), workers)
    for b in pipeline.batches(batches):
        yield b.span, b.ok, b.pixels, b.failures


class _Forward:
    """Calls the model on a batch; on CUDA, an out-of-memory batch is retried at half the size
    (and the smaller size is kept for the rest of the job)."""

    def __init__(self, model: EmbeddingModel, batch_size: int) -> None:
        self.model = model
        self.gpu = str(getattr(model, "device", "cpu")).startswith("cuda")
        self.batch_size = batch_size

    def _resized(self, size: int) -> None:
        self.batch_size = size

    def __call__(self, fn: Any, items: list[Any]) -> np.ndarray:
        if not self.gpu:
            return fn(items)
        from engine.models.device import run_with_oom_retry

        return run_with_oom_retry(fn, items, self.batch_size, on_resize=self._resized)


def _embed_shard_images(
    embed: Any,
    batches: Iterator[ImageBatch],
    n_batches: int,
    dim: int,
    tracker: ProgressTracker,
    forward: _Forward,
) -> tuple[np.ndarray, dict[int, str]]:
    """``embed`` takes a batch's decoded inputs: ``model.embed_preprocessed`` (Pillow path) or
    ``model.embed_pixels`` (device path)."""
    rows: list[np.ndarray] = []
    failures: dict[int, str] = {}
    for _ in range(n_batches):
        (start, stop), ok, inputs, failed = next(batches)
        out = np.zeros((stop - start, dim), dtype=np.float32)
        if ok:
            out[ok] = forward(embed, inputs)
        rows.append(out)
        failures.update(failed)
        tracker.advance(stop - start)
    return np.concatenate(rows) if rows else np.zeros((0, dim), np.float32), failures


def _embed_shard_texts(
    texts: list[str | None],
    model: EmbeddingModel,
    batches: list[tuple[int, int]],
    dim: int,
    tracker: ProgressTracker,
    forward: _Forward,
) -> tuple[np.ndarray, dict[int, str]]:
    """Embed one shard of texts, batched by length.

    Texts of similar length go in the same batch, so a batch is padded to a length close to
    each of its texts rather than to the longest text of a random batch (measured: MiniLM
    through the engine went from 0.73x to parity with ``SentenceTransformer.encode``, which
    sorts the same way). The order is a fixed function of the shard's texts, so a resumed job
    batches exactly as an uninterrupted one.
    """
    start, stop = batches[0][0], batches[-1][1]
    batch_size = batches[0][1] - batches[0][0]
    out = np.zeros((stop - start, dim), dtype=np.float32)
    failures = {i: "no text" for i in range(start, stop) if not texts[i]}
    ok = [i for i in range(start, stop) if texts[i]]
    ok.sort(key=lambda i: (len(texts[i] or ""), i))
    done = 0
    for b in range(0, len(ok), batch_size):
        rows = ok[b : b + batch_size]
        out[np.asarray(rows) - start] = forward(model.embed_texts, [texts[i] or "" for i in rows])
        tracker.advance(len(rows))
        done += len(rows)
    tracker.advance((stop - start) - done)  # rows without text count as done too
    return out, failures


def open_plan(cache: Cache, key: str, n: int, dim: int, batch_size: int) -> dict[str, Any]:
    """The shard plan of an unfinished job: the stored one (so a resumed job, with either
    backend, cuts the same shards), or a new one. Call with the key's lock held."""
    plan = cache.read_partial_plan("vectors", key)
    if plan is None or plan.get("n") != n or plan.get("dim") != dim:
        cache.drop_partial("vectors", key)
        bs = int(batch_size)
        plan = {
            "n": n,
            "dim": dim,
            "batch_size": bs,
            "shard_size": max(bs, (SHARD_TARGET_ITEMS // bs) * bs),
        }
        cache.write_partial_plan("vectors", key, plan)
    return plan


def plan_shape(plan: dict[str, Any]) -> tuple[int, int, int]:
    """(batch size, shard size, number of shards) of a plan."""
    bs, shard_size = int(plan["batch_size"]), int(plan["shard_size"])
    return bs, shard_size, (int(plan["n"]) + shard_size - 1) // shard_size


def shard_failures(plan: dict[str, Any]) -> dict[int, str]:
    """Items that failed in shards already written (recorded in the plan before the shard)."""
    out: dict[int, str] = {}
    for name, value in plan.items():
        if name.startswith("failed_"):
            out.update({int(k): v for k, v in value.items()})
    return out


def finish_entry(
    cache: Cache,
    key: str,
    plan: dict[str, Any],
    dataset: Dataset,
    failures: dict[int, str],
    fields: dict[str, Any],
) -> Entry:
    """Assemble every shard into the finished entry and write its manifest last (the entry
    exists only once the manifest does). ``fields`` say what made the vectors. Lock held."""
    _, _, n_shards = plan_shape(plan)
    n, dim = int(plan["n"]), int(plan["dim"])
    failures = {**shard_failures(plan), **failures}
    _assemble(cache, key, n_shards, n, dim)
    entry = cache.put_manifest_only(
        "vectors",
        key,
        {
            "dataset": dataset.spec,
            "dataset_fingerprint": dataset.fingerprint(),
            **fields,
            "n": n,
            "dim": dim,
            "batch_size": int(plan["batch_size"]),
            "failed": [{"id": dataset.ids[i], "reason": failures[i]} for i in sorted(failures)],
            "dataset_skipped": [{"source": s.source, "reason": s.reason} for s in dataset.skipped],
        },
    )
    cache.drop_partial("vectors", key)
    return entry


def _assemble(cache: Cache, key: str, n_shards: int, n: int, dim: int) -> Path:
    """Concatenate the shards into one ``vectors.npy``: the header, then each shard's rows
    with ordinary ``write`` calls (``atomic_file`` fsyncs and renames). Never through a
    writable memory map: on a full disk a store into a mapped page kills the whole process
    with SIGBUS, where ``write`` returns ENOSPC, which becomes one ``CacheError`` line."""
    final = cache.entry_dir("vectors", key) / "vectors.npy"
    with atomic_file(final) as tmp, open(tmp, "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, dim)}
        np.lib.format.write_array_header_1_0(f, header)
        row = 0
        for s in range(n_shards):
            shard = np.load(cache.shard_path("vectors", key, s), allow_pickle=False)
            f.write(np.ascontiguousarray(shard, dtype="<f4").tobytes())
            row += len(shard)
        if row != n:
            raise ParallaxError(f"internal error: shards hold {row} rows, expected {n}")
    return final


def _column_modality(dataset: Dataset, requested: str | None) -> str:
    """A dataset's own vectors stand for its items: filed under the modality a model would
    embed (images when there are any), so maps, thumbnails and comparisons treat them alike."""
    if requested is not None:
        if (requested == IMAGE and not dataset.has_images) or (
            requested == TEXT and dataset.texts is None
        ):
            raise ParallaxError(f"dataset {dataset.spec} has no {requested}s")
        return requested
    return IMAGE if dataset.has_images else TEXT


class _EarlyCopy:
    """A side file's bytes copied into the cache (by the kernel, on a thread) while its vectors
    are still being checked and hashed: the copy waits on the disk, the pass on the CPU, so the
    two overlap. The copy lands under a temp name (``.tmp-``: ``prune`` removes an orphan) and
    is moved into the entry once the key is known; ``discard`` drops it when the entry turned
    out to be cached already or the vectors were refused."""

    def __init__(self, side: SideFile, folder: Path) -> None:
        self.side = side
        self.path = folder / f"{TEMP_PREFIX}column-{os.getpid()}-{threading.get_ident()}.npy"
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(target=self._run, name="column-copy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with atomic_file(self.path) as tmp, open(tmp, "wb") as f:  # fsynced, then renamed
                if not copy_file_bytes(self.side.path, f, self.side.nbytes, self._stop.is_set):
                    raise InterruptedError("copy discarded")
            self._done = True
        except BaseException as exc:  # handed to the caller by ``move_to``
            self._error = exc

    def move_to(self, target: Path) -> None:
        """Wait for the copy and make it ``target`` (refused if the side file changed since
        it was read: the entry must hold the bytes that were hashed)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if not self._done or self.side.changed():
            raise ParallaxError(f"{self.side.path.name} changed while it was read; run again")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path, target)
        except OSError as exc:
            raise write_error(target, exc) from exc

    def discard(self) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


def _has_column_vectors(dataset: Dataset, spec: str, cache: Cache) -> bool:
    """Whether some finished entry holds vectors of this dataset under ``spec`` (the question
    ``engine.store.catalog.embeddings_by`` answers, asked here without importing it)."""
    fingerprint, n = dataset.fingerprint(), len(dataset)
    return any(
        e.manifest.get("dataset_fingerprint") == fingerprint
        and e.manifest.get("model") == spec
        and int(e.manifest.get("n", -1)) == n
        for e in cache.entries("vectors")
    )


def _embed_column(
    dataset: Dataset, spec: str, modality: str | None, cache: Cache, t0: float
) -> EmbeddingResult:
    """``column:NAME``: the dataset's own vectors, checked and hashed in one pass, then cached
    like computed ones. A float32 side file's bytes go into the cache by the kernel
    (``copy_file_bytes``), on a thread while the pass runs unless this dataset already has
    vectors under this name (then they are probably the same: copied only if not)."""
    array, side = locate_column(dataset, spec)
    modality = _column_modality(dataset, modality)
    early = None
    if side is not None and not _has_column_vectors(dataset, spec.strip(), cache):
        early = _EarlyCopy(side, cache.kind_dir("vectors"))
    try:
        column = check_column(dataset, spec, array, side)
        key = EmbedParams.vectors_key(dataset.fingerprint(), column.identity, modality)
        manifest = {
            "dataset": dataset.spec,
            "dataset_fingerprint": dataset.fingerprint(),
            "model": spec.strip(),
            "model_identity": column.identity,
            "modality": modality,
            "n": len(array),
            "dim": int(array.shape[1]),
            "device": "none",
            "failed": [],
            "dataset_skipped": [{"source": s.source, "reason": s.reason} for s in dataset.skipped],
        }

        def make(path: Path) -> Entry:
            done = {**manifest, "seconds": round(time.perf_counter() - t0, 3)}
            if side is None:
                return cache.put("vectors", key, column.array, done)
            target = Entry("vectors", key, cache.entry_dir("vectors", key), {}).array_path
            if early is not None:
                early.move_to(target)
            else:

                def copy(f: BinaryIO) -> None:
                    copy_file_bytes(side.path, f, side.nbytes)
                    if side.changed():  # the entry must hold the bytes that were hashed
                        raise ParallaxError(
                            f"{side.path.name} changed while it was read; run again"
                        )

                atomic_write(target, copy)
            return cache.put_manifest_only("vectors", key, done)

        memo = read_through(
            cache, "vectors", key, read=lambda path: cache.get("vectors", key), make=make
        )
    finally:
        if early is not None:
            early.discard()  # a copy not moved into the entry (cached already, or refused)
    return EmbeddingResult.from_entry(dataset, spec.strip(), modality, memo.value, memo.cached, t0)


@contextmanager
def claim_vectors(cache: Cache, key: str) -> Iterator[Entry | None]:
    """The finished vectors under ``key``, or None while this process holds the key's lock to
    compute them (looked up again under the lock: another process may have finished the same
    job while this one waited). Every embedding backend starts its job with this."""
    with claim(cache, "vectors", key, lambda path: cache.get("vectors", key)) as entry:
        if entry is not None and cache.partial_dir("vectors", key).exists():
            cache.drop_partial("vectors", key)  # a kill between manifest and cleanup
        yield entry


def embed_dataset(
    dataset: Dataset | str,
    model: EmbeddingModel | str,
    *,
    modality: str | None = None,
    cache: Cache | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str | None = None,
    progress: ProgressCallback | None = None,
) -> EmbeddingResult:
    """Embed every item of ``dataset`` with ``model`` and return the cached N x D vectors.

    Nothing is computed twice: a finished entry for the same (dataset content, model identity,
    modality) is returned as is (``cached=True``); an interrupted one is resumed.
    """
    t0 = time.perf_counter()
    cache = Cache.or_default(cache)
    from engine.data import as_dataset

    dataset = as_dataset(dataset, cache.root)
    if isinstance(model, str) and is_column_spec(model):
        return _embed_column(dataset, model, modality, cache, t0)

    if isinstance(model, str):
        # Finished CPU vectors are found from the model's identity alone: no model is built and
        # no model library imported (engine.models.identity). On a GPU the key also names the
        # precision and decoder, which the built model decides.
        known = recall_identity(model, cache)
        if known is not None and (known.cpu_only or runs_on_cpu(device)):
            chosen = choose_modality(dataset, known, modality)
            key = vectors_key(dataset, known, chosen)
            entry = cache.get("vectors", key)
            if entry is not None:
                log.debug("%s: cached vectors found by the recorded identity", known.spec)
                return EmbeddingResult.from_entry(dataset, known.spec, chosen, entry, True, t0)
        from engine.models import load_model

        model = load_model(model, device=device)
    # Record what the built model says it is, so the next process can skip building it.
    remember_identity(model.spec, model, cache)
    modality = choose_modality(dataset, model, modality)
    on_device = modality == IMAGE and gpu_decode.used_for(model)  # CUDA: nvJPEG + GPU resize
    key = vectors_key(dataset, model, modality, gpu_decode.DECODE_KEY if on_device else None)
    n = len(dataset)
    dim = int(model.dim)

    def result(entry: Entry, cached: bool) -> EmbeddingResult:
        return EmbeddingResult.from_entry(dataset, model.spec, modality, entry, cached, t0)

    with claim_vectors(cache, key) as entry:
        if entry is not None:
            return result(entry, cached=True)
        with _writing(cache, key, n * dim * 4, model.spec):
            plan = open_plan(cache, key, n, dim, int(batch_size or model.default_batch_size))
        bs, shard_size, n_shards = plan_shape(plan)
        first = cache.completed_shards("vectors", key, n_shards)
        tracker = ProgressTracker(
            f"embed {modality}s with {model.spec}",
            n,
            progress,
            already_done=min(n, first * shard_size),
        )
        tracker.emit()

        todo = _batches(first * shard_size, n, bs)
        stream: Any = None
        if modality == IMAGE:
            n_workers = workers or min(4, os.cpu_count() or 1)
            if on_device:
                stream = _device_image_batches(dataset, model, todo, n_workers)
                embed = model.embed_pixels  # type: ignore[attr-defined]
            else:
                stream = _prefetched_image_batches(dataset, model, todo, n_workers)
                embed = model.embed_preprocessed
        texts = dataset.texts or []
        forward = _Forward(model, bs)
        failures: dict[int, str] = {}
        try:
            for s in range(first, n_shards):
                start, stop = s * shard_size, min(n, (s + 1) * shard_size)
                shard_batches = _batches(start, stop, bs)
                if modality == IMAGE:
                    rows, failed = _embed_shard_images(
                        embed, stream, len(shard_batches), dim, tracker, forward
                    )
                else:
                    rows, failed = _embed_shard_texts(
                        texts, model, shard_batches, dim, tracker, forward
                    )
                failures.update(failed)
                with _writing(cache, key, n * dim * 4, model.spec):
                    if failed:  # failures first, shard last: the shard file marks it complete
                        failed_s = {str(k): v for k, v in failed.items()}
                        cache.write_partial_plan("vectors", key, {**plan, f"failed_{s}": failed_s})
                        plan = cache.read_partial_plan("vectors", key) or plan
                    atomic_save_npy(cache.shard_path("vectors", key, s), rows)
        finally:
            if stream is not None:
                stream.close()  # stops the decode threads, also when a shard failed

        with _writing(cache, key, n * dim * 4, model.spec):
            entry = finish_entry(
                cache,
                key,
                plan,
                dataset,
                failures,
                {
                    "model": model.spec,
                    "model_identity": model.identity,
                    "modality": modality,
                    "device": model.device,
                    "decode": "device" if on_device else "pillow",
                    "seconds": round(time.perf_counter() - t0, 3),
                },
            )
    return result(entry, cached=False)


@contextmanager
def _writing(cache: Cache, key: str, need_bytes: int, model_spec: str) -> Iterator[None]:
    """Around a job's writes: a failed one (a full disk, an I/O error) removes the job's
    unfinished shards, so they do not keep the disk full, and becomes one line saying how
    much the job needs (``Cache.abandon_partial``). The key's writer lock is held."""
    try:
        yield
    except (OSError, CacheError) as exc:
        failed = cache.abandon_partial(
            "vectors", key, exc, need_bytes, f"embedding with {model_spec}"
        )
        if failed is None or failed is exc:
            raise
        raise failed from exc
