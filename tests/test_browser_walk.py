"""A newcomer's walk through the real app in headless Chromium, on their own upload (#29).

Home → Data (upload a small zip of labelled images) → Embed (with the default models) → Map →
Compare → Home, and:

* every page after the upload is reloaded (a reload is a new Streamlit session: only the address
  carries the view) and still shows the upload: its ``upload:<token>/<name>`` spec, never a
  server path, never the fallback ``demo:digits``;
* on Home and on Map the sidebar names exactly what the page shows: the dataset, its size, and
  the models whose maps are drawn;
* on Map, after maps are added and removed, every point of every map lies inside its frame
  and every map is still linked; leaving Map and coming back shows the same maps.

Every wait is on a state the page announces: a page's heading with nothing left over from the
run before, Streamlit's script state "notRunning" and its sidebar written
(``browser_util.wait_for_page``), the address naming the dataset, a text the page writes, a
map's ``data-state="drawn"`` with its point count and title (or "error": fail at once). The
map component's 2-second cleanup timer is fired with the page's clock (``clock.run_for``), not
waited for. Nothing sleeps or retries.

Run with ``pytest -m browser tests/test_browser_walk.py -s``; skipped without /usr/bin/chromium.
Screenshots of every step go to a temporary folder (printed; kept by pytest's tmp_path).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser_util import (
    MAP_INFO_JS,
    SIDEBAR_JS,
    assert_framed,
    chromium_available,
    chromium_page,
    drawn_js,
    map_infos,
    running_app,
    wait_for_page,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

# Generous: two shared cores; the first embed loads torch and two CLIPs, the first UMAP compiles.
TIMEOUT_MS = 300_000
N_ITEMS = 15
CLASSES = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}
FALLBACK = "demo:digits"
UPLOAD_SPEC = re.compile(r"upload:[A-Za-z0-9_-]+/walk\.zip")
HOME_TITLE = "Parallax"

# The text of every code line in the page's main area (not the sidebar).
MAIN_CODES_JS = """() => Array.from(document.querySelectorAll(
  "[data-testid='stMain'] [data-testid='stCode']")).map(e => e.textContent.trim())"""

# The models chosen in the page's first model picker (its tags, in order).
CHOSEN_JS = """() => Array.from(document.querySelectorAll(
  "[data-testid='stMain'] [data-testid='stMultiSelect']")[0]
  .querySelectorAll("[data-tag] span[title]")).map(e => e.getAttribute('title'))"""

# The page's address names the dataset ``spec`` (``?ds=``).
ADDRESS_JS = "(spec) => new URLSearchParams(window.location.search).get('ds') === spec"

# Every drawn map is the one its id is registered under: linked hover and selection reach it.
LINKED_JS = """() => Array.from(document.querySelectorAll('.parallax-scatter')).every(root => {
  const inst = window.__parallaxMaps.maps.get(root.dataset.mapId);
  return !!inst && inst.ui.root === root; })"""
CLEANUP_MS = 2_500  # the component destroys a map whose element left the page after 2 s


def write_zip(path: Path) -> Path:
    """A zip of an image folder whose sub-folders are the labels: squares and bars of three
    colours, each item a little different."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(N_ITEMS):
            label = list(CLASSES)[i % 3]
            rgb = tuple(min(255, c + 4 * i) for c in CLASSES[label])
            img = Image.new("RGB", (32, 32), (245, 245, 245))
            box = (4, 4, 28, 28) if i % 2 else (4 + i % 5, 10, 20 + i % 7, 22)
            img.paste(rgb, box)
            buf = io.BytesIO()
            img.save(buf, "PNG")
            zf.writestr(f"walk/{label}/{i:02d}.png", buf.getvalue())
    return path


def chosen_specs(page: Any) -> list[str]:
    """The models chosen in the page's first model picker; a tag may read "<spec> (<what>)"."""
    return [re.sub(r" \([^()]*\)$", "", tag) for tag in page.evaluate(CHOSEN_JS)]


def wait_drawn(page: Any, maps: int, n: int, title: str = "") -> None:
    """Wait until ``maps`` maps are drawn with ``n`` points each (``drawn_js``), or one of them
    says it could not be drawn: then fail with what it says."""
    done = (
        f"() => ({drawn_js(maps, n, title)})() || ({MAP_INFO_JS})().some(m => m.state === 'error')"
    )
    page.wait_for_function(done, timeout=TIMEOUT_MS)
    failed = [(m["title"], m["status"]) for m in map_infos(page) if m["state"] == "error"]
    assert not failed, failed


def nav(page: Any, name: str) -> None:
    page.locator("[data-testid='stSidebarNav'] a", has_text=name).first.click()


def body(page: Any) -> str:
    return page.locator("body").inner_text()


def map_label(title: str) -> str:
    """A map's title is ``<label> · <method>``; the label is what the sidebar lists."""
    return title.rsplit(" · ", 1)[0]


def items_in(text: str) -> int:
    """The item count a caption names ("15 items (image)", "2,000 items ...")."""
    found = re.search(r"([\d,]+) items", text)
    assert found, text
    return int(found.group(1).replace(",", ""))


class Walk:
    """The browser page, the app's cache and where screenshots go; checks shared by steps."""

    def __init__(self, page: Any, cache: Path, shots: Path) -> None:
        self.page, self.cache, self.shots = page, cache, shots
        self.step = 0

    def shot(self, name: str) -> None:
        self.step += 1
        self.page.screenshot(path=str(self.shots / f"{self.step:02d}-{name}.png"), full_page=True)

    def no_server_path(self) -> None:
        """No page, address or sidebar shows where the upload lies on the server."""
        uploads = str(self.cache / "uploads")
        assert uploads not in self.page.url and str(self.cache) not in self.page.url
        assert uploads not in body(self.page)

    def settled(self, title: str, spec: str) -> dict[str, Any]:
        """The page ``title`` has run to its end and names ``spec`` as its dataset."""
        side = wait_for_page(self.page, title, TIMEOUT_MS)
        assert side["dataset"] == spec, (title, side, FALLBACK)
        assert items_in(side["caption"]) == N_ITEMS, side
        self.no_server_path()
        return side

    def maps_match_sidebar(self, title: str, spec: str, n: int) -> list[dict[str, Any]]:
        """Every map the page draws is drawn with ``n`` points, and the sidebar names the
        dataset ``spec`` and exactly the drawn maps' models."""
        side = wait_for_page(self.page, title, TIMEOUT_MS)
        wait_drawn(self.page, len(side["models"]), n)
        side = wait_for_page(self.page, title, TIMEOUT_MS)  # a rerun may have redrawn it
        maps = map_infos(self.page)
        assert side["dataset"] == spec, side
        assert items_in(side["caption"]) == n, side
        assert side["models"], side
        assert sorted(map_label(m["title"]) for m in maps) == sorted(side["models"]), (maps, side)
        assert all(m["points"] == n and m["state"] == "drawn" for m in maps), maps
        return maps

    def reload(self, title: str, spec: str) -> dict[str, Any]:
        """Reload the page (a new session: only the address carries the view): it shows the
        same dataset. First the address must carry it: the page writes it after its sidebar."""
        self.page.wait_for_function(ADDRESS_JS, arg=spec, timeout=TIMEOUT_MS)
        self.page.reload()
        return self.settled(title, spec)


def _home(walk: Walk, name: str) -> None:
    """Home: the sidebar names the dataset and exactly the models whose maps Home draws; the
    page's heading names the same number of items and models."""
    page = walk.page
    side = wait_for_page(page, HOME_TITLE, TIMEOUT_MS)
    spec = side["dataset"]
    assert spec, side
    n = items_in(side["caption"])
    walk.maps_match_sidebar(HOME_TITLE, spec, n)
    walk.shot(name)
    heading = page.locator("[data-testid='stMain'] h3").first.inner_text()
    assert f"{n:,} items" in heading, (heading, side)
    assert chosen_specs(page) == side["models"], side  # the page's own model picker


def _data(walk: Walk, archive: Path) -> str:
    """Data: upload the zip; the page opens it as ``upload:<token>/walk.zip`` (no path), says
    so, shows it as the current dataset, and keeps it across a reload."""
    page = walk.page
    nav(page, "Data")
    wait_for_page(page, "Data", TIMEOUT_MS)
    page.get_by_role("tab", name="Upload").click()
    page.set_input_files("[data-testid='stFileUploader'] input[type='file']", str(archive))
    page.get_by_text("Opened the upload as upload:").wait_for(timeout=TIMEOUT_MS)
    found = UPLOAD_SPEC.search(body(page))
    assert found, body(page)
    spec = found.group(0)
    walk.settled("Data", spec)
    assert spec in page.evaluate(MAIN_CODES_JS)  # "Current dataset"
    assert "upload%3A" in page.url or "upload:" in page.url, page.url
    walk.shot("data-uploaded")

    walk.reload("Data", spec)
    assert page.evaluate(MAIN_CODES_JS) == [spec]
    walk.shot("data-reloaded")
    return spec


def _embed(walk: Walk, spec: str) -> list[str]:
    """Embed: the upload is the dataset; embed it with the models the page starts with; after
    a reload the same dataset and models, each now cached for this dataset."""
    page = walk.page
    nav(page, "Embed")
    side = walk.settled("Embed", spec)
    walk.shot("embed")
    models = side["models"]
    assert models, "the page starts with default models that fit images"
    assert chosen_specs(page) == models, side  # the page's model picker
    assert f"Dataset {spec}" in body(page)
    page.get_by_role("button", name="Embed", exact=True).click()
    page.get_by_text("Next: look at the maps").wait_for(timeout=TIMEOUT_MS)
    side = walk.settled("Embed", spec)
    assert side["models"] == models, (side, models)  # every default model embedded it
    walk.shot("embed-done")

    side = walk.reload("Embed", spec)
    assert side["models"] == models, (side, models)
    assert f"Dataset {spec}" in body(page)
    walk.shot("embed-reloaded")
    return models


def _pick_first_option(page: Any) -> str:
    """Open the maps' model picker and add the first model it offers; returns its label."""
    picker = page.locator("[data-testid='stMain'] [data-testid='stMultiSelect']").first
    picker.get_by_role("button", name="Open", exact=True).click()
    option = page.get_by_role("option").filter(has_not_text="Select all").first
    label = option.inner_text().strip()
    option.click()
    page.keyboard.press("Escape")
    return label


def _remove(page: Any, label: str) -> None:
    """Remove ``label``'s map with its tag's remove button in the maps' model picker."""
    picker = page.locator("[data-testid='stMain'] [data-testid='stMultiSelect']").first
    picker.get_by_role("button", name=f"Remove {label}", exact=True).click()


def _map(walk: Walk, spec: str, embedded: list[str]) -> None:
    """Map: the sidebar names exactly the maps drawn; PCA survives a reload; after a map is
    added and maps are removed, every point of every map is inside its frame and every map is
    still linked; after a visit to another page the same maps are back."""
    page = walk.page
    nav(page, "Map")
    walk.settled("Map", spec)
    walk.maps_match_sidebar("Map", spec, N_ITEMS)
    walk.shot("map")
    # PCA: drawn at once (UMAP runs in a background job; PCA is the explicit choice here)
    page.locator("button[data-variant='segmented_control']", has_text="PCA").first.click()
    side = wait_for_page(page, "Map", TIMEOUT_MS)
    wait_drawn(page, len(side["models"]), N_ITEMS, "PCA")
    maps = walk.maps_match_sidebar("Map", spec, N_ITEMS)
    assert_framed(page, fill=False)
    assert "proj=pca" in page.url, page.url

    side = walk.reload("Map", spec)
    wait_drawn(page, len(side["models"]), N_ITEMS, "PCA")
    again = walk.maps_match_sidebar("Map", spec, N_ITEMS)
    assert [m["title"] for m in again] == [m["title"] for m in maps], (again, maps)
    assert all(m["selected"] == 0 for m in again), "no stray selection after a reload"
    assert_framed(page, fill=False)
    walk.shot("map-reloaded")

    # remove the first map (the one the others are aligned onto), add maps back up to every
    # embedded model, then remove them down to one: every map framed each time
    count = len(again)
    if count == min(len(embedded), 4):
        count = _remove_and_check(walk, spec, count, first=True)
    while count < min(len(embedded), 4):
        added = _pick_first_option(page)
        count += 1
        wait_drawn(page, count, N_ITEMS, "PCA")
        maps = walk.maps_match_sidebar("Map", spec, N_ITEMS)
        assert added in [map_label(m["title"]) for m in maps], (added, maps)
        assert_framed(page, fill=False)
        walk.shot(f"map-up-to-{count}")
    while count > 1:
        count = _remove_and_check(walk, spec, count, first=count > 2)

    # another page and back: the Map shows the maps it was left with (the session's view)
    titles = [m["title"] for m in map_infos(page)]
    nav(page, "Data")
    walk.settled("Data", spec)
    nav(page, "Map")
    walk.settled("Map", spec)
    maps = walk.maps_match_sidebar("Map", spec, N_ITEMS)
    assert [m["title"] for m in maps] == titles, (maps, titles)


def _remove_and_check(walk: Walk, spec: str, count: int, *, first: bool) -> int:
    """Remove the first (or the last) map; the rest are drawn, named by the sidebar, framed."""
    page = walk.page
    chosen = page.evaluate(CHOSEN_JS)
    assert len(chosen) == count, (chosen, count)
    _remove(page, chosen[0] if first else chosen[-1])
    count -= 1
    wait_drawn(page, count, N_ITEMS, "PCA")
    maps = walk.maps_match_sidebar("Map", spec, N_ITEMS)
    assert [map_label(m["title"]) for m in maps] == (chosen[1:] if first else chosen[:-1])
    # The maps after a removed one are drawn anew; the old elements' cleanup runs on a timer:
    # fire it (the page's clock, no waiting) and every drawn map is still linked (registered).
    page.clock.run_for(CLEANUP_MS)
    assert page.evaluate(LINKED_JS), map_infos(page)
    assert_framed(page, fill=count == 1)  # one map: nothing to align it to, it fills
    walk.shot(f"map-down-to-{count}")
    return count


def _compare(walk: Walk, spec: str) -> None:
    """Compare: the upload is the dataset, before and after a reload, and the dataset
    comparison runs on the models that embedded it."""
    page = walk.page
    nav(page, "Compare")
    walk.settled("Compare", spec)
    assert f"Dataset {spec}" in body(page)
    walk.shot("compare")
    walk.reload("Compare", spec)
    assert f"Dataset {spec}" in body(page)
    walk.shot("compare-reloaded")

    # the comparison of the models it embedded: the tab names the upload, the sidebar its models
    page.get_by_role("tab", name="Dataset comparison").click()
    page.get_by_text(f"Models already embedded for {spec}").wait_for(timeout=TIMEOUT_MS)
    side = walk.settled("Compare", spec)
    assert chosen_specs(page) == side["models"], side
    page.get_by_role("button", name="Run the comparison").click()
    page.get_by_text("Accuracy per model").wait_for(timeout=TIMEOUT_MS)
    walk.settled("Compare", spec)
    walk.shot("compare-dataset")


def test_a_newcomer_walks_home_data_embed_map_compare_and_back(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    archive = write_zip(tmp_path / "walk.zip")
    with running_app(cache, timeout_s=180) as url, chromium_page() as page:
        page.set_default_timeout(TIMEOUT_MS)
        page.clock.install()  # flows as usual; lets a step fire the page's timers at once
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        walk = Walk(page, cache, shots)

        try:
            page.goto(url)
            _home(walk, "home")
            spec = _data(walk, archive)
            embedded = _embed(walk, spec)
            _map(walk, spec, embedded)
            _compare(walk, spec)

            # back to Home: its sidebar still names what it shows
            nav(page, "Home")
            _home(walk, "home-again")
            # and the session's own dataset is still the upload
            nav(page, "Map")
            walk.settled("Map", spec)
            walk.maps_match_sidebar("Map", spec, N_ITEMS)
            walk.shot("map-after-home")
        except Exception:  # what the page showed when a step failed: a screenshot and its state
            walk.shot("failed")
            state = {"url": page.url, "maps": map_infos(page), "sidebar": page.evaluate(SIDEBAR_JS)}
            print(json.dumps(state, default=str))
            raise
        assert not errors, json.dumps(errors)
