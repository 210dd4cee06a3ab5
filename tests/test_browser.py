"""The real app in headless Chromium: the map draws every point, hovering shows the item,
a lasso selection fills the gallery and highlights the same items in the other map.

Run with ``pytest -m browser tests/test_browser.py``; skipped without /usr/bin/chromium.
Screenshots go to a temporary folder (printed, and kept by pytest's tmp_path retention).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser_util import REPO, chromium_available, chromium_page, running_app
from tests.fakes import MeanColourModel

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

PIXELS = "baseline:pixels"
SECOND = MeanColourModel(dim=16).spec
TIMEOUT_MS = 120_000

MAP_INFO_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(gd => gd.layout && gd.layout.meta && gd.layout.meta.parallax_map)
  .map(gd => ({
    title: String(gd.layout.title && gd.layout.title.text || ''),
    points: gd._fullData
      .filter(t => t.type === 'scattergl' && !(t.name || '').startsWith('selected ('))
      .reduce((a, t) => a + (t._length || 0), 0),
    selected: gd._fullData.filter(t => (t.name || '').startsWith('selected ('))
      .reduce((a, t) => a + (t._length || 0), 0),
    canvas: gd.querySelectorAll('canvas').length,
  }))"""

# Screen position of point ``i`` of the first non-empty scatter trace of map ``m``.
POINT_JS = """([m, i]) => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(g => g.layout && g.layout.meta && g.layout.meta.parallax_map)[m];
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  const t = gd._fullData.find(t => t.type === 'scattergl' && t._length > i);
  return {x: r.left + fl._size.l + fl.xaxis.l2p(t.x[i]),
          y: r.top + fl._size.t + fl.yaxis.l2p(t.y[i]), row: t.customdata[i]};
}"""

# Screen positions of every drawn row of map ``m`` (row -> [x, y]).
ROW_POSITIONS_JS = """(m) => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(g => g.layout && g.layout.meta && g.layout.meta.parallax_map)[m];
  const fl = gd._fullLayout, r = gd.getBoundingClientRect(), out = {};
  gd._fullData.filter(t => t.type === 'scattergl').forEach(t => {
    for (let i = 0; i < t._length; i++) out[t.customdata[i]] = [
      r.left + fl._size.l + fl.xaxis.l2p(t.x[i]), r.top + fl._size.t + fl.yaxis.l2p(t.y[i])];
  });
  return out;
}"""

PLOT_BOX_JS = """(m) => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(g => g.layout && g.layout.meta && g.layout.meta.parallax_map)[m];
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  return {l: r.left + fl._size.l, t: r.top + fl._size.t, w: fl._size.w, h: fl._size.h};
}"""

TIP_READY_JS = """() => { const el = document.getElementById('parallax-hover-preview');
  return !!el && el.style.display === 'block' && el.dataset.ready === '1'; }"""


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
    from engine.cache import Cache
    from engine.datasets import open_dataset
    from engine.embed import embed_dataset

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


def _choose_pca(page: Any) -> None:
    """Switch the projection to PCA (UMAP is computed in a background job and is slow cold)."""
    page.locator("button[data-variant='segmented_control']", has_text="PCA").first.click()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
        ".every(gd => String(gd.layout.title && gd.layout.title.text).includes('PCA'))",
        timeout=TIMEOUT_MS,
    )


def _hover(page: Any, m: int, i: int) -> dict[str, Any]:
    pos = page.evaluate(POINT_JS, [m, i])
    for attempt in range(3):  # like a user, move again if a redraw swallowed the first hover
        page.mouse.move(pos["x"] - 25, pos["y"] - 25)
        page.mouse.move(pos["x"], pos["y"], steps=5)
        try:
            page.wait_for_function(TIP_READY_JS, timeout=10_000)
            break
        except Exception:
            if attempt == 2:
                raise
    time.sleep(0.5)  # plotly throttles hover events: let the last one (the final spot) land
    page.wait_for_function(TIP_READY_JS, timeout=30_000)
    return pos


def _shown_row_near(page: Any, m: int, pos: dict[str, Any]) -> None:
    """The preview shows an item plotly counts as hovered: drawn within its 20 px hover
    distance of the cursor (points overlap, so it need not be the one aimed at)."""
    shown = int(
        page.evaluate("() => document.getElementById('parallax-hover-preview').dataset.row")
    )
    xy = page.evaluate(ROW_POSITIONS_JS, m)[str(shown)]
    assert np.hypot(xy[0] - pos["x"], xy[1] - pos["y"]) <= 20, (shown, pos, xy)


def test_home_then_map_hover_and_linked_selection(app_cache: Path, shots: Path) -> None:
    with running_app(app_cache) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(url)
        page.wait_for_selector("h1", timeout=TIMEOUT_MS)
        assert "Parallax" in page.locator("h1").first.inner_text()
        page.screenshot(path=str(shots / "home.png"))

        t0 = time.perf_counter()
        page.goto(f"{url}/map")
        page.wait_for_function(
            "() => document.querySelectorAll('.js-plotly-plot canvas').length >= 2",
            timeout=TIMEOUT_MS,
        )
        print(f"map page to first canvas: {time.perf_counter() - t0:.1f}s")
        _choose_pca(page)
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})(); return m.length === 2 && "
            "m.every(x => x.points === 1797 && x.title.includes('PCA')); }",
            timeout=TIMEOUT_MS,
        )
        maps = _maps(page)
        assert len(maps) == 2, maps
        assert all(m["points"] == 1797 and m["canvas"] > 0 for m in maps), maps
        assert sorted(m["title"].split(" · ")[0].split(">")[-1] for m in maps) == sorted(
            [PIXELS, SECOND]
        )
        page.screenshot(path=str(shots / "map.png"))

        # hover: a floating card with the item's thumbnail (fetched lazily as a sprite sheet)
        pos = _hover(page, 0, 0)
        _shown_row_near(page, 0, pos)
        tip = page.locator("#parallax-hover-preview")
        assert tip.locator(".parallax-thumb").count() == 1
        style = tip.locator(".parallax-thumb").get_attribute("style") or ""
        assert "data:image/webp;base64," in style
        assert "digits-" in tip.inner_text()
        page.screenshot(path=str(shots / "hover.png"))

        # a second point on the other map, likely in another chunk: still previewed
        pos = _hover(page, 1, 150)
        _shown_row_near(page, 1, pos)

        # lasso on the first map: gallery + the same rows highlighted in both maps
        box = page.evaluate(PLOT_BOX_JS, 0)
        cx, cy = box["l"] + box["w"] * 0.5, box["t"] + box["h"] * 0.5
        dx, dy = box["w"] * 0.15, box["h"] * 0.15
        path = [(cx - dx, cy - dy), (cx + dx, cy - dy), (cx + dx, cy + dy), (cx - dx, cy + dy)]
        page.mouse.move(*path[0])
        page.mouse.down()
        for p in [*path[1:], (path[0][0], path[0][1] + 1)]:
            page.mouse.move(*p, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "() => /item\\(s\\) selected/.test(document.body.innerText)", timeout=TIMEOUT_MS
        )
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().every(m => m.selected > 0)", timeout=TIMEOUT_MS
        )
        maps = _maps(page)
        text = page.locator("body").inner_text()
        count = int(text.split(" item(s) selected")[0].split()[-1].replace(",", ""))
        assert count > 0
        assert [m["selected"] for m in maps] == [count, count], (maps, count)
        assert all(m["points"] == 1797 for m in maps)
        gallery = page.locator("[data-testid='stImage'] img")
        gallery.first.wait_for(timeout=TIMEOUT_MS)
        assert gallery.count() == min(count, 60)
        assert page.get_by_text("Download CSV").count() == 1
        page.screenshot(path=str(shots / "selection.png"), full_page=True)
        assert not errors, errors


def _write_vectors(cache_root: Path, spec: str, n: int, dim: int = 16) -> None:
    """Synthetic clustered vectors for ``spec`` straight into the cache (no model needed)."""
    from engine.cache import Cache, make_key
    from engine.datasets import open_dataset

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
@pytest.mark.parametrize("n", [100_000, 250_000])
def test_large_map_render_time_and_hover(n: int, tmp_path: Path, shots: Path) -> None:
    """demo:shapes with n items: the map draws every point (a sample over a density layer above
    the aggregation threshold) and hover still previews items."""
    from dashboard import maps

    drawn = maps.display_plan(n).drawn
    spec = f"demo:shapes?n={n}&seed=0"
    _write_vectors(tmp_path, spec, n)
    script = tmp_path / "map_only.py"
    script.write_text(
        WRAPPER.format(repo=str(REPO), spec=spec, page=str(REPO / "pages" / "map.py"))
    )
    with running_app(tmp_path, script, timeout_s=120) as url, chromium_page() as page:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().some(m => m.points === {drawn} && m.canvas > 0)",
            timeout=TIMEOUT_MS,
        )
        seconds = time.perf_counter() - t0
        spec_bytes = page.evaluate(
            "() => JSON.stringify(document.querySelector('.js-plotly-plot').data).length"
        )
        pos = _hover(page, 0, 50)
        _shown_row_near(page, 0, pos)
        if drawn < n:
            assert page.get_by_text("too many to draw one by one").count() == 1
            heatmaps = page.evaluate(
                "() => document.querySelector('.js-plotly-plot')._fullData"
                ".filter(t => t.type === 'heatmap').length"
            )
            assert heatmaps == 1
        page.screenshot(path=str(shots / f"map-{n}.png"))
    # Timings are reported, never asserted: benchmarks/bench_map_browser.py measures them.
    print(
        json.dumps(
            {"n": n, "page_to_drawn_s": round(seconds, 2), "decoded_data_json_chars": spec_bytes}
        )
    )


def test_figure_payload_sizes() -> None:
    """What one map costs on the wire (measured, printed; bounded)."""
    from dashboard import maps

    out = {}
    for n in (10_000, 100_000, 1_000_000):
        xy = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
        colouring = maps.categorical(np.arange(n) % 10, "label")
        fig = maps.build_map_figure(xy, colouring)
        out[n] = maps.figure_payload_bytes(fig)
    print(json.dumps(out))
    assert out[10_000] < 250_000
    assert out[100_000] < 2_500_000
    assert out[1_000_000] < 3_000_000  # aggregated: a sample + a density grid


def test_view_only_app_on_the_committed_bundle(tmp_path: Path, shots: Path) -> None:
    """The deployed shape: no model library importable, PARALLAX_VIEW_ONLY=1, the committed
    demo bundle. Home shows its map with hover previews at once; the Map page draws both
    models side by side from the bundle's cached maps."""
    from dashboard import viewonly
    from tests.browser_util import wait_for_app_idle

    def _wait_drawn(page: Any, maps: int, n: int) -> None:
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})(); return m.length === {maps} && "
            f"m.every(x => x.points === {n} && x.canvas > 0); }}",
            timeout=TIMEOUT_MS,
        )

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
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().some(m => m.points === {n} && m.canvas > 0)",
            timeout=TIMEOUT_MS,
        )
        wait_for_app_idle(page)  # the hover fragment's first run may redraw the page once
        _wait_drawn(page, 1, n)
        (home,) = _maps(page)
        assert "UMAP" in home["title"], home
        assert page.get_by_text("View-only").count() >= 1
        pos = _hover(page, 0, 5)
        _shown_row_near(page, 0, pos)
        tip = page.locator("#parallax-hover-preview")
        assert tip.locator(".parallax-thumb").count() == 1
        assert "data:image/webp;base64," in (
            tip.locator(".parallax-thumb").get_attribute("style") or ""
        )
        page.screenshot(path=str(shots / "view-only-home.png"))

        page.goto(f"{url}/map")
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})(); return m.length === 2 && "
            f"m.every(x => x.points === {n} && x.canvas > 0); }}",
            timeout=TIMEOUT_MS,
        )
        wait_for_app_idle(page)
        _wait_drawn(page, 2, n)
        assert all("UMAP" in m["title"] for m in _maps(page))
        pos = _hover(page, 1, 100)  # point 100 of the first trace (one trace per shape)
        _shown_row_near(page, 1, pos)
        assert "proj=umap" in page.url and "ds=bundle" in page.url  # a shareable link
        page.screenshot(path=str(shots / "view-only-map.png"))

        page.goto(f"{url}/embed")
        page.get_by_text("view-only: this deployment has no models").first.wait_for(
            timeout=TIMEOUT_MS
        )
        assert not errors, errors
