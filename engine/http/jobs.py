"""Embedding jobs for the HTTP service: queued (bounded), run one at a time, persisted, resumed.

A job is one ``Workspace.embed`` call. Its record (status, progress, result or error) is a JSON
file under ``<cache>/jobs/``, rewritten atomically as it moves; the vectors go to the same cache
entries the CLI and the dashboard use. After a restart every job that was queued or running is
started again, and the embed resumes from its finished shards, so an interrupted job loses at
most one shard of work. Finished records are forgotten ``ttl_s`` after they finished; the queue
holds at most ``max_active`` unfinished jobs, ``max_per_client`` of them from one client.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.errors import NotFound, ParallaxError
from engine.store.atomic import ReadOnlyCache, atomic_write_json, is_read_only, write_error

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
_SAVE_EVERY_S = 1.0  # progress is persisted at most this often (it is served from memory)
# Fields of a record that stay on the server: who asked, and (in records of older versions)
# the cache's path.
PRIVATE = ("client", "cache_root")
READ_ONLY_JOBS = (
    "this deployment's cache is read-only: no embed job can store its vectors (cached maps "
    "and embeddings can still be read)"
)

# (the job record, a progress callback taking an engine Progress) -> the result's JSON
Runner = Callable[[dict[str, Any], Callable[[Any], None]], dict[str, Any]]


class UnknownJob(NotFound):
    """No job has this id."""


class QueueFull(ParallaxError):
    """Too many unfinished jobs, in all or from one client (answered 429)."""

    http_status = 429
    code = "too_many_jobs"


def public(job: dict[str, Any]) -> dict[str, Any]:
    """A job record as a client sees it."""
    return {k: v for k, v in job.items() if k not in PRIVATE}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """A reader (or a restart after kill -9) sees the old record or the new one, never half of
    one: the engine's one atomic writer (temp name beside it, fsync, rename)."""
    atomic_write_json(path, data)


class JobStore:
    """Jobs kept in ``folder``. ``submit`` returns at once; a single worker runs them in order."""

    def __init__(
        self,
        folder: Path,
        runner: Runner,
        *,
        max_active: int = 16,
        max_per_client: int = 2,
        ttl_s: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        # A read-only cache (a read-only mount, a folder this user may not write) still serves
        # what is cached: the records there are read, and only a new job is refused.
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not is_read_only(exc):
                raise write_error(self.folder, exc) from exc
        self.read_only = not os.access(self.folder.parent, os.W_OK) or (
            self.folder.is_dir() and not os.access(self.folder, os.W_OK)
        )
        self.runner = runner
        self.max_active = max_active
        self.max_per_client = max_per_client
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-job")
        self._load()

    # -- persistence ------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _save(self, job: dict[str, Any]) -> None:
        _write_json(self._path(job["id"]), job)

    def _load(self) -> None:
        """Read every record; restart the ones a previous process left unfinished; drop the
        temp files a killed writer left behind. On a read-only cache: only read them."""
        if not self.read_only:
            for tmp in self.folder.glob(".tmp-*"):
                tmp.unlink(missing_ok=True)
        resume = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                job = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("unreadable job record %s skipped", path.name)
                continue
            if not isinstance(job, dict) or "id" not in job:
                continue
            job.pop("cache_root", None)  # older records named the server's cache
            self._jobs[job["id"]] = job
            if job.get("status") in ACTIVE:
                job["status"] = "queued"
                job["resumed"] = int(job.get("resumed", 0)) + 1
                resume.append(job)
        with self._lock:
            self._expire()
        if self.read_only:
            for job in resume:  # it cannot store its vectors here: shown as it was left
                job["status"] = "failed"
                job["error"] = READ_ONLY_JOBS
            if resume:
                log.warning(
                    "%d unfinished embed job(s) not resumed: %s", len(resume), READ_ONLY_JOBS
                )
            return
        for job in sorted(resume, key=lambda j: j.get("created", 0)):
            self._save(job)
            self._pool.submit(self._run, job["id"])

    def _expire(self) -> None:
        """Forget finished records older than the TTL (the caller holds the lock)."""
        cutoff = self._clock() - self.ttl_s
        old = [
            job_id
            for job_id, job in self._jobs.items()
            if job.get("status") not in ACTIVE and float(job.get("updated", 0)) < cutoff
        ]
        for job_id in old:
            del self._jobs[job_id]
            with contextlib.suppress(OSError):  # a read-only cache: forgotten here only
                self._path(job_id).unlink(missing_ok=True)
        if old:
            log.info("forgot %d finished job record(s) past their TTL", len(old))

    # -- API --------------------------------------------------------------------------------
    def require_writable(self) -> None:
        """``ReadOnlyCache`` (503, one line) when no job can be stored on this cache."""
        if self.read_only:
            raise ReadOnlyCache(READ_ONLY_JOBS)

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(j) for j in self._jobs.values() if j["status"] in ACTIVE]

    def submit(
        self, dataset: str, model: str, modality: str | None = None, *, client: str = ""
    ) -> dict[str, Any]:
        """A new job, or the unfinished one already asked for with the same arguments.
        ``QueueFull`` when the queue is full in all or for ``client``; ``ReadOnlyCache`` on
        a read-only cache."""
        self.require_writable()
        with self._lock:
            self._expire()
            active = [j for j in self._jobs.values() if j["status"] in ACTIVE]
            for job in active:
                if (job["dataset"], job["model"], job.get("modality")) == (
                    dataset,
                    model,
                    modality,
                ):
                    return dict(job)
            if len(active) >= self.max_active:
                raise QueueFull(
                    f"{len(active)} embed jobs are queued or running (the limit): retry later"
                )
            mine = sum(1 for j in active if j.get("client") == client)
            if mine >= self.max_per_client:
                raise QueueFull(
                    f"you have {mine} embed jobs queued or running (the limit per client): "
                    "wait for one to finish"
                )
            now = self._clock()
            job = {
                "id": secrets.token_hex(8),
                "kind": "embed",
                "dataset": dataset,
                "model": model,
                "modality": modality,
                "client": client,
                "status": "queued",
                "created": now,
                "updated": now,
                "progress": {"done": 0, "total": None, "rate": 0.0, "eta_s": None},
                "result": None,
                "error": None,
            }
            self._jobs[job["id"]] = job
            self._save(job)
        self._pool.submit(self._run, job["id"])
        return dict(job)

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._expire()
            job = self._jobs.get(job_id)
            if job is None:
                raise UnknownJob(f"no job {str(job_id)[:40]!r}")
            return json.loads(json.dumps(job))  # a copy the caller may keep

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(j) for j in sorted(self._jobs.values(), key=lambda j: j["created"])]

    def shutdown(self, wait: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- the worker -------------------------------------------------------------------------
    def _update(self, job_id: str, save: bool = True, **changes: Any) -> None:
        with self._lock:
            job = self._jobs[job_id]
            job.update(changes, updated=self._clock())
            if save:
                self._save(job)

    def _run(self, job_id: str) -> None:
        with self._lock:
            job = dict(self._jobs[job_id])
        self._update(job_id, status="running")
        last_save = [0.0]

        def progress(p: Any) -> None:
            now = time.monotonic()
            save = now - last_save[0] >= _SAVE_EVERY_S or p.done >= p.total
            if save:
                last_save[0] = now
            snapshot = {"done": p.done, "total": p.total, "rate": round(p.rate, 2)}
            snapshot["eta_s"] = None if p.eta_s is None else round(p.eta_s, 1)
            self._update(job_id, save=save, progress=snapshot, stage=p.stage)

        try:
            result = self.runner(job, progress)
        except ParallaxError as exc:
            self._update(job_id, status="failed", error=str(exc).splitlines()[0][:500])
        except Exception as exc:  # a bug: the job fails with its type, the log keeps the cause
            log.exception("embed job %s failed", job_id)
            self._update(job_id, status="failed", error=f"internal error ({type(exc).__name__})")
        else:
            n = result.get("n")
            done = {"done": n, "total": n, "rate": 0.0, "eta_s": 0.0}
            with self._lock:
                if self._jobs[job_id].get("progress", {}).get("total"):
                    done = {**self._jobs[job_id]["progress"], "done": n, "eta_s": 0.0}
            self._update(job_id, status="done", result=result, progress=done)
