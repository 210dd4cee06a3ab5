"""Benchmark 7: the Map page in a real browser at 10k, 100k and 1M points.

For each size: the bytes of the map figure sent to the browser (and per point), and the time
from opening the page to the points being drawn in headless Chromium (server work included:
opening the dataset, a PCA map, map quality), and whether hovering a point shows its preview.
Above 200k points the page draws a seeded 100k sample over a density layer, and says so.

    python benchmarks/bench_map_browser.py [--quick] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import REPO, Reporter, parser

from dashboard import maps
from tests.browser_util import chromium_available, chromium_page, running_app
from tests.test_browser import MAP_INFO_JS, WRAPPER, _hover, _write_vectors


def measure(n: int, tmp: Path) -> dict:
    import numpy as np

    spec = f"demo:shapes?n={n}&seed=0"
    _write_vectors(tmp, spec, n)
    plan = maps.display_plan(n)
    xy = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    fig = maps.build_map_figure(xy, maps.categorical(np.arange(n) % 8, "label"))
    payload = maps.figure_payload_bytes(fig)
    script = tmp / "map_only.py"
    script.write_text(WRAPPER.format(repo=str(REPO), spec=spec, page=str(REPO / "pages/map.py")))
    with running_app(tmp, script, timeout_s=300) as url, chromium_page() as page:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_function(
            f"() => ({MAP_INFO_JS})().some(m => m.points === {plan.drawn} && m.canvas > 0)",
            timeout=600_000,
        )
        drawn_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            _hover(page, 0, 50)
            hover_ok, hover_s = True, time.perf_counter() - t0
        except Exception:  # a failed hover is reported as a figure, not raised
            hover_ok, hover_s = False, None
    return {
        "n": n,
        "drawn_points": plan.drawn,
        "aggregated": plan.drawn < n,
        "payload_bytes": payload,
        "bytes_per_drawn_point": round(payload / plan.drawn, 1),
        "page_to_points_drawn_s": round(drawn_s, 2),
        "hover_preview_shown": hover_ok,
        "first_hover_s": None if hover_s is None else round(hover_s, 2),
    }


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("map_page_browser", args)
    if not chromium_available():
        raise SystemExit("needs /usr/bin/chromium and playwright (apt-get install -y chromium)")
    sizes = [2_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            row = measure(n, Path(tmp))
        rep.log(row)
        rows.append(row)
    rep.done({"sizes": rows})


if __name__ == "__main__":
    main()
