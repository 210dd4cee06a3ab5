"""Benchmark 7: the Map page in a real browser at 100k, 1M, 2M and 10M points, the WebGL map
against the plotly map it replaced (the baseline, measured in the same run).

Renderers: ``webgl`` is the map as shipped (regl-scatterplot up to
``scatter.DENSITY_ABOVE`` = 1M points, the big-map renderer ``density.js`` above it, payloads in
parts above 500k points); ``regl`` forces regl-scatterplot at every size (the renderer before
the big-map one, to compare in the same run); ``plotly`` is the baseline (not run above 2M).

For each size and renderer, in headless Chromium (SwiftShader: WebGL on the CPU):

* bytes per point: everything the browser received after opening the page (websocket frames
  and media fetches, as sent: compressed where the server compressed) until the points were
  drawn, divided by N; and the map data alone (the WebGL map's binary payloads, 9 bytes a point
  before compression; the plotly figure's JSON);
* seconds from opening the page to the first picture (a map sent in parts: drawn from its first
  part, ``data-state="partial"``; else the same as drawn) and to every point drawn (server work
  included: opening the dataset, the PCA map, map quality), on a cold cache and again on a
  warm one (a second server on the same cache: the PCA map is then read, not computed; a fresh
  browser);
* hover latency: from the pointer's last move onto a point to the preview card showing the item,
  for the first hover of a sprite-sheet chunk (``cold``: one server round trip) and a second
  item of the same chunk (``warm``); and to the map ringing the hovered item (``ring``: the
  map's own hover, no server);
* lasso latency: from releasing the mouse to the selection highlighted in the map, and to the
  page's selection list (a rerun);
* memory of the tab: proportional set size (PSS) of the renderer and GPU processes, and the JS
  heap; the Streamlit server's peak RSS (``VmHWM``).

At 10M the synthetic vectors are written in chunks, and the server runs with
``PARALLAX_MAX_ITEMS`` raised to the size.

The plotly baseline draws the same dataset's PCA map through ``benchmarks/plotly_map.py``
(``Scattergl``; above 200k points a 100k sample over a density layer, as the Map page did).

    nice python benchmarks/bench_map_browser.py [--quick] [--json] [--sizes 100000,1000000]
        [--renderers webgl,regl,plotly]
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO, Reporter, parser

from tests.browser_util import chromium_available, chromium_page, running_app, wait_for_app_idle
from tests.test_browser import WRAPPER, _write_vectors, synthetic_manifest

TIMEOUT_MS = 900_000

BASELINE = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np
import streamlit as st
from benchmarks import plotly_map
from dashboard import hover, maps
from engine.store.cache import Cache
from engine.settings import cache_dir
from engine.data import open_dataset
from engine.maps.project import project

st.set_page_config(layout="wide")
spec = {spec!r}
cache = Cache(cache_dir())


@st.cache_resource
def _load():
    ds = open_dataset(spec, cache_root=cache.root)
    entry = next(e for e in cache.entries("vectors")
                 if e.manifest.get("dataset_fingerprint") == ds.fingerprint())
    coords = np.load(project(entry, "pca", cache=cache).path, allow_pickle=False)
    return ds, coords


ds, coords = _load()
n = len(ds)
plan = plotly_map.display_plan(n)
rows = st.session_state.get("rows")


def _selected():
    event = st.session_state.get("plotly_map")
    sel = event.get("selection") if hasattr(event, "get") else None
    st.session_state["rows"] = plotly_map.selection_rows(
        sel, n, coords=coords if plan.aggregated else None)


fig = plotly_map.build_map_figure(
    coords, maps.categorical(ds.labels, "label"), title="plotly · PCA",
    highlight=rows if rows is not None and len(rows) else None, plan=plan, height=560,
    point_size=3.0, dataset_key=ds.fingerprint())
st.plotly_chart(fig, key="plotly_map", on_select=_selected,
                selection_mode=("points", "box", "lasso"), config={{"scrollZoom": True}})
hover.hover_preview(spec)
if rows is not None and len(rows):
    st.markdown(f"**{{len(rows):,}} item(s) selected**")
"""

# The plotly baseline's maps: points drawn (highlight overlay excluded) and selected.
MAP_INFO_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(gd => gd.layout && gd.layout.meta && gd.layout.meta.parallax_map)
  .map(gd => ({
    points: gd._fullData
      .filter(t => t.type === 'scattergl' && !(t.name || '').startsWith('selected ('))
      .reduce((a, t) => a + (t._length || 0), 0),
    selected: gd._fullData.filter(t => (t.name || '').startsWith('selected ('))
      .reduce((a, t) => a + (t._length || 0), 0),
    canvas: gd.querySelectorAll('canvas').length,
  }))"""

# Screen position of point ``i`` of the first non-empty scatter trace of plotly map ``m``.
POINT_JS = """([m, i]) => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(g => g.layout && g.layout.meta && g.layout.meta.parallax_map)[m];
  const fl = gd._fullLayout, r = gd.getBoundingClientRect();
  const t = gd._fullData.find(t => t.type === 'scattergl' && t._length > i);
  return {x: r.left + fl._size.l + fl.xaxis.l2p(t.x[i]),
          y: r.top + fl._size.t + fl.yaxis.l2p(t.y[i]), row: t.customdata[i]};
}"""

# A WebGL map is drawn when it says so, with every point, framed for its canvas's current size
# (a late layout change refits the view: positions read before it would be stale).
WEBGL_FIRST_JS = """() => Array.from(document.querySelectorAll('.parallax-scatter'))
  .some(e => e.dataset.state === 'partial' || e.dataset.state === 'drawn')"""
WEBGL_DRAWN_JS = """(n) => Array.from(document.querySelectorAll('.parallax-scatter')).some(e => {
  const w = e.querySelector('.ps-canvas');
  return e.dataset.state === 'drawn' && e.dataset.points === String(n)
    && e.dataset.canvas === `${w.clientWidth} ${w.clientHeight}`; })"""
PLOTLY_DRAWN_JS = f"(n) => ({MAP_INFO_JS})().some(m => m.points === n && m.canvas > 0)"

WEBGL_POINT_JS = """([m, i]) => {
  const inst = Array.from(window.__parallaxMaps.maps.values())
    .filter(x => x.ui.root.isConnected)[m];
  const [x, y] = inst.sp.getScreenPosition(i);
  const r = inst.ui.canvas.getBoundingClientRect();
  return {x: r.left + x, y: r.top + y, row: i};
}"""

# Timestamps in the page: the last pointer move, the preview card turning ready, mouse up,
# the selection highlighted, the selection list shown.
PROBE_JS = """(webgl) => {
  const T = window.__bench = {move: 0, ready: 0, ring: 0, up: 0, highlighted: 0, listed: 0};
  document.addEventListener('mousemove', () => { T.move = performance.now(); }, true);
  document.addEventListener('mouseup', () => { T.up = performance.now(); }, true);
  const tick = () => {
    const now = performance.now();
    const tip = document.getElementById('parallax-hover-preview');
    const shown = tip && tip.style.display === 'block' && tip.dataset.ready === '1';
    if (shown && !T.ready) T.ready = now;
    const ringed = webgl && Array.from(document.querySelectorAll('.parallax-scatter'))
      .some(e => e.dataset.hovered !== '');
    if (ringed && !T.ring) T.ring = now;
    if (T.up && !T.highlighted) {
      const sel = webgl
        ? Array.from(document.querySelectorAll('.parallax-scatter'))
            .some(e => Number(e.dataset.selected) > 1)
        : (MAP_INFO)().some(m => m.selected > 1);
      if (sel) T.highlighted = now;
    }
    if (T.up && !T.listed && /item\\(s\\) selected/.test(document.body.innerText)) T.listed = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}""".replace("MAP_INFO", MAP_INFO_JS)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def tab_memory_mb() -> float:
    """PSS of this process's Chromium renderer and GPU processes (the tab and its WebGL)."""
    total_kb = 0
    for pid in _descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"--type=renderer" not in cmd and b"--type=gpu-process" not in cmd:
                continue
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
        total_kb += int(m.group(1)) if m else 0
    return round(total_kb / 1024, 1)


# Bytes of the map payloads as sent (compressed where the server compressed), from the page's
# own Resource Timing entries: every fetch is there, parts included (a "?part=" query).
MEDIA_BYTES_JS = """() => performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/media/') && e.name.includes('.bin'))
  .reduce((a, e) => a + e.encodedBodySize, 0)"""


# The big-map renderer's frame (the whole map in view, as a pan or zoom redraws it): median ms of
# 5 frames drawn synchronously; null for regl-scatterplot (its hover ring waits for one frame).
FRAME_MS_JS = """() => {
  const inst = Array.from(window.__parallaxMaps.maps.values()).find(x => x.ui.root.isConnected);
  if (!inst || !inst.big) return null;
  const t = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    inst.sp.frame();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[2];
}"""

# When the map payloads were requested and received (s after the page's navigation began): what
# precedes the first request is the server's work (dataset, map, payloads), what follows the
# browser's (fetch, index, draw).
MEDIA_TIMES_JS = """() => { const m = performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/media/') && e.name.includes('.bin'));
  if (!m.length) return null;
  return [Math.min(...m.map(e => e.startTime)) / 1000,
    Math.max(...m.map(e => e.responseEnd)) / 1000];
}"""


class Traffic:
    """Bytes the page received: websocket frames and map payloads (``read`` them when drawn)."""

    def __init__(self, page: Any) -> None:
        self.ws = 0
        self.media = 0
        page.add_init_script("performance.setResourceTimingBufferSize(100000)")
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload: Any) -> None:
        self.ws += len(payload)

    def read(self, page: Any) -> None:
        self.media = int(page.evaluate(MEDIA_BYTES_JS))

    @property
    def total(self) -> int:
        return self.ws + self.media


def _lasso(page: Any, box: dict[str, float]) -> None:
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    dx, dy = box["width"] * 0.12, box["height"] * 0.12
    path = [(cx - dx, cy - dy), (cx + dx, cy - dy), (cx + dx, cy + dy), (cx - dx, cy + dy)]
    page.mouse.move(*path[0])
    page.mouse.down()
    for p in [*path[1:], (path[0][0], path[0][1] + 2)]:
        page.mouse.move(*p, steps=3)
    page.mouse.up()


def _hover_latency(
    page: Any, pos: dict[str, float], away: dict[str, float]
) -> tuple[float | None, float | None]:
    """ms from the last pointer move onto ``pos`` to the preview card showing an item, and to
    the map ringing it (None: not seen)."""
    page.mouse.move(away["x"], away["y"])
    time.sleep(0.3)
    page.evaluate("() => { window.__bench.ready = 0; window.__bench.ring = 0; }")
    page.mouse.move(pos["x"], pos["y"])
    try:
        page.wait_for_function("() => window.__bench.ready > 0", timeout=60_000)
    except Exception:  # no card: reported as missing, not raised
        return None, None
    t = page.evaluate("() => window.__bench")
    ring = round(t["ring"] - t["move"], 1) if t["ring"] else None
    return round(t["ready"] - t["move"], 1), ring


def _write_vectors_chunked(cache_root: Path, spec: str, n: int, dim: int = 16) -> None:
    """``_write_vectors`` for sizes that must not be held twice in memory: the same clustered
    distribution, written 1M rows at a time into the cache entry's file."""
    from engine.data import open_dataset
    from engine.store.cache import Cache, make_key

    cache = Cache(cache_root)
    ds = open_dataset(spec, cache_root=cache.root)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, dim)).astype(np.float32)
    key = make_key(kind="vectors", dataset=ds.fingerprint(), model="synthetic", n=n)
    directory = cache.entry_dir("vectors", key)
    directory.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(
        directory / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim)
    )
    for start in range(0, n, 1_000_000):
        m = min(n, start + 1_000_000) - start
        x = centres[rng.integers(0, 12, m)]
        x += 0.3 * rng.standard_normal(size=(m, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    out.flush()
    del out
    cache.put_manifest_only("vectors", key, synthetic_manifest(spec, ds, n, dim))


def server_peak_rss_mb() -> float | None:
    """Peak RSS (VmHWM) of the Streamlit server this process started."""
    for pid in _descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"streamlit" not in cmd or b"run" not in cmd:
                continue
            m = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        except OSError:
            continue
        if m:
            return round(int(m.group(1)) / 1024, 1)
    return None


def measure(renderer: str, n: int, tmp: Path, shots: Path | None = None) -> dict[str, Any]:
    spec = f"demo:shapes?n={n}&seed=0"
    from engine import settings

    # demo:shapes refuses more than PARALLAX_MAX_ITEMS items (2M by default): above it the
    # benchmark raises the setting here and in the server's environment
    settings.MAX_ITEMS = max(settings.MAX_ITEMS, n)
    # sizes measured before keep their exact vectors; above 2M they are written in chunks
    (_write_vectors if n <= 2_000_000 else _write_vectors_chunked)(tmp, spec, n)
    script = tmp / f"{renderer}.py"
    webgl = renderer in ("webgl", "regl")
    env = {"PARALLAX_MAX_ITEMS": str(max(n, 2_000_000))}
    if renderer == "regl":
        env["PARALLAX_MAP_DENSITY_ABOVE"] = str(10**12)
    if webgl:
        script.write_text(
            WRAPPER.format(repo=str(REPO), spec=spec, page=str(REPO / "pages" / "map.py"))
        )
    else:
        script.write_text(BASELINE.format(repo=str(REPO), spec=spec))
    from benchmarks import plotly_map

    drawn_expected = n if webgl else plotly_map.display_plan(n).drawn
    row: dict[str, Any] = {"renderer": renderer, "n": n, "points_drawn": drawn_expected}
    with running_app(tmp, script, env=env, timeout_s=600) as url, chromium_page() as page:
        traffic = Traffic(page)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        t0 = time.perf_counter()
        page.goto(url)
        if webgl:
            page.wait_for_function(WEBGL_FIRST_JS, timeout=TIMEOUT_MS)
            row["page_to_first_picture_s"] = round(time.perf_counter() - t0, 2)
        page.wait_for_function(
            WEBGL_DRAWN_JS if webgl else PLOTLY_DRAWN_JS, arg=drawn_expected, timeout=TIMEOUT_MS
        )
        row["page_to_drawn_s"] = round(time.perf_counter() - t0, 2)
        traffic.read(page)
        if webgl:
            times = page.evaluate(MEDIA_TIMES_JS)
            if times:
                row["payload_requested_s"], row["payload_received_s"] = (round(t, 2) for t in times)
        row["bytes_per_point"] = round(traffic.total / n, 2)
        if shots is not None:
            page.screenshot(path=str(shots / f"{renderer}-{n}-drawn.png"))
        row["map_data_bytes_per_point"] = round((traffic.media if webgl else traffic.ws) / n, 2)
        wait_for_app_idle(page, TIMEOUT_MS)
        page.evaluate(PROBE_JS, webgl)
        point = WEBGL_POINT_JS if webgl else POINT_JS
        first, second = page.evaluate(point, [0, 3]), page.evaluate(point, [0, 40])
        canvas = page.evaluate(
            "(w) => document.querySelector(w ? '.parallax-scatter canvas' : "
            "'.js-plotly-plot .nsewdrag').getBoundingClientRect().toJSON()",
            webgl,
        )
        away = {"x": canvas["x"] + 5, "y": canvas["y"] + 5}
        row["hover_cold_ms"], row["hover_ring_cold_ms"] = _hover_latency(page, first, away)
        row["hover_warm_ms"], row["hover_ring_ms"] = _hover_latency(page, second, away)
        if webgl:
            page.locator(".parallax-scatter .ps-btn", has_text="Lasso").first.click()
        page.evaluate("() => { Object.assign(window.__bench, {up: 0, highlighted: 0}); }")
        _lasso(page, canvas)
        try:
            page.wait_for_function(
                "() => window.__bench.highlighted > 0 && window.__bench.listed > 0",
                timeout=TIMEOUT_MS,
            )
            t = page.evaluate("() => window.__bench")
            row["lasso_highlight_ms"] = round(t["highlighted"] - t["up"], 1)
            row["lasso_listed_ms"] = round(t["listed"] - t["up"], 1)
        except Exception:  # the selection never showed: reported as missing
            row["lasso_highlight_ms"] = row["lasso_listed_ms"] = None
        if shots is not None:
            page.screenshot(path=str(shots / f"{renderer}-{n}-lasso.png"))
        if webgl:
            frame = page.evaluate(FRAME_MS_JS)
            row["frame_ms"] = None if frame is None else round(frame, 1)
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        row["js_heap_mb"] = round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1)
        row["tab_pss_mb"] = tab_memory_mb()
        row["server_peak_rss_mb"] = server_peak_rss_mb()
        if webgl:
            row["renderer_used"] = page.evaluate(
                "() => document.querySelector('.parallax-scatter').dataset.renderer"
            )
    # The same page opened again on the same cache (its PCA map now read), in a fresh
    # browser: what a second visitor waits for.
    with running_app(tmp, script, env=env, timeout_s=600) as url, chromium_page() as page:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(
            WEBGL_DRAWN_JS if webgl else PLOTLY_DRAWN_JS,
            arg=drawn_expected,
            timeout=TIMEOUT_MS,
        )
        row["page_to_drawn_warm_s"] = round(time.perf_counter() - t0, 2)
    return row


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", default="", help="comma-separated sizes (default 100k,1M,2M)")
    p.add_argument("--renderers", default="webgl,plotly", help="webgl, regl, plotly")
    p.add_argument("--shots", default="", help="a folder for screenshots (drawn, lassoed)")
    args = p.parse_args()
    rep = Reporter("map_page_browser", args)
    if not chromium_available():
        raise SystemExit("needs /usr/bin/chromium and playwright (apt-get install -y chromium)")
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [2_000] if args.quick else [100_000, 1_000_000, 2_000_000]
    rows = []
    for n in sizes:
        for renderer in args.renderers.split(","):
            if renderer == "plotly" and n > 2_000_000:
                continue  # the baseline stays at the sizes it was measured at
            with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
                row = measure(renderer, n, Path(tmp), Path(args.shots) if args.shots else None)
            rep.log(row)
            rows.append(row)
    rep.done({"rows": rows})


if __name__ == "__main__":
    main()
