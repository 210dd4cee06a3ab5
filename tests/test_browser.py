"""The real app in headless Chromium: the WebGL maps draw every point (``data-points``), frame
all of them as maps come and go (``data-extent``), hovering shows the item and rings it in every
map (``data-hovered``), clicking or lassoing selects it in every map (``data-selected``), and the
selection downloads as CSV.

Every wait is on a state the page announces (a map's ``data-state="drawn"``, its positions key,
its counts, the preview card's ``data-ready``): nothing is clicked twice or reloaded.

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

from tests.browser_util import (
    MAP_INFO_JS,
    MARGIN_PX,
    REPO,
    assert_framed,
    chromium_available,
    chromium_page,
    drawn_js,
    map_infos,
    running_app,
    wait_for_app_idle,
)
from tests.fakes import MeanColourModel

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

PIXELS = "baseline:pixels"
SECOND = MeanColourModel(dim=16).spec
TIMEOUT_MS = 120_000

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


def _choose_pca(page: Any, maps: int, n: int) -> None:
    """Switch the projection to PCA (UMAP is computed in a background job and is slow cold)."""
    page.locator("button[data-variant='segmented_control']", has_text="PCA").first.click()
    page.wait_for_function(drawn_js(maps, n, "PCA"), timeout=TIMEOUT_MS)


def _hover(page: Any, m: int, i: int) -> dict[str, Any]:
    """Move onto row ``i`` of map ``m`` (drawn: it takes no input before) and wait for the
    preview card to show an item."""
    wait_for_app_idle(page, TIMEOUT_MS)  # the page's layout is final: the view will not refit
    page.wait_for_function(
        f"(m) => {{ const x = ({MAP_INFO_JS})()[m]; return x.state === 'drawn' && "
        "x.canvas[0] === x.size[0] && x.canvas[1] === x.size[1]; }",
        arg=m,
        timeout=TIMEOUT_MS,
    )
    pos = page.evaluate(POINT_JS, [m, i])
    page.mouse.move(pos["x"] - 25, pos["y"] - 25)
    page.mouse.move(pos["x"], pos["y"], steps=4)
    page.wait_for_function(TIP_READY_JS, timeout=TIMEOUT_MS)
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
        page.wait_for_function(drawn_js(2, n), timeout=TIMEOUT_MS)
        _choose_pca(page, 2, n)
        maps = map_infos(page)
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
        page.wait_for_function(drawn_js(2, n, "PCA"), timeout=TIMEOUT_MS)
        pos = page.evaluate(POINT_JS, [1, 150])
        page.mouse.click(pos["x"], pos["y"])
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().every(m => m.selected === 1)", timeout=TIMEOUT_MS
        )
        assert _listed_count(page) == 1
        # one item: its detail, with its neighbours under both models and their overlap
        page.get_by_text("Shared neighbours").wait_for(timeout=TIMEOUT_MS)
        assert page.locator("h4", has_text="Item digits-").count() == 1
        for spec in (PIXELS, SECOND):
            assert page.locator("strong", has_text=spec).count() >= 1
        page.screenshot(path=str(shots / "item.png"), full_page=True)

        # lasso on the first map: the same rows highlighted in both maps, listed below (a small
        # lasso: a selection short enough to travel in the link)
        _lasso(page, 0, frac=0.07)
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().every(m => m.selected > 1)", timeout=TIMEOUT_MS
        )
        count = _listed_count(page, at_least=2)
        maps = map_infos(page)
        assert [m["selected"] for m in maps] == [count, count], (maps, count)
        assert all(m["points"] == n for m in maps)
        gallery = page.locator("[data-testid='stImage'] img")
        gallery.first.wait_for(timeout=TIMEOUT_MS)
        assert gallery.count() == min(count, 60)
        assert "sel=" in page.url, count  # the selection is in the shareable link

        # CSV download of the selection: a header and one line per selected item
        with page.expect_download(timeout=TIMEOUT_MS) as info:
            page.get_by_text("Download CSV").click()
        lines = Path(info.value.path()).read_text().strip().splitlines()
        assert lines[0].startswith("row,id,label")
        assert len(lines) == count + 1
        page.screenshot(path=str(shots / "selection.png"), full_page=True)
        assert not errors, errors


THIRD = MeanColourModel(dim=4, version="2").spec


@pytest.fixture(scope="module")
def three_model_cache(tmp_path_factory) -> Path:
    """demo:digits embedded by three models, whose maps differ in spread and shape."""
    require_model_registry()
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    root = tmp_path_factory.mktemp("browser-cache-3")
    cache = Cache(root)
    ds = open_dataset("demo:digits", cache_root=cache.root)
    for model in (PIXELS, MeanColourModel(dim=16), MeanColourModel(dim=4, version="2")):
        embed_dataset(ds, model, cache=cache)
    return root


def _same_header_heights(maps: list[dict[str, Any]]) -> None:
    assert len({round(m["titleTop"]) for m in maps}) == 1, maps
    assert len({round(m["canvasTop"]) for m in maps}) == 1, maps


def _frame_shot(page: Any, m: int) -> np.ndarray:
    """A screenshot of map ``m``'s frame (canvas and overlays), RGB."""
    from io import BytesIO

    from PIL import Image

    frame = page.locator(".parallax-scatter").nth(m).locator(".ps-canvas")
    return np.asarray(Image.open(BytesIO(frame.screenshot())).convert("RGB"), dtype=np.int16)


def _changed_pixels(page: Any, m: int, before: np.ndarray) -> int:
    """Pixels of map ``m``'s frame that differ clearly from ``before``."""
    return int((np.abs(_frame_shot(page, m) - before).max(axis=2) > 48).sum())


def test_every_map_frames_its_points_as_maps_come_and_go(
    three_model_cache: Path, shots: Path
) -> None:
    """Two maps, then a third, alignment off, then back to two: every point of every map stays
    inside its frame with a margin, headers side by side sit at one height, unaligned maps each
    fill their frame; zooming in pushes points out and Reset view frames them again; hovering
    an item rings it, visibly, in the other maps."""
    n = 1797
    with running_app(three_model_cache) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/map?proj=pca")
        page.wait_for_function(drawn_js(2, n, "PCA"), timeout=TIMEOUT_MS)
        _same_header_heights(assert_framed(page, fill=False))
        page.screenshot(path=str(shots / "frames-two.png"))

        # a third map: the columns narrow and every map is framed again
        before = [m["key"] for m in map_infos(page)]
        page.locator("[data-testid='stMultiSelect']").first.click()
        page.get_by_role("option", name=THIRD).click()
        page.keyboard.press("Escape")
        page.wait_for_function(drawn_js(3, n, "PCA"), timeout=TIMEOUT_MS)
        maps = assert_framed(page, fill=False)
        assert THIRD in maps[2]["title"] and [m["key"] for m in maps[:2]] != before
        _same_header_heights(maps)
        page.screenshot(path=str(shots / "frames-three.png"))

        # alignment off: each map is framed on its own points, none crammed into a corner
        keys = tuple(m["key"] for m in maps)
        page.get_by_text("Align maps onto the first").click()
        page.wait_for_function(drawn_js(3, n, "PCA", not_keys=keys), timeout=TIMEOUT_MS)
        _same_header_heights(assert_framed(page, fill=True))
        page.screenshot(path=str(shots / "frames-three-unaligned.png"))

        # zoom into the first map: points leave the view; Reset view frames them all again
        box = page.evaluate(CANVAS_BOX_JS, 0)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -400)
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})()[0]; return m.extent[0] < 0 && "
            "m.extent[2] > m.canvas[0]; }",
            timeout=TIMEOUT_MS,
        )
        page.mouse.move(box["x"] - 40, box["y"] - 40)
        page.locator(".parallax-scatter").nth(0).locator(".ps-reset").click()
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})()[0]; return m.extent[0] >= {MARGIN_PX} && "
            f"m.extent[2] <= m.canvas[0] - {MARGIN_PX}; }}",
            timeout=TIMEOUT_MS,
        )
        assert_framed(page, fill=True)

        # hovering an item in the first map rings it in the others, clearly
        page.mouse.move(5, 5)
        still = [_frame_shot(page, m) for m in (1, 2)]
        _hover(page, 0, 100)
        page.wait_for_function(
            f"() => {{ const m = ({MAP_INFO_JS})(); return m[0].hovered !== '' && "
            "m.every(x => x.hovered === m[0].hovered); }",
            timeout=TIMEOUT_MS,
        )
        for m, before_shot in zip((1, 2), still, strict=True):
            assert page.locator(".parallax-scatter").nth(m).locator(".ps-ring").is_visible()
            changed = _changed_pixels(page, m, before_shot)
            assert changed >= 150, (m, changed)  # the library's own highlight: ~17 pixels
        page.screenshot(path=str(shots / "hover-linked.png"))

        # back to two maps: the columns widen, both are framed again
        page.mouse.move(5, 5)
        keys = tuple(m["key"] for m in map_infos(page))
        page.locator("[data-testid='stMultiSelect'] input").first.click()
        page.keyboard.press("Backspace")  # removes the last model chosen
        page.keyboard.press("Escape")
        page.wait_for_function(drawn_js(2, n, "PCA"), timeout=TIMEOUT_MS)
        _same_header_heights(assert_framed(page, fill=True))
        page.screenshot(path=str(shots / "frames-back-to-two.png"))
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
    cache.put("vectors", key, x.astype(np.float32), synthetic_manifest(spec, ds, n, dim))


def synthetic_manifest(spec: str, ds: object, n: int, dim: int) -> dict:
    """The cache manifest of synthetic vectors for ``spec`` (also the browser benchmark's)."""
    return {
        "dataset": spec,
        "dataset_fingerprint": ds.fingerprint(),
        "model": "synthetic:clusters",
        "modality": "image",
        "n": n,
        "dim": dim,
        "failed": [],
    }


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
        (info,) = map_infos(page)
        assert info["points"] == n and info["state"] == "drawn", info
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
