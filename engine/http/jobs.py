"""Embedding jobs for the HTTP service: queued, run one at a time, persisted, resumed.

A job is one ``engine.embed.local.embed_dataset`` call. Its record (status, progress, result or
error)
is a JSON file under ``<cache>/jobs/``, rewritten atomically as it moves; the vectors go to the
same cache entries the CLI and the dashboard use. After a restart every job that was queued or
running is started again, and ``embed_dataset`` resumes from its finished shards, so an
interrupted job loses at most one shard of work.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.errors import ParallaxError
from engine.store.cache import Cache, atomic_write_json
from engine.store.progress import Progress

log = logging.getLogger(__name__)

JOBS = "jobs"  # the cache kind (engine.store.space.KINDS)
ACTIVE = ("queued", "running")
_SAVE_EVERY_S = 1.0  # progress is persisted at most this often (it is served from memory)

Runner = Callable[[dict[str, Any], Callable[[Progress], None]], dict[str, Any]]


class UnknownJob(ParallaxError):
    """No job has this id."""


def _default_runner(job: dict[str, Any], progress: Callable[[Progress], None]) -> dict[str, Any]:
    from engine.embed.local import embed_dataset

    cache = Cache(job["cache_root"])
    result = embed_dataset(
        job["dataset"], job["model"], modality=job.get("modality"), cache=cache, progress=progress
    )
    return result.to_json()


class JobStore:
    """Jobs of one cache root. ``submit`` returns at once; a single worker runs them in order."""

    def __init__(self, cache: Cache, runner: Runner = _default_runner) -> None:
        self.cache = cache
        self.folder = cache.kind_dir(JOBS)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._runner = runner
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-job")
        self._load()

    # -- persistence ------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self.cache.path(JOBS, job_id)

    def _save(self, job: dict[str, Any]) -> None:
        atomic_write_json(self._path(job["id"]), job)

    def _load(self) -> None:
        """Read every record; restart the ones a previous process left unfinished."""
        resume = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                job = json.loads(path.read_text())
            except (OSError, ValueError):
                log.warning("unreadable job record %s skipped", path)
                continue
            if not isinstance(job, dict) or "id" not in job:
                continue
            self._jobs[job["id"]] = job
            if job.get("status") in ACTIVE:
                job["status"] = "queued"
                job["resumed"] = int(job.get("resumed", 0)) + 1
                resume.append(job)
        for job in sorted(resume, key=lambda j: j.get("created", 0)):
            self._save(job)
            self._pool.submit(self._run, job["id"])

    # -- API --------------------------------------------------------------------------------
    def submit(self, dataset: str, model: str, modality: str | None = None) -> dict[str, Any]:
        """A new job, or the unfinished one already asked for with the same arguments."""
        with self._lock:
            for job in self._jobs.values():
                same = (job["dataset"], job["model"], job.get("modality")) == (
                    dataset,
                    model,
                    modality,
                )
                if same and job["status"] in ACTIVE:
                    return dict(job)
            now = time.time()
            job = {
                "id": secrets.token_hex(8),
                "kind": "embed",
                "dataset": dataset,
                "model": model,
                "modality": modality,
                "cache_root": str(self.cache.root),
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
            job.update(changes, updated=time.time())
            if save:
                self._save(job)

    def _run(self, job_id: str) -> None:
        with self._lock:
            job = dict(self._jobs[job_id])
        self._update(job_id, status="running")
        last_save = [0.0]

        def progress(p: Progress) -> None:
            now = time.monotonic()
            save = now - last_save[0] >= _SAVE_EVERY_S or p.done >= p.total
            if save:
                last_save[0] = now
            snapshot = {"done": p.done, "total": p.total, "rate": round(p.rate, 2)}
            snapshot["eta_s"] = None if p.eta_s is None else round(p.eta_s, 1)
            self._update(job_id, save=save, progress=snapshot, stage=p.stage)

        try:
            result = self._runner(job, progress)
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
