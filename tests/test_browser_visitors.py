"""Two visitors, two browsers, one server (issue 21): what one does changes nothing for the other.

The attacker opens the Data page first (so the Home map of the shared demo is not computed
yet), uploads a bundle that claims to be that demo (``tests.hostile_bundles.demo_impostor``:
its map lies around x = 1000), types server paths and follows a link to one. The victim then
opens Home in another browser: the demo's real map, no trace of the attacker, and the server
wrote nothing outside its cache. Run with ``pytest -m browser``; skipped without Chromium.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser_util import chromium_available, chromium_page, running_app, wait_for_app_idle
from tests.hostile_bundles import FAR, demo_impostor

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]
TIMEOUT_MS = 180_000

# x extent of every point of every Plotly chart on the page (None while none is drawn).
X_EXTENT_JS = """() => {
  const maps = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(gd => gd._fullData);
  let lo = Infinity, hi = -Infinity, n = 0;
  maps.forEach(gd => gd._fullData.forEach(t => {
    if (!t.x) return;
    for (let i = 0; i < t._length; i++) {
      lo = Math.min(lo, t.x[i]); hi = Math.max(hi, t.x[i]); n++;
    }
  }));
  return n ? [lo, hi, n] : null;
}"""


def _open_any_spec(page: Any, spec: str) -> None:
    page.get_by_role("tab", name="Any spec").click()
    box = page.get_by_label("Dataset spec")
    box.fill(spec)
    box.press("Enter")
    page.get_by_role("button", name="Open spec").click()
    wait_for_app_idle(page)


def test_two_visitors_in_two_browsers(tmp_path: Path) -> None:
    impostor = demo_impostor(tmp_path / "attack")
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
            attacker.get_by_text("Opened the upload as bundle").wait_for(timeout=TIMEOUT_MS)
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
            victim.wait_for_function(f"() => ({X_EXTENT_JS})() !== null", timeout=TIMEOUT_MS)
            wait_for_app_idle(victim)
            lo, hi, n = victim.evaluate(X_EXTENT_JS)
            assert n == 1797, n
            assert hi < FAR / 2 and lo > -FAR / 2, (lo, hi)  # the demo's own map
            text = victim.inner_text("body")
            assert "digits.parallax.zip" not in text and "hunter2" not in text
            assert not errors, errors
    after = {p for p in tmp_path.rglob("*") if cache not in p.parents and p != cache}
    assert after - before <= {tmp_path / "app.log"}, sorted(map(str, after - before))
