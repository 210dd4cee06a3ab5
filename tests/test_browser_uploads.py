"""An upload survives a reload: the real app in headless Chromium.

Upload a zip on the Data page, embed it, open the Map page, reload it: the same dataset comes
back (the link holds ``upload:<token>/<file name>``, not a server path), nothing is selected,
and no page shows a path under the cache's uploads folder.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.browser_util import chromium_available, chromium_page, running_app

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

TIMEOUT_MS = 180_000
N_ITEMS = 12
MAPS_JS = """() => Array.from(document.querySelectorAll('.parallax-scatter')).map(e => ({
  points: e.dataset.state === 'drawn' ? Number(e.dataset.points) : 0,
  selected: Number(e.dataset.selected) }))"""


def write_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(N_ITEMS):
            label = ("red", "green", "blue")[i % 3]
            rgb = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}[label]
            buf = io.BytesIO()
            Image.new("RGB", (24, 24), tuple(min(255, c + 3 * i) for c in rgb)).save(buf, "PNG")
            zf.writestr(f"skimg/{label}/{i}.png", buf.getvalue())
    return path


def nav(page, name: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=name).first.click()


def body(page) -> str:
    return page.locator("body").inner_text()


def test_an_upload_survives_a_reload_with_no_stray_selection_and_no_path(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    uploads = str(cache / "uploads")
    archive = write_zip(tmp_path / "skimg.zip")
    with running_app(cache) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/data")
        page.get_by_role("tab", name="Upload").click()
        page.set_input_files("[data-testid='stFileUploader'] input[type='file']", str(archive))
        page.get_by_text("Opened the upload as upload:").wait_for(timeout=TIMEOUT_MS)
        assert "skimg.zip" in body(page) and uploads not in body(page)

        nav(page, "Embed")
        page.get_by_role("button", name="Embed", exact=True).click()
        page.get_by_text("Next: look at the maps").wait_for(timeout=TIMEOUT_MS)
        assert uploads not in body(page)

        nav(page, "Map")
        drawn = f"() => {{ const m = ({MAPS_JS})(); return m.length >= 1 && "
        drawn += f"m.every(x => x.points === {N_ITEMS}); }}"
        page.wait_for_function(drawn, timeout=TIMEOUT_MS)
        assert "upload%3A" in page.url or "upload:" in page.url
        assert uploads not in page.url and str(cache) not in page.url
        assert uploads not in body(page)

        page.reload()
        page.wait_for_function(drawn, timeout=TIMEOUT_MS)
        text = body(page)
        assert "skimg.zip" in text, "the same dataset after the reload"
        assert "was not opened" not in text and uploads not in text
        assert all(m["selected"] == 0 for m in page.evaluate(MAPS_JS)), "no stray selection"
        assert "Nothing selected yet" in text

        nav(page, "Compare")
        page.get_by_role("tab", name="Predictions on uploads").wait_for(timeout=TIMEOUT_MS)
        assert uploads not in body(page)
        assert not errors, json.dumps(errors)
