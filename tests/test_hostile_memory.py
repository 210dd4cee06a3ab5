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

    # 120 MiB, under the default upload limit (128 MiB, PARALLAX_MAX_UPLOAD_BYTES): a copy
    # (2x) would clear the fixed cost of opening (~60 MB) and fail the bound below
    big, small = make_upload_zips(tmp_path, 120, distinct=4)
    size = big.stat().st_size
    got = measure_upload(REPO, big, small, tmp_path)
    assert got.get("items", 0) >= 30, got
    assert got["peak_mb"] * MB < 1.5 * size, (got, size / MB)
    assert got["held_mb"] * MB < 0.5 * size, (got, size / MB)


# -- issue 27: one upload must not kill a 1 GiB server; `datasets --inspect` stays under 1.5 GB --
PEAK_WRAPPER = """
import json, resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"rc": done.returncode, "stderr": done.stderr, "stdout": done.stdout,
                  "peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def inspect_peak(spec: str, tmp_path: Path, **env: str) -> dict:
    """``python -m engine datasets --inspect SPEC`` in a fresh child; its peak RSS (the
    wrapper's ``RUSAGE_CHILDREN``: that child alone), exit code and output."""
    cmd = [sys.executable, "-m", "engine", "datasets", "--inspect", spec]
    cmd += ["--cache-dir", str(tmp_path / "cli-cache")]
    run_env = {**os.environ, **env}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *cmd],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=run_env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def parquet_bomb(path: Path, rows: int = 235_000, chars: int = 20_000) -> Path:
    """One ``chars``-character text in a dictionary page, every row pointing at it: ~1 kB on
    disk, ``rows * chars`` bytes (4.7 GB by default) once decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    indices = pa.array(np.zeros(rows, dtype=np.int32))
    column = pa.DictionaryArray.from_arrays(indices, pa.array(["x" * chars]))
    pq.write_table(pa.table({"text": column}), path, compression="zstd")
    return path


def test_a_dictionary_parquet_bomb_is_refused_in_one_line_under_budget(tmp_path):
    """The issue's 213 kB Parquet took 4.7 GB (SIGKILL in a 1 GiB box): its decoded size is
    computed from the dictionary before anything is expanded, and refused in one line."""
    bomb = parquet_bomb(tmp_path / "bomb.parquet")
    assert bomb.stat().st_size < 213 * 1024
    got = inspect_peak(f"manifest:{bomb}", tmp_path)
    assert got["rc"] == 2, got
    lines = got["stderr"].strip().splitlines()
    assert len(lines) == 1 and "PARALLAX_DECODE_BYTES" in lines[0], lines
    assert "Traceback" not in got["stderr"]
    assert got["peak"] < 400 * MB, got["peak"] / MB  # 4.7 GB decoded; the budget is 128 MB


def test_a_csv_over_the_decode_budget_is_refused_from_its_size(tmp_path):
    """A 470 MiB CSV at the old upload limit: SIGKILL in 12.5 s. Now refused before a byte is
    parsed (scaled down here: a 40 MiB CSV against a 32 MiB budget)."""
    path = tmp_path / "big.csv"
    row = b"a sentence of a caption,label\n"
    with open(path, "wb") as f:
        f.write(b"text,label\n")
        f.write(row * (40 * MB // len(row)))
    got = inspect_peak(f"manifest:{path}", tmp_path, PARALLAX_DECODE_BYTES="32M")
    assert got["rc"] == 2, got
    lines = got["stderr"].strip().splitlines()
    assert len(lines) == 1 and "PARALLAX_DECODE_BYTES" in lines[0], lines
    assert got["peak"] < 300 * MB, got["peak"] / MB


def test_a_csv_whose_rows_expand_past_the_budget_stops_in_chunks(tmp_path):
    """Under the size check but many short cells (each a Python object once parsed): the
    chunked reader refuses it as the rows pass the budget, never holding the whole table."""
    path = tmp_path / "rows.csv"
    with open(path, "w") as f:
        f.write("text," + ",".join(f"c{i}" for i in range(20)) + "\n")
        line = "t," + ",".join("v" for _ in range(20)) + "\n"
        f.write(line * 400_000)  # 17 MB of text, ~1 GB as objects
    size = path.stat().st_size
    got = inspect_peak(f"manifest:{path}", tmp_path, PARALLAX_DECODE_BYTES="32M")
    assert size < 32 * MB
    assert got["rc"] == 2 and "PARALLAX_DECODE_BYTES" in got["stderr"], got
    assert got["peak"] < 400 * MB, got["peak"] / MB


def test_a_zip_of_noise_pngs_opens_under_the_bound(tmp_path):
    """A zip of large noise PNGs (the issue: 311 MB of 72 took the server down): extracted
    by streaming, each image decoded through the process-wide pixel gate (scaled: 12)."""
    import zipfile

    from PIL import Image

    noise = np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG", compress_level=1)
    png = buf.getvalue()
    archive = tmp_path / "noise.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(12):
            zf.writestr(f"noise/{i}.png", png)
    got = inspect_peak(f"zip:{archive}", tmp_path)
    assert got["rc"] == 0, got
    assert got["peak"] < 600 * MB, got["peak"] / MB


def test_a_large_datasets_size_is_estimated_from_an_even_sample():
    """Past ``ESTIMATE_SAMPLE`` rows the holder's size estimate reads an even sample of the
    strings and the table (a 10M-item count took ~10 s of the Map page), and lands near the
    exact count."""
    import pandas as pd

    from engine.data.base import ESTIMATE_SAMPLE, approx_nbytes

    rng = np.random.default_rng(0)
    n = 10 * ESTIMATE_SAMPLE + 4321  # not a multiple of the sample
    lengths = rng.integers(1, 40, n)

    class Table:
        def __init__(self) -> None:
            self.ids = [str(i) for i in range(n)]
            self.labels = ["x" * int(k) for k in lengths]
            self.texts = None

        def metadata(self) -> pd.DataFrame:
            return pd.DataFrame({"note": self.labels, "size": lengths})

    table = Table()
    exact_strings = sum(56 + len(s) for s in table.ids + table.labels)
    exact_table = int(table.metadata().memory_usage(deep=True, index=False).sum())
    estimate = approx_nbytes(table)
    assert abs(estimate - (exact_strings + exact_table)) < 0.02 * (exact_strings + exact_table)
    for rows in (ESTIMATE_SAMPLE + 1, int(1.5 * ESTIMATE_SAMPLE), 12 * ESTIMATE_SAMPLE + 17):
        short = type("Short", (), {"ids": table.ids[:rows], "labels": [], "texts": None})()
        want = sum(56 + len(s) for s in short.ids)
        assert abs(approx_nbytes(short) - want) < 0.02 * want  # one sample, no recursion
