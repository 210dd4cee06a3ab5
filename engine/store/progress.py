"""Progress reporting shared by the CLI (stderr) and the dashboard (st.progress)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A snapshot of a long job: ``done`` of ``total`` items, with a rate and an ETA."""

    stage: str
    done: int
    total: int
    rate: float  # items per second over the job so far (0.0 until something is done)
    eta_s: float | None  # seconds left at the current rate; None while unknown

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    def line(self) -> str:
        eta = "?" if self.eta_s is None else f"{self.eta_s:.0f}s"
        return f"{self.stage}: {self.done}/{self.total} ({self.rate:.1f}/s, ETA {eta})"


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """The default callback: report nothing."""


class ProgressTracker:
    """Turns ``advance(n)`` calls into ``Progress`` snapshots for a callback.

    ``already_done`` items (e.g. resumed from a partial cache entry) count towards ``done`` but
    not towards the rate, so the ETA reflects the work this process actually does.
    """

    def __init__(
        self, stage: str, total: int, callback: ProgressCallback | None, already_done: int = 0
    ) -> None:
        self.stage = stage
        self.total = total
        self.callback = callback or no_progress
        self.done = already_done
        self._start_done = already_done
        self._t0 = time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n
        self.emit()

    def emit(self) -> None:
        elapsed = time.perf_counter() - self._t0
        fresh = self.done - self._start_done
        rate = fresh / elapsed if elapsed > 0 and fresh > 0 else 0.0
        left = max(0, self.total - self.done)
        eta = left / rate if rate > 0 else (0.0 if left == 0 else None)
        self.callback(Progress(self.stage, self.done, self.total, rate, eta))
