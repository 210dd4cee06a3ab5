"""Dynamic batching: concurrent requests for one model share forward passes.

A web service answering one image per request would call the model once per request; batched
inference is where a model's throughput comes from (a CPU keeps its cores busy, a GPU its
tensor cores). Each (model, modality) gets one ``DynamicBatcher``: request threads hand it their
items and block; a single worker thread takes the first waiting request, gathers more for at most
``max_wait_s`` (or until ``max_batch`` items; no wait while requests arrive one at a time), runs
the model once on all of them and hands each request its rows. With ``max_batch=1`` it is the
one-call-per-request baseline the benchmark compares against. One worker per model also means
the model is never run from two threads at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

EmbedFn = Callable[[list[Any]], np.ndarray]


@dataclass
class _Request:
    items: list[Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class BatcherClosed(RuntimeError):
    """The batcher was closed (the service is shutting down)."""


class DynamicBatcher:
    """Run ``embed`` on items gathered from concurrent callers (thread-safe)."""

    def __init__(
        self, embed: EmbedFn, *, max_batch: int, max_wait_s: float, name: str = ""
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._embed = embed
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_s)
        self.name = name
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._last_requests = 0  # requests in the last batch: were they arriving together?
        self.batches = 0  # forward passes run (for tests and the benchmark)
        self.items = 0
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def submit(self, items: Sequence[Any]) -> np.ndarray:
        """Embed ``items`` (together with whatever else is waiting); blocks until done."""
        if self._closed:
            raise BatcherClosed(f"{self.name}: shutting down")
        request = _Request(list(items))
        if not request.items:
            raise ValueError("nothing to embed")
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _gather(self, first: _Request) -> list[_Request]:
        batch, size = [first], len(first.items)
        # Wait for company only when requests have been arriving together: a lone client
        # (the last batch held one request) gets its answer without the wait.
        wait = self.max_wait_s if self._last_requests > 1 or not self._queue.empty() else 0.0
        deadline = time.monotonic() + wait
        while size < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if nxt is None:  # close() while gathering: finish this batch, then stop
                self._queue.put(None)
                break
            if size + len(nxt.items) > self.max_batch and size > 0:
                self._queue.put(nxt)  # too big for this batch: it leads the next one
                break
            batch.append(nxt)
            size += len(nxt.items)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = self._gather(first)
            self._last_requests = len(batch)
            items = [item for r in batch for item in r.items]
            try:
                out = np.asarray(self._embed(items))
                if len(out) != len(items):
                    raise RuntimeError(f"model returned {len(out)} rows for {len(items)} items")
            except BaseException as exc:  # every waiting request learns why
                for r in batch:
                    r.error = exc
                    r.done.set()
                continue
            self.batches += 1
            self.items += len(items)
            start = 0
            for r in batch:
                r.result = out[start : start + len(r.items)]
                start += len(r.items)
                r.done.set()
        # Anything still queued after close() is told so instead of waiting forever.
        while True:
            try:
                r = self._queue.get_nowait()
            except queue.Empty:
                break
            if r is not None:
                r.error = BatcherClosed(f"{self.name}: shutting down")
                r.done.set()


class BatcherPool:
    """One ``DynamicBatcher`` per (model spec, modality), created on first use."""

    def __init__(self, *, max_batch: int, max_wait_s: float) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._batchers: dict[tuple[str, str], DynamicBatcher] = {}

    def get(self, key: tuple[str, str], embed: EmbedFn) -> DynamicBatcher:
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = DynamicBatcher(
                    embed, max_batch=self.max_batch, max_wait_s=self.max_wait_s, name="/".join(key)
                )
                self._batchers[key] = batcher
            return batcher

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "/".join(k): {"batches": b.batches, "items": b.items}
                for k, b in self._batchers.items()
            }

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for b in batchers:
            b.close()
