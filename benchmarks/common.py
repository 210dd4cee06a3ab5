"""Shared plumbing for the benchmarks: arguments, machine description, the final JSON line.

Every benchmark prints human-readable lines while it runs and, last, one JSON object on one line
(the only line with ``--json``), holding its figures and the machine they were measured on.
Timings are compared as ratios against a baseline measured in the same run, because this
machine is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark runs")
    p.add_argument("--json", action="store_true", help="print only the final JSON line")
    return p


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": None,
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


class Reporter:
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.args = args
        self.t0 = time.perf_counter()

    def log(self, *parts: Any) -> None:
        if not self.args.json:
            print(*parts, file=sys.stderr, flush=True)

    def done(self, figures: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "benchmark": self.name,
            "quick": bool(self.args.quick),
            "machine": machine(),
            "wall_s": round(time.perf_counter() - self.t0, 2),
            **figures,
        }
        print(json.dumps(payload, default=float), flush=True)
        return payload


def best_of(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Fastest of ``repeats`` runs (seconds) and the last result: the least noisy estimate."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def interleaved(
    baseline: Callable[[], Any], engine: Callable[[int], Any], runs: int
) -> tuple[list[float], list[float]]:
    """Seconds of each run of ``baseline`` and of ``engine`` (given the run's index), taken in
    turn so that drift on a shared machine hits both alike."""
    baseline_s, engine_s = [], []
    for run in range(runs):
        t = time.perf_counter()
        baseline()
        baseline_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        engine(run)
        engine_s.append(time.perf_counter() - t)
    return baseline_s, engine_s


def throughput_ratio(
    n: int, baseline_s: list[float], engine_s: list[float], names: tuple[str, str], digits: int
) -> dict[str, float]:
    """Best items/s of the baseline and the engine (``names``: baseline label, item unit) and
    their ratio (1.0: the engine costs nothing over the baseline; the target is 0.9)."""
    baseline, unit = names
    return {
        f"{baseline}_{unit}_per_s": round(n / min(baseline_s), digits),
        f"engine_{unit}_per_s": round(n / min(engine_s), digits),
        "ratio": round(min(baseline_s) / min(engine_s), 3),
        "target_ratio": 0.9,
    }


def clustered_vectors(n: int, d: int, clusters: int, seed: int = 0, noise: float = 0.35):
    """L2-normalised float32 vectors around ``clusters`` random centres (like real embeddings,
    which are far from uniform noise), generated in chunks to keep peak memory low."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        lab = rng.integers(0, clusters, m)
        x = centres[lab] + noise * rng.normal(size=(m, d)).astype(np.float32) / np.sqrt(d)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out
