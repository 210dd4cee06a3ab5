"""Background jobs shared by every session: long work (UMAP maps) off the script thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import streamlit as st


@dataclass
class Job:
    """A background job shared by every session that asks for the same key."""

    key: str
    label: str
    future: Future
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class JobRunner:
    """Runs long, page-independent work (UMAP maps) off the script thread.

    The script thread stays free, so a user can switch page while a map is computed; a
    ``st.fragment(run_every=...)`` polls the job and reruns the page when it is done. One
    worker: two UMAP fits at once on a 2-core box only make both slower. Thread-safe.
    """

    def __init__(self, workers: int = 1) -> None:
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parallax-job")
        self._jobs: dict[str, Job] = {}

    def submit(self, key: str, label: str, fn: Callable[[], Any]) -> Job:
        """The job for ``key``: the running or finished one, else a new one running ``fn``."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = Job(key, label, self._pool.submit(fn))
                self._jobs[key] = job
            return job

    def forget(self, key: str) -> None:
        """Drop a finished job (e.g. a failed one, so that a retry starts afresh)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.future.done():
                del self._jobs[key]


@st.cache_resource(show_spinner=False)
def job_runner() -> JobRunner:
    return JobRunner()
