"""Two visitors, two browsers, one server (issue 21): what one does changes nothing for the other.

The attacker opens the Data page first (so nobody has opened Home's demo bundle yet), uploads
a copy of that bundle which keeps all its claims (fingerprint, vectors and map keys) but
scrambles its maps (``tests.hostile_bundles.home_bundle_impostor``), types server paths and
follows a link to one. The victim then opens Home in another browser: the real demo maps (the
points on screen follow the bundle's own coordinates), no trace of the attacker, and the server
wrote nothing outside its cache. Run with ``pytest -m browser``; skipped without Chromium.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser_util import chromium_available, chromium_page, running_app, wait_for_app_idle
from tests.hostile_bundles import DEMO_BUNDLE, genuine_map, home_bundle_impostor

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]
TIMEOUT_MS = 180_000

# Screen positions of every row of WebGL map ``m`` (rows in dataset order), once it says it is
# drawn (``data-state``).
ROWS_JS = """(m) => {
  const root = document.querySelectorAll('.parallax-scatter')[m];
  if (!root || root.dataset.state !== 'drawn' || !window.__parallaxMaps) return null;
  const inst = window.__parallaxMaps.maps.get(root.dataset.mapId);
  if (!inst || !inst.n) return null;
  const out = [];
  for (let i = 0; i < inst.n; i++) out.push(inst.sp.getScreenPosition(i));
  return out;
}"""


def _open_any_spec(page: Any, spec: str) -> None:
    page.get_by_role("tab", name="Any spec").click()
    box = page.get_by_label("Dataset spec")
    box.fill(spec)
    box.press("Enter")
    page.get_by_role("button", name="Open spec").click()
    wait_for_app_idle(page)


def bundle_model_specs() -> list[str]:
    """The committed demo bundle's models, in its own order (its maps' ``model`` index)."""
    with zipfile.ZipFile(DEMO_BUNDLE) as zf:
        return [m["spec"] for m in json.loads(zf.read("manifest.json"))["models"]]


def _follows(screen: np.ndarray, coords: np.ndarray) -> float:
    """How well on-screen positions follow map coordinates: the smaller |correlation| of x
    with x and y with y (1 = the same picture, up to scale and a flipped axis)."""
    return min(abs(float(np.corrcoef(screen[:, k], coords[:, k])[0, 1])) for k in (0, 1))


@pytest.mark.skipif(not DEMO_BUNDLE.is_file(), reason="bundles/demo-shapes.parallax.zip not built")
def test_two_visitors_in_two_browsers(tmp_path: Path) -> None:
    impostor = home_bundle_impostor(tmp_path / "attack")
    server = tmp_path / "server"
    cache = server / "cache"
    cache.mkdir(parents=True)
    secret = server / "secret.csv"
    secret.write_text("text,password\nhello,hunter2\n")
    before = {p for p in tmp_path.rglob("*") if cache not in p.parents and p != cache}
    env = {"PARALLAX_VIEW_ONLY": "0", "PARALLAX_SERVER_PATHS": ""}
    with running_app(cache, env=env, log_path=tmp_path / "app.log") as url:
        with chromium_page() as attacker:
            attacker.goto(f"{url}/data")
            wait_for_app_idle(attacker)
            attacker.get_by_role("tab", name="Upload").click()
            attacker.locator("input[type=file]").set_input_files(str(impostor))
            attacker.get_by_text("Opened the upload as upload:").wait_for(timeout=TIMEOUT_MS)
            wait_for_app_idle(attacker)
            for spec in (f"manifest:{secret}", "folder:/etc", f"folder:{cache}"):
                _open_any_spec(attacker, spec)
                attacker.get_by_text("is refused").first.wait_for(timeout=TIMEOUT_MS)
            assert attacker.get_by_text("hunter2").count() == 0
            attacker.goto(f"{url}/data?ds=folder:{server}")  # a link to a server folder
            attacker.get_by_text("The link's dataset was not opened").wait_for(timeout=TIMEOUT_MS)
        with chromium_page() as victim:
            errors: list[str] = []
            victim.on("pageerror", lambda exc: errors.append(str(exc)))
            victim.goto(url)
            victim.wait_for_function(f"() => ({ROWS_JS})(0) !== null", timeout=TIMEOUT_MS)
            wait_for_app_idle(victim)
            screen = np.asarray(victim.evaluate(ROWS_JS, 0), dtype=np.float64)
            assert screen.shape == (2000, 2), screen.shape
            # The first map is the model its title names (Home puts the image-text models
            # first), as the bundle's own UMAP of that model drew it, not the impostor's noise.
            title = victim.evaluate(
                "() => document.querySelectorAll('.parallax-scatter')[0]"
                ".querySelector('.ps-title').textContent"
            )
            specs = bundle_model_specs()
            named = [s for s in sorted(specs, key=len, reverse=True) if s in title]
            assert named, (title, specs)
            assert _follows(screen, genuine_map(specs.index(named[0]), "umap")) > 0.98
            text = victim.inner_text("body")
            assert str(tmp_path / "attack") not in text and "hunter2" not in text
            assert not errors, errors
    after = {p for p in tmp_path.rglob("*") if cache not in p.parents and p != cache}
    assert after - before <= {tmp_path / "app.log"}, sorted(map(str, after - before))
