"""The big-map path in headless Chromium, forced on a small map: 60k points sent in 3 parts of
20k, drawn by the big-map renderer (``density.js``) above 10k points, as a density image while
more than 5k points are in view.

* the first picture is drawn from part 0 while the other parts are held back
  (``data-state="partial"``), then every point once they arrive (``data-state="drawn"``);
* hover names the row nearest the cursor (checked against NumPy on the known positions);
* a box and a lasso select exactly the rows inside (NumPy, same camera), and the page's
  selection (decoded in Python) is the same rows;
* a class hidden in the legend is neither drawn nor hovered;
* a recolour fetches the colour parts only (1 byte a point), not the positions;
* zoomed in, the renderer draws the points themselves (``data-mode="points"``).

Every wait is on a state the element announces; screenshots go to a temporary folder.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser_util import REPO, chromium_available, chromium_page, running_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

N, PER_PART, DENSITY_ABOVE, DETAIL_LIMIT = 60_000, 20_000, 10_000, 5_000
TIMEOUT_MS = 120_000

SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np
import streamlit as st
from dashboard.components.scatter import (
    Colours, Payload, palette_with_missing, positions_payload, scatter_map)
from engine.maps import payload as mapdata

st.set_page_config(layout="wide")
xy = np.load({xy!r})
codes = np.load({codes!r})
n = len(xy)
by = st.radio("colour by", ["class", "parity"], horizontal=True)
if by == "parity":
    codes = codes % 2
data = mapdata.category_codes(codes)
palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"][: int(codes.max()) + 1]
legend = tuple({{"code": i, "label": f"class {{i}}", "colour": c, "count": int((codes == i).sum())}}
               for i, c in enumerate(palette))
colours = Colours(Payload(mapdata.content_key("cat", data), data),
                  palette_with_missing(palette, "#cccccc"), "class", legend=legend)


def _selected(rows, nonce):
    st.session_state["rows"] = rows


st.title("Big map")
scatter_map("big", n=n, positions=positions_payload(xy, mapdata.Frame(0.0, 0.0, 1.0), "bigmap"),
            colours=colours, title="big map", on_select=_selected, point_size=2.0,
            part_points={per_part}, density_above={density_above}, detail_limit={detail_limit})
rows = st.session_state.get("rows")
if rows is not None:
    st.markdown(f"**{{len(rows):,}} item(s) selected**, row sum {{int(rows.sum())}}")
"""

STATE_JS = """() => { const e = document.querySelector('.parallax-scatter');
  if (!e) return null;
  const inst = window.__parallaxMaps.maps.get(e.dataset.mapId);
  const r = inst.ui.canvas.getBoundingClientRect();
  return {state: e.dataset.state, arrived: e.dataset.arrived, parts: e.dataset.parts,
    renderer: e.dataset.renderer, mode: e.dataset.mode, points: Number(e.dataset.points),
    selected: Number(e.dataset.selected), hovered: e.dataset.hovered,
    indexed: inst.sp ? inst.sp.m : 0, frames: inst.sp ? inst.sp.frames : 0,
    view: inst.sp ? Array.from(inst.sp.get('cameraView')) : null,
    width: inst.sp ? inst.sp.width : 0, height: inst.sp ? inst.sp.height : 0,
    left: r.left, top: r.top,
    rows: Array.from((window.__parallaxMaps.groups.get('map') || {}).rows || [])}; }"""


def _state(page: Any) -> dict[str, Any]:
    return page.evaluate(STATE_JS)


def _to_data(state: dict[str, Any], px: float, py: float) -> tuple[float, float]:
    """Canvas pixel -> map coordinates, the renderer's own arithmetic (``toData``)."""
    cx, cy, d = state["view"]
    k = (2 * d) / state["height"]
    return cx + (px - state["width"] / 2) * k, cy - (py - state["height"] / 2) * k


def _to_page(state: dict[str, Any], x: float, y: float) -> tuple[float, float]:
    cx, cy, d = state["view"]
    k = (2 * d) / state["height"]
    return (
        state["left"] + state["width"] / 2 + (x - cx) / k,
        state["top"] + state["height"] / 2 - (y - cy) / k,
    )


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd ray casting (the renderer's test), for every point at once."""
    x, y = pts[:, 0], pts[:, 1]
    inside = np.zeros(len(pts), bool)
    j = len(poly) - 1
    for i in range(len(poly)):
        (xi, yi), (xj, yj) = poly[i], poly[j]
        if yi != yj:
            cross = ((yi > y) != (yj > y)) & (x < (xj - xi) * (y - yi) / (yj - yi) + xi)
            inside ^= cross
        j = i
    return inside


def _ink(page: Any, path: Path, state: dict[str, Any]) -> int:
    """Screenshot the page; the number of non-white pixels on the map's canvas."""
    from PIL import Image

    png = page.screenshot(path=str(path))
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0 = int(state["left"]) + 2, int(state["top"]) + 2
    box = img[y0 : y0 + int(state["height"]) - 4, x0 : x0 + int(state["width"]) - 4]
    return int((box.sum(axis=2) < 740).sum())


def _select(page: Any, mode: str, path: list[tuple[int, int]]) -> None:
    page.locator(".parallax-scatter .ps-btn", has_text=mode).click()
    page.mouse.move(*path[0])
    page.mouse.down()
    for p in path[1:]:
        page.mouse.move(*p)  # one move each: the renderer sees exactly these vertices
    page.mouse.up()


def _expect_selection(page: Any, want: np.ndarray) -> None:
    """The map highlights exactly ``want`` and the page (Python) lists the same rows."""
    assert len(want) > 1000
    page.wait_for_function(
        "(k) => Number(document.querySelector('.parallax-scatter').dataset.selected) === k",
        arg=len(want),
        timeout=TIMEOUT_MS,
    )
    got = np.array(sorted(_state(page)["rows"]))
    assert np.array_equal(got, want), (len(got), len(want), np.setxor1d(got, want)[:10])
    page.wait_for_function(
        "(k) => document.body.innerText.includes(k)",
        arg=f"{len(want):,} item(s) selected, row sum {int(want.sum())}",
        timeout=TIMEOUT_MS,
    )


def test_big_map_in_parts_hover_select_and_zoom(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    centres = rng.uniform(-0.6, 0.6, size=(5, 2))
    codes = rng.integers(0, 5, N)
    xy = (centres[codes] + 0.12 * rng.normal(size=(N, 2))).clip(-0.95, 0.95).astype(np.float32)
    np.save(tmp_path / "xy.npy", xy)
    np.save(tmp_path / "codes.npy", codes)
    script = tmp_path / "bigmap.py"
    script.write_text(
        SCRIPT.format(
            repo=str(REPO),
            xy=str(tmp_path / "xy.npy"),
            codes=str(tmp_path / "codes.npy"),
            per_part=PER_PART,
            density_above=DENSITY_ABOVE,
            detail_limit=DETAIL_LIMIT,
        )
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    with running_app(tmp_path, script) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        held: list[Any] = []
        holding = [True]  # only the first load's later parts are held back
        fetched: list[int] = []

        def hold_later_parts(route: Any) -> None:
            part = int(re.search(r"[?&]part=(\d+)", route.request.url).group(1))
            fetched.append(part)
            if part == 0 or not holding:
                route.continue_()
            else:
                held.append(route)

        page.route(re.compile(r"/media/.*[?&]part=\d+"), hold_later_parts)
        page.goto(url)
        # the first picture: part 0 (an even third of the rows) drawn, the rest not arrived
        page.wait_for_function(
            "() => { const e = document.querySelector('.parallax-scatter');"
            " return e && e.dataset.state === 'partial' && e.dataset.arrived === '1'; }",
            timeout=TIMEOUT_MS,
        )
        st = _state(page)
        assert st["renderer"] == "density" and st["parts"] == "3" and st["indexed"] == PER_PART
        page.wait_for_function(
            "() => document.querySelector('.parallax-scatter').dataset.mode === 'density'",
            timeout=TIMEOUT_MS,
        )
        first_ink = _ink(page, shots / "1-partial.png", st)
        assert first_ink > 2000, first_ink
        assert held and sorted(set(fetched)) == [0, 1, 2], fetched
        holding.clear()
        for route in held:
            route.continue_()
        page.wait_for_function(
            f"() => {{ const e = document.querySelector('.parallax-scatter');"
            f" return e.dataset.state === 'drawn' && e.dataset.points === '{N}'; }}",
            timeout=TIMEOUT_MS,
        )
        st = _state(page)
        assert st["indexed"] == N and st["arrived"] == "3" and st["mode"] == "density"
        drawn_ink = _ink(page, shots / "2-drawn.png", st)
        assert drawn_ink > first_ink, (first_ink, drawn_ink)

        # hover: the row nearest the cursor (within a few pixels) is announced
        for row in (7, 31_337):
            px, py = (round(v) for v in _to_page(st, *xy[row]))
            page.mouse.move(px - 30, py - 30)
            page.mouse.move(px, py)
            dx, dy = _to_data(st, px - st["left"], py - st["top"])
            want = int(np.argmin((xy[:, 0] - dx) ** 2 + (xy[:, 1] - dy) ** 2))
            page.wait_for_function(
                "(r) => document.querySelector('.parallax-scatter').dataset.hovered === r",
                arg=str(want),
                timeout=TIMEOUT_MS,
            )

        # a box: exactly the rows inside it, in the map and in the page's selection
        x0, y0 = round(st["left"] + st["width"] * 0.4), round(st["top"] + st["height"] * 0.3)
        x1, y1 = round(st["left"] + st["width"] * 0.6), round(st["top"] + st["height"] * 0.7)
        _select(page, "Box", [(x0, y0), ((x0 + x1) // 2, (y0 + y1) // 2), (x1, y1)])
        a, b = _to_data(st, x0 - st["left"], y0 - st["top"])
        c, d = _to_data(st, x1 - st["left"], y1 - st["top"])
        box = (xy[:, 0] >= a) & (xy[:, 0] <= c) & (xy[:, 1] >= d) & (xy[:, 1] <= b)
        _expect_selection(page, np.flatnonzero(box))
        page.screenshot(path=str(shots / "3-box.png"))

        # a lasso (a triangle): exactly the rows inside it
        w, h, left, top = st["width"], st["height"], st["left"], st["top"]
        tri = [
            (round(left + w * fx), round(top + h * fy))
            for fx, fy in [(0.3, 0.2), (0.7, 0.35), (0.45, 0.85)]
        ]
        _select(page, "Lasso", [*tri, tri[0]])
        poly = np.array([_to_data(st, x - left, y - top) for x, y in [*tri, tri[0]]])
        _expect_selection(page, np.flatnonzero(_inside(poly, xy.astype(np.float64))))
        page.screenshot(path=str(shots / "4-lasso.png"))

        # a hidden class: the hover skips its points (the nearest among the others is named)
        page.locator(".parallax-scatter .ps-chip", has_text="class 3").click()
        row = int(np.flatnonzero(codes == 3)[0])
        px, py = (round(v) for v in _to_page(st, *xy[row]))
        page.mouse.move(px - 30, py - 30)
        page.mouse.move(px, py)
        dx, dy = _to_data(st, px - st["left"], py - st["top"])
        dist = np.where(codes == 3, np.inf, (xy[:, 0] - dx) ** 2 + (xy[:, 1] - dy) ** 2)
        assert dist.min() < (5 * 2 * st["view"][2] / st["height"]) ** 2  # another within 5 px
        page.wait_for_function(
            "(r) => document.querySelector('.parallax-scatter').dataset.hovered === r",
            arg=str(int(np.argmin(dist))),
            timeout=TIMEOUT_MS,
        )
        page.screenshot(path=str(shots / "5-hidden-class.png"))
        page.locator(".parallax-scatter .ps-chip", has_text="class 3").click()

        # a recolour: only the colour parts travel (20k bytes each), the positions stay
        before = page.evaluate("() => performance.getEntriesByType('resource').length")
        page.get_by_text("parity").click()
        page.wait_for_function(
            "() => { const e = document.querySelector('.parallax-scatter');"
            " return e.dataset.state === 'drawn' && e.querySelectorAll('.ps-chip').length === 2; }",
            timeout=TIMEOUT_MS,
        )
        sizes = page.evaluate(
            "(k) => performance.getEntriesByType('resource').slice(k)"
            ".filter(e => e.name.includes('part=')).map(e => e.decodedBodySize)",
            before,
        )
        assert sorted(sizes) == [PER_PART] * 3, sizes
        page.screenshot(path=str(shots / "6-recoloured.png"))

        # zoomed in (wheel about the centre): few enough points in view to draw them as points
        page.locator(".parallax-scatter .ps-btn", has_text="Pan").click()
        page.mouse.move(left + w / 2, top + h / 2)
        for _ in range(6):
            frames = _state(page)["frames"]
            page.mouse.wheel(0, -400)
            page.wait_for_function(
                "(f) => window.__parallaxMaps.maps.get('big').sp.frames > f",
                arg=frames,
                timeout=TIMEOUT_MS,
            )
            if _state(page)["mode"] == "points":
                break
        st = _state(page)
        assert st["mode"] == "points", st["view"]
        assert _ink(page, shots / "7-zoomed.png", st) > 500
        assert not errors, errors
