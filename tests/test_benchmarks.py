"""Every benchmark still runs (at --quick size) and ends with one well-formed JSON line.

No timing is asserted here: timings live in BENCHMARKS.md, measured by the full runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted((REPO / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_quick_run_prints_json(script, tmp_path):
    env = {**os.environ, "PARALLAX_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, str(script), "--quick", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    payload = json.loads(lines[0])
    assert payload["quick"] is True
    assert payload["benchmark"] and payload["machine"]["cpu_count"] >= 1
    numbers = [v for v in payload.values() if isinstance(v, (int, float))]
    assert numbers and all(v == v for v in numbers)  # no NaN figures
