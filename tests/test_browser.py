"""The real app in headless Chromium: the WebGL maps draw every point (``data-points``), hovering
shows the item, clicking or lassoing selects it in every map (``data-selected``), and the
selection downloads as CSV.

Run with ``pytest -m browser tests/test_browser.py``; skipped without /usr/bin/chromium.
Screenshots go to a temporary folder (printed, and kept by pytest's tmp_path retention).
Headless Chromium has no GPU here: WebGL runs on the CPU (SwiftShader), slowly but exactly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser_util import REPO, chromium_available, chromium_page, running_app
from tests.fakes import MeanColourModel

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

PIXELS = "baseline:pixels"
SECOND = MeanColourModel(dim=16).spec
TIMEOUT_MS = 120_000

# What each map element reports: points drawn, points selected, its title.
MAP_INFO_JS = """() => Array.from(document.querySelectorAll('.parallax-scatter')).map(e => ({
  id: e.dataset.mapId, points: Number(e.dataset.points), selected: Number(e.dataset.selected),
  state: e.dataset.state, title: e.querySelector('.ps-title').textContent }))"""

# Screen position of row ``i`` in map ``m`` (page order).
POINT_JS = """([m, i]) => {
  const root = document.querySelectorAll('.parallax-scatter')[m];
  const inst = window.__parallaxMaps.maps.get(root.dataset.mapId);
  const [x, y] = inst.sp.getScreenPosition(i);
  const r = inst.ui.canvas.getBoundingClientRect();
  return {x: r.left + x, y: r.top + y, row: i};
}"""

# Screen positions of every row of map ``m`` (row -> [x, y]).
ROW_POSITIONS_JS = """(m) => {
  const root = document.querySelectorAll('.parallax-scatter')[m];
  const inst = window.__parallaxMaps.maps.get(root.dataset.mapId);
  const r = inst.ui.canvas.getBoundingClientRect(), out = {};
  for (let i = 0; i < inst.n; i++) {
    const [x, y] = inst.sp.getScreenPosition(i);
    out[i] = [r.left + x, r.top + y];
  }
  return out;
}"""

CANVAS_BOX_JS = """(m) => document.querySelectorAll('.parallax-scatter')[m]
  .querySelector('canvas').getBoundingClientRect().toJSON()"""

TIP_READY_JS = """() => { const el = document.getElementById('parallax-hover-preview');
  return !!el && el.style.display === 'block' && el.dataset.ready === '1'; }"""


def drawn_js(maps: int, n: int, title: str = "") -> str:
    return (
        f"() => {{ const m = ({MAP_INFO_JS})(); return m.length === {maps} && "
        f"m.every(x => x.points === {n} && x.title.includes({json.dumps(title)})); }}"
    )


def require_model_registry() -> None:
    """baseline:pixels comes from engine.models (another part of the project)."""
    try:
        from engine.models import load_model  # noqa: F401
    except ImportError:
        pytest.skip("engine.models.load_model is not available yet (needed for baseline:pixels)")


@pytest.fixture(scope="module")
def app_cache(tmp_path_factory) -> Path:
    """A cache with demo:digits embedded by baseline:pixels and a weightless second model."""
    require_model_registry()
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    root = tmp_path_factory.mktemp("browser-cache")
    cache = Cache(root)
    ds = open_dataset("demo:digits", cache_root=cache.root)
    embed_dataset(ds, PIXELS, cache=cache)
    embed_dataset(ds, MeanColourModel(dim=16), cache=cache)
    return root


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("screenshots")
    print(f"\nscreenshots: {path}")
    return path


def _maps(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(MAP_INFO_JS)


def _choose_pca(page: Any, maps: int, n: int) -> None:
    """Switch the projection to PCA (UMAP is computed in a background job and is slow cold)."""
    page.locator("button[data-variant='segmented_control']", has_text="PCA").first.click()
    page.wait_for_function(drawn_js(maps, n, "PCA"), timeout=TIMEOUT_MS)


def _hover(page: Any, m: int, i: int) -> dict[str, Any]:
    pos = page.evaluate(POINT_JS, [m, i])
    for attempt in range(3):  # like a user, move again if a redraw swallowed the first hover
        page.mouse.move(pos["x"] - 25, pos["y"] - 25)
        page.mouse.move(pos["x"], pos["y"], steps=4)
        try:
            page.wait_for_function(TIP_READY_JS, timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                raise
    return pos


def _shown_row_near(page: Any, m: int, pos: dict[str, Any]) -> None:
    """The preview shows an item drawn under the cursor (points overlap, so it need not be the
    one aimed at): within a few pixels of it."""
    shown = int(
        page.evaluate("() => document.getElementById('parallax-hover-preview').dataset.row")
    )
    xy = page.evaluate(ROW_POSITIONS_JS, m)[str(shown)]
    assert np.hypot(xy[0] - pos["x"], xy[1] - pos["y"]) <= 8, (shown, pos, xy)


def _lasso(page: Any, m: int, mode: str = "Lasso", frac: float = 0.15) -> None:
    root = page.locator(".parallax-scatter").nth(m)
    root.locator(".ps-btn", has_text=mode).click()
    box = page.evaluate(CANVAS_BOX_JS, m)
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    dx, dy = box["width"] * frac, box["height"] * frac
    path = [(cx - dx, cy - dy), (cx + dx, cy - dy), (cx + dx, cy + dy), (cx - dx, cy + dy)]
    # a lasso goes round and closes where it started; a box is dragged corner to corner
    path = [*path, (path[0][0], path[0][1] + 1)] if mode == "Lasso" else [path[0], path[2]]
    page.mouse.move(*path[0])
    page.mouse.down()
    for p in path[1:]:
        page.mouse.move(*p, steps=6)
    page.mouse.up()
    root.locator(".ps-btn", has_text="Pan").click()


def _listed_count(page: Any, at_least: int = 1) -> int:
    page.wait_for_function(
        "(k) => { const m = /([\\d,]+) item\\(s\\) selected/.exec(document.body.innerText);"
        " return m && Number(m[1].replace(/,/g, '')) >= k; }",
        arg=at_least,
        timeout=TIMEOUT_MS,
    )
    text = page.locator("body").inner_text()
    return int(text.split(" item(s) selected")[0].split()[-1].replace(",", ""))


def test_map_hover_click_lasso_linked_and_csv(app_cache: Path, shots: Path) -> None:
    """Two models of demo:digits side by side: hover previews the item with its thumbnail;
    clicking one point selects exactly one item in both maps; a lasso in one map selects the
    same items in the other; the selection downloads as CSV, one line per item."""
    n = 1797
    with running_app(app_cache) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/map")
        try:
            page.wait_for_function(drawn_js(2, n), timeout=TIMEOUT_MS)
        except PlaywrightTimeout:  # a first visit can lose the race with the warm-up: reload once
            page.reload()
            page.wait_for_function(drawn_js(2, n), timeout=TIMEOUT_MS)
        _choose_pca(page, 2, n)
        maps = _maps(page)
        assert sorted(m["title"].split(" · ")[0] for m in maps) == sorted([PIXELS, SECOND])
        page.screenshot(path=str(shots / "map.png"))

        # hover: a floating card with the item's thumbnail (fetched lazily as a sprite sheet)
        pos = _hover(page, 0, 0)
        _shown_row_near(page, 0, pos)
        tip = page.locator("#parallax-hover-preview")
        assert tip.locator(".parallax-thumb").count() == 1
        assert "data:image/webp;base64," in (
            tip.locator(".parallax-thumb").get_attribute("style") or ""
        )
        assert "digits-" in tip.inner_text()
        page.screenshot(path=str(shots / "hover.png"))

        # click one point: exactly one item selected, in both maps and in the page's list
        one_selected = f"() => ({MAP_INFO_JS})().every(m => m.selected === 1)"
        for attempt in range(3):  # like a user, click again if a redraw swallowed the click
            pos = page.evaluate(POINT_JS, [1, 150])
            page.mouse.click(pos["x"], pos["y"])
            try:
                page.wait_for_function(one_selected, timeout=TIMEOUT_MS // 4)
                break
            except PlaywrightTimeout:
                if attempt == 2:
                    raise
        assert _listed_count(page) == 1
        # one item: its detail, with its neighbours under both models and their overlap
        page.get_by_text("Shared neighbours").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("h4", has_text="Item digits-").count() == 1
        for spec in (PIXELS, SECOND):
            assert page.locator("strong", has_text=spec).count() >= 1
        page.screenshot(path=str(shots / "item.png"), full_page=True)

        # lasso on the first map: the same rows highlighted in both maps, listed below
        _lasso(page, 0)
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().every(m => m.selected > 1)", timeout=TIMEOUT_MS
        )
        count = _listed_count(page, at_least=2)
        maps = _maps(page)
        assert [m["selected"] for m in maps] == [count, count], (maps, count)
        assert all(m["points"] == n for m in maps)
        gallery = page.locator("[data-testid='stImage'] img")
        gallery.first.wait_for(timeout=TIMEOUT_MS)
        assert gallery.count() == min(count, 60)
        assert "sel=" in page.url  # the selection is in the shareable link

        # CSV download of the selection: a header and one line per selected item
        with page.expect_download(timeout=TIMEOUT_MS) as info:
            page.get_by_text("Download CSV").click()
        lines = Path(info.value.path()).read_text().strip().splitlines()
        assert lines[0].startswith("row,id,label")
        assert len(lines) == count + 1
        page.screenshot(path=str(shots / "selection.png"), full_page=True)
        assert not errors, errors


def _write_vectors(cache_root: Path, spec: str, n: int, dim: int = 16) -> None:
    """Synthetic clustered vectors for ``spec`` straight into the cache (no model needed)."""
    from engine.data import open_dataset
    from engine.store.cache import Cache, make_key

    cache = Cache(cache_root)
    ds = open_dataset(spec, cache_root=cache.root)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, dim)).astype(np.float32)
    x = centres[rng.integers(0, 12, n)] + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    key = make_key(kind="vectors", dataset=ds.fingerprint(), model="synthetic", n=n)
    cache.put(
        "vectors",
        key,
        x.astype(np.float32),
        {
            "dataset": spec,
            "dataset_fingerprint": ds.fingerprint(),
            "model": "synthetic:clusters",
            "modality": "image",
            "n": n,
            "dim": dim,
            "failed": [],
        },
    )


WRAPPER = """
import runpy, sys
sys.path.insert(0, {repo!r})
import streamlit as st
st.set_page_config(layout="wide")
st.session_state.setdefault("dataset_spec", {spec!r})
st.session_state.setdefault("map_method", "PCA")
runpy.run_path({page!r}, run_name="__main__")
"""


@pytest.mark.slow
def test_map_above_the_old_threshold_draws_every_point(tmp_path: Path, shots: Path) -> None:
    """250k items (the plotly map sampled 100k of them above 200k): the WebGL map reports every
    point drawn, and hover still previews items."""
    n = 250_000
    spec = f"demo:shapes?n={n}&seed=0"
    _write_vectors(tmp_path, spec, n)
    script = tmp_path / "map_only.py"
    script.write_text(
        WRAPPER.format(repo=str(REPO), spec=spec, page=str(REPO / "pages" / "map.py"))
    )
    with running_app(tmp_path, script, timeout_s=120) as url, chromium_page() as page:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(f".parallax-scatter[data-points='{n}']", timeout=300_000)
        seconds = time.perf_counter() - t0
        (info,) = _maps(page)
        assert info["points"] == n and info["state"] == "ready", info
        assert page.get_by_text("too many to draw one by one").count() == 0
        pos = _hover(page, 0, 50)
        _shown_row_near(page, 0, pos)
        page.screenshot(path=str(shots / f"map-{n}.png"))
    # Timings are reported, never asserted: benchmarks/bench_map_browser.py measures them.
    print(json.dumps({"n": n, "page_to_drawn_s": round(seconds, 2)}))


def test_view_only_app_on_the_committed_bundle(tmp_path: Path, shots: Path) -> None:
    """The deployed shape: no model library importable, PARALLAX_VIEW_ONLY=1, the committed
    demo bundle. Home shows two of its models side by side at once, with hover previews and a
    selection linked across both; the Map page draws them from the bundle's cached maps."""
    from dashboard import viewonly
    from tests.browser_util import wait_for_app_idle

    if not viewonly.DEMO_BUNDLE.is_file():
        pytest.skip("bundles/demo-shapes.parallax.zip not built (scripts/make_demo_bundle.py)")
    blocked = viewonly.no_models_env(tmp_path / "block", view_only_flag=True)
    env = {k: blocked[k] for k in ("PYTHONPATH", "PARALLAX_VIEW_ONLY")}
    env["PARALLAX_BUNDLE"] = str(viewonly.DEMO_BUNDLE)
    n = 2000
    with running_app(tmp_path, env=env) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        # Home: two models of the bundle side by side, drawn with no click, linked
        page.wait_for_function(drawn_js(2, n, "UMAP"), timeout=TIMEOUT_MS)
        wait_for_app_idle(page)  # the hover fragment's first run may redraw the page once
        page.wait_for_function(drawn_js(2, n, "UMAP"), timeout=TIMEOUT_MS)
        assert page.get_by_text("View-only").count() >= 1
        pos = _hover(page, 0, 5)
        _shown_row_near(page, 0, pos)
        tip = page.locator("#parallax-hover-preview")
        assert tip.locator(".parallax-thumb").count() == 1
        assert "data:image/webp;base64," in (
            tip.locator(".parallax-thumb").get_attribute("style") or ""
        )
        _lasso(page, 1, mode="Box", frac=0.2)  # a box in the second map selects in both
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})(); return m[0].selected > 1 && "
            "m[0].selected === m[1].selected; }",
            timeout=TIMEOUT_MS,
        )
        page.screenshot(path=str(shots / "view-only-home.png"))

        page.goto(f"{url}/map")
        page.wait_for_function(drawn_js(2, n, "UMAP"), timeout=TIMEOUT_MS)
        wait_for_app_idle(page)
        page.wait_for_function(drawn_js(2, n, "UMAP"), timeout=TIMEOUT_MS)
        pos = _hover(page, 1, 100)
        _shown_row_near(page, 1, pos)
        assert "proj=umap" in page.url and "ds=bundle" in page.url  # a shareable link
        page.screenshot(path=str(shots / "view-only-map.png"))

        page.goto(f"{url}/embed")
        page.get_by_text("view-only: this deployment has no models").first.wait_for(
            timeout=TIMEOUT_MS
        )
        assert not errors, errors
