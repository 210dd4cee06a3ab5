"""The app shell (navigation, sidebar) and the home page, driven through Streamlit's AppTest.

Everything runs offline on CPU against a temporary cache (``PARALLAX_CACHE``), never the repo's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_maps import scatter_maps
from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")
PAGES = ["home.py", "data.py", "embed.py", "map.py", "compare.py"]


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


@pytest.fixture
def no_demo_bundle(monkeypatch, tmp_path):
    """Home without the committed demo bundle: the digits demo it falls back to."""
    from dashboard import viewonly

    monkeypatch.setattr(viewonly, "DEMO_BUNDLE", tmp_path / "missing.parallax.zip")


def test_shell_registers_pages_and_shows_the_sidebar():
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["home_auto_umap"] = False  # this test is about the shell, not UMAP
    at.run()
    assert not at.exception, at.exception
    # Every page file that exists is registered with st.navigation (switch_page checks that).
    for name in PAGES:
        if (REPO / "pages" / name).is_file():
            at.switch_page(f"../pages/{name}")
    # The sidebar names what Home shows: the dataset and the model of every map drawn.
    sidebar_code = [c.value for c in at.sidebar.code]
    drawn = [m["title"].split(" · ")[0] for m in scatter_maps(at)]
    assert drawn and sidebar_code[1:] == drawn, (sidebar_code, drawn)
    assert sidebar_code[0].startswith(("bundle:", "demo:digits"))
    assert any(" items (" in c.value for c in at.sidebar.caption)
    # Own pages render without an exception and show their title.
    for name, title in [("data.py", "Data"), ("embed.py", "Embed")]:
        at.switch_page(f"../pages/{name}").run()
        assert not at.exception, (name, at.exception)
        assert at.title and at.title[0].value == title


def test_home_opens_on_two_linked_models_without_interaction():
    """The committed demo bundle: two of its models side by side, one linked group, every point,
    hover previews mounted; nothing to click, no model loaded."""
    from dashboard import viewonly

    if not viewonly.DEMO_BUNDLE.is_file():
        pytest.skip("bundles/demo-shapes.parallax.zip not built (scripts/make_demo_bundle.py)")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    maps = scatter_maps(at)
    assert len(maps) == 2
    assert all(m["n"] == 2000 and m["group"] == maps[0]["group"] for m in maps)
    titles = [m["title"].split(" · ")[0] for m in maps]
    assert len(set(titles)) == 2, titles
    # the image–text models first (the shipped CLIPs), not the pixel or text baselines
    assert not any(t.startswith("baseline:") for t in titles), titles
    # the sidebar names what the page shows, not the session's default demo:digits
    sidebar = [c.value for c in at.sidebar.code]
    assert sidebar == [viewonly.bundle_spec(viewonly.DEMO_BUNDLE), *titles], sidebar
    assert all("UMAP" in m["title"] for m in maps)  # the bundle's cached maps
    assert [x["label"] for x in maps[0]["colours"]["legend"]]  # coloured by label
    # Home keeps no selection: the maps link it in the browser and never rerun the page for it
    assert all(m["selection"] is None and not m["report_selection"] for m in maps)
    hovers = [
        e for e in at.get("bidi_component") if e.proto.component_name.endswith("hover_preview")
    ]
    assert len(hovers) == 1
    labels = [link.label for link in at.get("page_link")]
    assert any("dataset" in lab.lower() for lab in labels)


def test_home_without_a_bundle_shows_the_digits_demo(no_demo_bundle):
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["home_auto_umap"] = False
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    (m,) = scatter_maps(at)
    assert m["n"] == 1797 and "PCA" in m["title"]
    assert [c.value for c in at.sidebar.code] == ["demo:digits", "baseline:pixels"]
    assert sorted(x["label"] for x in m["colours"]["legend"]) == [str(d) for d in range(10)]


@pytest.mark.slow
def test_home_computes_umap_in_the_background_and_swaps_it_in(no_demo_bundle):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()  # auto UMAP on: the PCA map shows at once, UMAP runs in a background job
    assert not at.exception, at.exception
    assert len(scatter_maps(at)) == 1
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
    assert scatter_maps(at)[0]["title"].endswith("UMAP")
    # A fresh session gets the cached UMAP map straight away.
    again = AppTest.from_file(APP, default_timeout=60).run()
    assert again.get("segmented_control"), "cached UMAP map not found on a fresh session"
