"""Small hostile inputs must not cost large memory (issue 21), measured in child processes.

Each case opens one generated input in a fresh Python and reads its peak RSS (``ru_maxrss``)
against a child that only imports the same modules; the difference must stay far below what
the input would decode to. ``benchmarks/hostile_memory.py`` prints the same measurements at
the issue's scale (the numbers in docs/security.md).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.hostile_bundles import DEMO_BUNDLE, rebundle

REPO = Path(__file__).resolve().parent.parent
MB = 1024**2

CHILD = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
import pandas, pyarrow.parquet, PIL.Image  # loaded lazily by the code: not the input's cost
{imports}
def peak():  # VmHWM: ru_maxrss survives exec, so it would report the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = peak()
outcome = "opened"
if {run!r}:
    try:
        {call}
    except Exception as exc:
        outcome = type(exc).__name__ + ": " + str(exc)
print(json.dumps({{"cost": peak() - base, "outcome": outcome}}))
"""


def cost_of(imports: str, call: str, tmp_path: Path) -> tuple[int, str]:
    """Peak bytes ``call`` added in a fresh child, and how it ended."""

    def run(flag: bool) -> dict:
        code = CHILD.format(repo=str(REPO), imports=imports, call=call, run=flag)
        env = {**os.environ, "PARALLAX_CACHE": str(tmp_path / "cache")}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    got = run(True)
    return got["cost"], got["outcome"]


def test_a_large_sixteen_bit_png_decodes_reduced(tmp_path):
    from PIL import Image

    path = tmp_path / "big16.png"
    pixels = np.zeros((8000, 8000), dtype=np.uint16)
    pixels[::97, ::89] = 50_000
    Image.fromarray(pixels).save(path)
    del pixels
    assert path.stat().st_size < 2 * MB
    cost, outcome = cost_of(
        "from engine.data.images import open_image_safely",
        f"open_image_safely(Path({str(path)!r}), name='big.png')",
        tmp_path,
    )
    assert outcome == "opened"
    # decoded 16-bit it is 128 MB; the unfixed conversion cost 2.3 GB
    assert cost < 450 * MB, cost / MB


def test_repeated_texts_in_a_parquet_manifest_are_capped_while_read(tmp_path):
    import pandas as pd

    path = tmp_path / "repeated.parquet"
    text = "lorem ipsum " * (200_000 // 12)  # 200,000 characters, 1,500 times: 300 MB decoded
    pd.DataFrame({"text": [text] * 1500}).to_parquet(path)
    assert path.stat().st_size < 2 * MB
    cost, outcome = cost_of(
        "from engine.data import open_dataset",
        f"ds = open_dataset('manifest:{path}', cache_root=Path({str(tmp_path)!r}) / 'c')",
        tmp_path,
    )
    assert outcome == "opened"
    assert cost < 150 * MB, cost / MB  # half of what the texts decode to


def test_a_giant_text_cell_is_refused_before_it_is_held(tmp_path):
    path = tmp_path / "cell.csv"
    with open(path, "w") as f:
        f.write("text\n" + "a" * (100 * MB) + "\nshort\n")
    cost, outcome = cost_of(
        "from engine.data import open_dataset",
        f"ds = open_dataset('manifest:{path}', cache_root=Path({str(tmp_path)!r}) / 'c')",
        tmp_path,
    )
    assert outcome.startswith("DatasetError") and "longer than" in outcome, outcome
    assert cost < 80 * MB, cost / MB  # a 100 MB cell; lines are read 32 MB at most


def _rebundle(out: Path, edit) -> Path:
    return rebundle(DEMO_BUNDLE, out, edit)


OPEN_BUNDLE = "from engine.data.bundle import open_bundle\nfrom engine.store.cache import Cache"


def test_a_bundle_claiming_millions_of_rows_is_refused_before_decoding(tmp_path):
    import pandas as pd

    n = 1_000_000
    text = "z" * 1000  # stored once by Parquet; a million Python strings once decoded (1 GB)
    items = pd.DataFrame({"id": ["x"] * n, "label": ["y"] * n, "text": [text] * n})
    buf = io.BytesIO()
    items.to_parquet(buf, index=False)
    del items

    def claim(members, manifest):
        members["items.parquet"] = buf.getvalue()
        manifest["dataset"]["n"] = n
        manifest["dataset"]["has_texts"] = True

    path = _rebundle(tmp_path / "rows.parallax.zip", claim)
    cost, outcome = cost_of(
        OPEN_BUNDLE, f"open_bundle({str(path)!r}, cache=Cache({str(tmp_path / 'c')!r}))", tmp_path
    )
    assert outcome.startswith("BundleError"), outcome
    assert cost < 60 * MB, cost / MB


def test_a_bundle_manifest_that_inflates_is_refused_unread(tmp_path):
    def pad(members, manifest):
        manifest["padding"] = " " * (150 * MB)

    path = _rebundle(tmp_path / "pad.parallax.zip", pad)
    assert path.stat().st_size < 8 * MB  # 150 MB of manifest.json inside
    cost, outcome = cost_of(
        OPEN_BUNDLE, f"open_bundle({str(path)!r}, cache=Cache({str(tmp_path / 'c')!r}))", tmp_path
    )
    assert outcome.startswith("BundleError") and "manifest.json" in outcome, outcome
    assert cost < 40 * MB, cost / MB


def test_opened_datasets_are_released_by_bytes_not_count(tmp_path, monkeypatch):
    """The process-wide holder every door shares (``Workspace.open``: the dashboard's pages,
    the CLI, the HTTP service) keeps datasets within a byte budget (the newest always)."""
    from engine import settings
    from engine.data.base import approx_nbytes
    from engine.workspace import Workspace

    monkeypatch.setattr(settings, "DATASET_CACHE_BYTES", 3 * MB)
    texts = tmp_path / "texts.csv"
    texts.write_text("text\n" + "".join(f"{'word ' * 400}{i}\n" for i in range(2000)))
    ws = Workspace(tmp_path / "c")  # a new cache root: a new holder, under the patched budget
    big = ws.open(f"manifest:{texts}")
    assert approx_nbytes(big) > 3 * MB  # bigger than the whole budget: kept while newest
    assert ws.open(f"manifest:{texts}") is big
    small = ws.open("demo:sentences")
    assert ws.held()["datasets"] <= 3 * MB  # the big one is released, the small one kept
    digits = ws.open("demo:digits")
    assert ws.held()["datasets"] <= 3 * MB
    assert ws.open("demo:sentences") is small and ws.open("demo:digits") is digits
    assert ws.visitor("someone").open("demo:digits") is digits  # one holder for every visitor


def test_an_upload_near_the_size_limit_is_staged_without_a_second_copy(tmp_path):
    """Staging + opening a zip of images the way the Data page does (bytes in memory, staged
    for an owner, opened through the shared registry) costs about the upload once: the checks
    read the visitor's buffer in place instead of copying it (2x before). Then a second
    upload is opened, and what the first left behind must not grow with its size."""
    pytest.importorskip("streamlit")
    from benchmarks.hostile_memory import make_upload_zips, measure_upload

    # 160 MiB: above it the copy (2x) clears the fixed cost of opening (~60 MB) by far
    big, small = make_upload_zips(tmp_path, 160, distinct=4)
    size = big.stat().st_size
    got = measure_upload(REPO, big, small, tmp_path)
    assert got.get("items", 0) >= 40, got
    assert got["peak_mb"] * MB < 1.5 * size, (got, size / MB)
    assert got["held_mb"] * MB < 0.5 * size, (got, size / MB)
