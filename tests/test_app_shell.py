"""The app shell (navigation, sidebar) and the home page, driven through Streamlit's AppTest.

Everything runs offline on CPU against a temporary cache (``PARALLAX_CACHE``), never the repo's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")
PAGES = ["home.py", "data.py", "embed.py", "map.py", "compare.py"]


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_shell_registers_pages_and_shows_the_sidebar():
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["home_auto_umap"] = False  # this test is about the shell, not UMAP
    at.run()
    assert not at.exception, at.exception
    # Every page file that exists is registered with st.navigation (switch_page checks that).
    for name in PAGES:
        if (REPO / "pages" / name).is_file():
            at.switch_page(f"../pages/{name}")
    # The sidebar names the current dataset and models.
    sidebar_code = [c.value for c in at.sidebar.code]
    assert "demo:digits" in sidebar_code
    assert "baseline:pixels" in sidebar_code
    assert any("1,797 items" in c.value for c in at.sidebar.caption)
    # Own pages render without an exception and show their title.
    for name, title in [("data.py", "Data"), ("embed.py", "Embed")]:
        at.switch_page(f"../pages/{name}").run()
        assert not at.exception, (name, at.exception)
        assert at.title and at.title[0].value == title


def test_home_shows_a_demo_map_without_interaction():
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["home_auto_umap"] = False
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    specs = plotly_specs(at)
    assert len(specs) == 1
    traces = specs[0]["data"]
    # One WebGL trace per digit label, every point of the demo drawn, hover carries id + label.
    assert {t["type"] for t in traces} == {"scattergl"}
    assert sorted(t["name"] for t in traces) == [str(d) for d in range(10)]
    assert "id" in traces[0]["hovertemplate"] and "label" in traces[0]["hovertemplate"]
    # Links to the other pages are offered.
    labels = [link.label for link in at.get("page_link")]
    assert any("dataset" in lab.lower() for lab in labels)


@pytest.mark.slow
def test_home_computes_umap_in_the_background_and_swaps_it_in():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()  # auto UMAP on: the PCA map shows at once, UMAP runs in a background job
    assert not at.exception, at.exception
    assert len(plotly_specs(at)) == 1
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if at.get("segmented_control"):
            break
        time.sleep(2)
        at.run()
        assert not at.exception, at.exception
    else:
        pytest.fail("the UMAP map never became ready")
    assert not at.error, [e.value for e in at.error]
    control = at.get("segmented_control")[0]
    assert list(control.options) == ["UMAP", "PCA"]
    spec = plotly_specs(at)[0]
    assert spec["layout"]["title"]["text"].startswith("UMAP")
    # A fresh session gets the cached UMAP map straight away.
    again = AppTest.from_file(APP, default_timeout=60).run()
    assert again.get("segmented_control"), "cached UMAP map not found on a fresh session"
