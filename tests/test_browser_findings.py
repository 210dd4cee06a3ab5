"""The Findings page in the real app and headless Chromium: on a small image set with planted
problems (an exact copy across the splits, a flipped label), the findings are listed, and
clicking a leak's Select button selects its rows on both maps (``data-selected``).

Every wait is on a state the page announces (the maps' ``data-state="drawn"`` and counts, the
Streamlit status widget): nothing is slept on, clicked twice or reloaded.

Run with ``pytest -m browser tests/test_browser_findings.py``; skipped without /usr/bin/chromium.
The screenshot goes to a temporary folder (printed, and kept by pytest's tmp_path retention).
"""

from __future__ import annotations

import csv
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser_util import chromium_available, chromium_page, running_app, wait_for_app_idle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

PIXELS = "baseline:pixels"
SECOND = "demo:shapes-clip-small"  # a shipped model: answers offline, fast on 61 small images
TIMEOUT_MS = 180_000  # the first run computes the findings (and loads the second model's code)
N_DRAWINGS = 60
COPY_OF = 3  # row N_DRAWINGS is an exact copy of this row, in the other split
FLIPPED = 10  # this row's label is another digit's

# Each map element's state, points drawn and points selected.
MAP_INFO_JS = """() => Array.from(document.querySelectorAll('.parallax-scatter')).map(e => ({
  state: e.dataset.state, points: Number(e.dataset.points), selected: Number(e.dataset.selected),
  title: (e.querySelector('.ps-title') || {}).textContent || '' }))"""


def maps_js(n: int, selected: int) -> str:
    """Two maps, each drawn with ``n`` points of which ``selected`` are selected."""
    return (
        f"() => {{ const m = ({MAP_INFO_JS})(); return m.length === 2 && m.every(x => "
        f"x.state === 'drawn' && x.points === {n} && x.selected === {selected}); }}"
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, str]:
    """(cache, data folder, dataset spec): 60 digit drawings with a ``split`` column, row 60 an
    exact copy of row 3 in the other split, row 10's label flipped (so the label errors are not
    only the set's own); both models embedded in the private cache beforehand, so the page only
    computes the findings. The test checks the leak: what each kind finds is measured elsewhere
    (tests of engine.analysis.findings, BENCHMARKS.md)."""
    from sklearn.datasets import load_digits

    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    cache_root = tmp_path_factory.mktemp("findings-cache")
    root = tmp_path_factory.mktemp("findings-data")
    digits = load_digits()
    rows = []
    for i in range(N_DRAWINGS):
        g = (255 - digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(g).resize((32, 32), Image.NEAREST).convert("RGB").save(root / f"{i}.png")
        label = int(digits.target[i])
        if i == FLIPPED:
            label = (label + 5) % 10
        rows.append([f"{i}.png", str(label), "train" if i % 4 else "test"])
    assert rows[COPY_OF][2] == "train"
    (root / "copy.png").write_bytes((root / f"{COPY_OF}.png").read_bytes())
    rows.append(["copy.png", rows[COPY_OF][1], "test"])
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        w.writerows(rows)
    spec = f"manifest:{root / 'manifest.csv'}"
    cache = Cache(cache_root)
    ds = open_dataset(spec, cache_root=cache.root)
    embed_dataset(ds, PIXELS, cache=cache)
    embed_dataset(ds, SECOND, cache=cache)
    return cache_root, root, spec


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {path}")
    return path


def _maps(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(MAP_INFO_JS)


def test_click_a_leak_selects_it_on_both_maps(planted: tuple[Path, Path, str], shots: Path) -> None:
    cache, data_root, spec = planted
    n = N_DRAWINGS + 1
    group = f"rows {COPY_OF}, {N_DRAWINGS}"
    # The operator lists the data folder: a visitor's link may name a manifest only under it.
    env = {"PARALLAX_SERVER_PATHS": str(data_root), "PARALLAX_VIEW_ONLY": "0"}
    query = urllib.parse.urlencode([("ds", spec), ("m", PIXELS), ("m", SECOND)])
    t0 = time.perf_counter()
    with running_app(cache, env=env) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/findings?{query}")

        # The findings are listed (the summary line, then each kind's heading) and both maps
        # are drawn with every row and nothing selected.
        page.get_by_text("Leaks between splits (").wait_for(timeout=TIMEOUT_MS)
        page.wait_for_function(maps_js(n, 0), timeout=TIMEOUT_MS)
        wait_for_app_idle(page, TIMEOUT_MS)
        body = page.locator("body").inner_text()
        for title in ("Likely label errors (", "Duplicates (", "Outliers (", "Clusters"):
            assert title in body, title
        assert "leaks" in body and "label errors" in body
        assert sorted(m["title"].split(" · ")[0] for m in _maps(page)) == sorted([PIXELS, SECOND])
        print(f"findings listed, maps drawn: {time.perf_counter() - t0:.1f}s")
        page.screenshot(path=str(shots / "findings-listed.png"))

        # The planted copy across the splits is the first leak: its rows side by side.
        leak = page.locator(".st-key-sel_leaks_0")
        row = page.locator("[data-testid='stHorizontalBlock']").filter(has=leak).last
        assert group in row.inner_text() and "exact copies" in row.inner_text()

        leak.get_by_role("button", name="Select").click()
        page.wait_for_function(maps_js(n, 2), timeout=TIMEOUT_MS)
        wait_for_app_idle(page, TIMEOUT_MS)
        maps = _maps(page)
        assert [m["selected"] for m in maps] == [2, 2], maps
        page.get_by_text("2 item(s) selected on every map").wait_for(timeout=TIMEOUT_MS)
        page.screenshot(path=str(shots / "findings-leak-selected.png"))
        # The click leaves the view at the leak; the maps above show the two rows selected.
        page.locator(".parallax-scatter").first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "findings-maps-selected.png"))
        assert not errors, errors
    print(f"test total (app start, findings, click): {time.perf_counter() - t0:.1f}s")
