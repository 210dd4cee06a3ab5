"""The Compare page in the real app and headless Chromium: upload an image through the file
input, type labels and two model specs, predict, and see both models' result columns.

Run with ``pytest -m browser tests/test_browser_compare.py``; skipped without /usr/bin/chromium.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.browser_util import chromium_available, chromium_page, running_app, wait_for_app_idle

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="needs /usr/bin/chromium and playwright"),
]

TIMEOUT_MS = 120_000
PREDICT_TIMEOUT_MS = 300_000  # first model load imports torch + open_clip in the app process


@pytest.fixture(scope="module")
def clip_specs(tmp_path_factory) -> list[str]:
    try:
        from tests.model_fixtures import build_open_clip_dir
    except ImportError as exc:
        pytest.skip(f"test model fixtures unavailable: {exc}")
    root = tmp_path_factory.mktemp("browser-models")
    return [
        f"open_clip:local-dir:{build_open_clip_dir(root / name, seed=seed)}"
        for name, seed in (("clip-a", 0), ("clip-b", 1))
    ]


def _commit(page: Any, label: str, value: str) -> None:
    """Fill a Streamlit text input and press Enter (which sends the value to the script)."""
    box = page.get_by_label(label)
    box.fill(value)
    box.press("Enter")
    # Enter commits the value to the page's widget state (every later rerun carries it): the
    # input says so by dropping its "Press Enter to apply" line
    widget = page.locator("[data-testid='stTextInput']").filter(has=box)
    widget.get_by_text("Press Enter to apply").wait_for(state="hidden")
    wait_for_app_idle(page, TIMEOUT_MS)


def test_upload_and_predict_with_two_models(clip_specs: list[str], tmp_path: Path) -> None:
    image = tmp_path / "red-square.png"
    Image.new("RGB", (48, 48), (230, 20, 20)).save(image)
    cache = tmp_path / "cache"
    cache.mkdir()
    # the models are local folders: a visitor may name them only under the operator's roots
    roots = {"PARALLAX_SERVER_PATHS": str(Path(clip_specs[0].split("local-dir:", 1)[1]).parent)}
    with running_app(cache, env=roots) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/compare")
        page.get_by_role("tab", name="Predictions on uploads").wait_for(timeout=TIMEOUT_MS)
        wait_for_app_idle(page, TIMEOUT_MS)

        page.set_input_files("[data-testid='stFileUploader'] input[type='file']", str(image))
        page.get_by_text("red-square.png").first.wait_for(timeout=TIMEOUT_MS)
        wait_for_app_idle(page, TIMEOUT_MS)
        _commit(page, "Labels (comma-separated)", "red, green, blue")
        _commit(page, "Other model specs (comma-separated)", ", ".join(clip_specs))

        t0 = time.perf_counter()
        page.get_by_role("button", name="Predict").click()
        page.get_by_text("Timing per model").wait_for(timeout=PREDICT_TIMEOUT_MS)
        wait_for_app_idle(page, TIMEOUT_MS)
        print(f"predict with two tiny CLIPs: {time.perf_counter() - t0:.1f}s")

        body = page.locator("body").inner_text()
        for spec in clip_specs:  # one result column per model, headed by its spec
            assert spec in body, spec
        assert body.count("inference ") >= 2
        # one top-k table per (input, model) plus the timing table
        page.get_by_text("Timing per model").scroll_into_view_if_needed()
        page.wait_for_function(  # tables render once scrolled into view
            "() => document.querySelectorAll(\"[data-testid='stDataFrame']\").length >= 3",
            timeout=TIMEOUT_MS,
        )
        assert page.locator("[data-testid='stImage'] img").count() >= 1  # the uploaded image
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.locator("[data-testid='stAlertContentError']").count() == 0
        page.screenshot(path=str(tmp_path / "compare-predictions.png"), full_page=True)

        # the second tab runs lazily; with nothing embedded it points to the Embed page
        page.get_by_role("tab", name="Dataset comparison").click()
        page.get_by_text("Nothing is embedded yet").wait_for(timeout=TIMEOUT_MS)
        page.get_by_role("link", name="Go to the Embed page").wait_for(timeout=TIMEOUT_MS)
        assert not errors, errors


@pytest.fixture(scope="module")
def compared_cache(tmp_path_factory) -> tuple[Path, int]:
    """demo:digits embedded by baseline:pixels and a weightless fake, already compared: the
    page shows the cached comparison without loading any model."""
    try:
        from engine.analysis.compare import compare_models
        from engine.data import open_dataset
        from engine.models import load_model
        from engine.store.cache import Cache
        from tests.fakes import MeanColourModel
    except ImportError as exc:
        pytest.skip(f"engine pieces unavailable: {exc}")
    root = tmp_path_factory.mktemp("browser-compare-cache")
    cache = Cache(root)
    ds = open_dataset("demo:digits", cache_root=root)
    report = compare_models(
        ds, [load_model("baseline:pixels"), MeanColourModel(dim=16)], cache=cache
    )
    return root, len(report.disagreements())


def test_disagreements_go_to_the_map_selection(compared_cache: tuple[Path, int], tmp_path: Path):
    root, n_disagree = compared_cache
    with running_app(root) as url, chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{url}/compare")
        page.get_by_role("tab", name="Dataset comparison").click()
        page.get_by_text("Where the models disagree").wait_for(timeout=TIMEOUT_MS)
        wait_for_app_idle(page, TIMEOUT_MS)
        assert "from the cache" in page.locator("body").inner_text()
        button = page.get_by_role("button", name=f"Show all {n_disagree} on the Map")
        button.scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "compare-disagreements.png"))
        button.click()
        page.wait_for_function("() => location.pathname.endsWith('/map')", timeout=TIMEOUT_MS)
        page.get_by_text("item(s) selected").first.wait_for(timeout=TIMEOUT_MS)
        text = page.locator("body").inner_text()
        count = int(text.split(" item(s) selected")[0].split()[-1].replace(",", ""))
        assert count == n_disagree
        assert not errors, errors
