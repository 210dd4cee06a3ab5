"""The Map page through AppTest, on a temporary cache with vectors made by the engine.

AppTest cannot drive the WebGL map, so selections are injected through session state (the
map's own selection, click and lasso, is covered by tests/test_browser.py). What each map element
was sent is read from its JSON (``tests/apptest_maps.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.apptest_maps import scatter_maps, selected
from tests.conftest import private_app_env
from tests.fakes import MeanColourModel

pytestmark = pytest.mark.usefixtures("fake_model_kind")

REPO = Path(__file__).resolve().parent.parent
PAGE = str(REPO / "pages" / "map.py")
DATASET = "demo:digits"
PIXELS = "baseline:pixels"
SECOND = MeanColourModel(dim=16).spec  # a weightless second model, embedded through the engine
TIMEOUT = 180


def require_model_registry() -> None:
    """baseline:pixels comes from engine.models (another part of the project)."""
    try:
        from engine.models import load_model  # noqa: F401
    except ImportError:
        pytest.skip("engine.models.load_model is not available yet (needed for baseline:pixels)")


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


@pytest.fixture(scope="module")
def embedded(temp_cache):
    """demo:digits embedded by baseline:pixels and by a fake second model."""
    require_model_registry()
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    cache = Cache(temp_cache)
    ds = open_dataset(DATASET, cache_root=cache.root)
    embed_dataset(ds, PIXELS, cache=cache)
    embed_dataset(ds, MeanColourModel(dim=16), cache=cache)
    return ds


def open_page(models: list[str] | None = None, dataset: str = DATASET, **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = dataset
    at.session_state["model_specs"] = [PIXELS]
    at.session_state["map_method"] = "PCA"  # UMAP runs in a background job: not under test here
    if models is not None:
        at.session_state["map_models"] = models
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def serve_fake_model(monkeypatch, model) -> None:
    """The workspace (the one door) loads ``model`` for the fake spec; real specs as ever."""
    from engine.workspace import Workspace

    check, load = Workspace.check_model_spec, Workspace.model
    monkeypatch.setattr(
        Workspace, "check_model_spec", lambda ws, spec: None if spec == SECOND else check(ws, spec)
    )
    monkeypatch.setattr(
        Workspace,
        "model",
        lambda ws, spec, **kw: model if spec == SECOND else load(ws, spec, **kw),
    )


def test_empty_state_links_to_embed():
    at = open_page(dataset="demo:shapes?n=100&seed=7")
    assert not scatter_maps(at)
    assert any("Nothing is embedded yet" in i.value for i in at.info)
    assert not errors(at)


def test_map_renders_all_points_coloured_by_label(embedded):
    at = open_page([PIXELS])
    assert not errors(at), errors(at)
    (m,) = scatter_maps(at)
    assert m["n"] == len(embedded) == 1797  # every point: no sample, no density layer
    assert m["points"]["url"] and m["points"]["key"] and m["colours"]["url"]
    assert [x["label"] for x in m["colours"]["legend"]] == [str(i) for i in range(10)]
    assert sum(x["count"] for x in m["colours"]["legend"]) == 1797
    assert "PCA" in m["title"]
    assert any("trustworthiness" in c.value for c in at.caption)
    # nothing selected yet
    assert any("Nothing selected yet" in c.value for c in at.caption)
    assert selected(m) == [] and m["report_selection"]


def test_switch_colour_by(embedded):
    at = open_page([PIXELS])
    colour = at.selectbox(key="map_colour")
    assert colour.value == "label"
    assert "neighbourhood agreement" in colour.options
    meta_cols = [str(c) for c in embedded.metadata().columns]
    positions = scatter_maps(at)[0]["points"]["key"]
    by_label = scatter_maps(at)[0]["colours"]["key"]
    for option in [*meta_cols[:2], "neighbourhood agreement"]:
        at.selectbox(key="map_colour").set_value(option).run()
        assert not at.exception, at.exception
        assert not errors(at), errors(at)
        (m,) = scatter_maps(at)
        assert m["n"] == 1797
        assert m["points"]["key"] == positions  # recolouring never resends positions
        if option == "neighbourhood agreement":
            assert m["colours"]["scale"] and m["colours"]["legend"] is None
            assert m["colours"]["key"] != by_label


def test_side_by_side_aligned_with_agreement_table(embedded):
    at = open_page([PIXELS, SECOND])
    maps = scatter_maps(at)
    assert len(maps) == 2
    assert all(m["n"] == 1797 and m["group"] == maps[0]["group"] for m in maps)
    assert {m["title"].split(" · ")[0] for m in maps} == {PIXELS, SECOND}
    tables = [df.value for df in at.dataframe if "overlap" in df.value.columns]
    assert tables, "agreement table missing"
    table = tables[0]
    assert list(table.columns[:4]) == ["row", "id", "label", "overlap"]
    assert len(table) == 1797
    assert table["overlap"].is_monotonic_increasing
    assert ((table["overlap"] >= 0) & (table["overlap"] <= 1)).all()
    at.number_input(key="map_agree_k").set_value(5).run()
    assert not at.exception, at.exception
    assert any("5 nearest" in m.value for m in at.markdown)
    # alignment off: the second map's positions change, the first's do not
    aligned = [m["points"]["key"] for m in scatter_maps(at)]
    at.toggle(key="map_aligned").set_value(False).run()
    raw = [m["points"]["key"] for m in scatter_maps(at)]
    assert raw[1] != aligned[1]
    # displacement: both maps coloured by each item's move between the two models
    at.toggle(key="map_displacement").set_value(True).run()
    assert not at.exception, at.exception
    maps = scatter_maps(at)
    assert all("displacement" in m["colours"]["title"] and m["colours"]["scale"] for m in maps)
    assert maps[0]["colours"]["key"] == maps[1]["colours"]["key"]


def test_every_drawn_map_exports_to_one_parquet(embedded):
    at = open_page([PIXELS, SECOND])
    buttons = [b for b in at.get("download_button") if b.label == "Download these maps (Parquet)"]
    assert len(buttons) == 1
    assert "baseline_pixels_x" in buttons[0].proto.help  # the column names are told


def test_selection_highlights_every_map_and_fills_gallery(embedded):
    rows = np.array([3, 10, 42, 1000])
    at = open_page([PIXELS, SECOND], map_selected_rows=rows)
    assert not errors(at), errors(at)
    maps = scatter_maps(at)
    assert [selected(m) for m in maps] == [rows.tolist(), rows.tolist()]
    nonce = maps[0]["selection"]["nonce"]
    assert nonce and maps[1]["selection"]["nonce"] == nonce
    assert any("4 item(s) selected" in m.value for m in at.markdown)
    assert len(at.image) == len(rows), "gallery should show one thumbnail per selected item"
    labels = [b.label for b in at.get("download_button")]
    assert "Download CSV" in labels and "Download Parquet" in labels
    # clearing empties the selection, under a new revision the maps reapply
    next(b for b in at.button if b.label == "Clear selection").click().run()
    assert not at.exception, at.exception
    assert len(at.session_state["map_selected_rows"]) == 0
    maps = scatter_maps(at)
    assert all(selected(m) == [] and m["selection"]["nonce"] != nonce for m in maps)


def test_single_item_lists_its_neighbours(embedded):
    # the item view (tests/test_page_items.py): neighbours under every embedded model
    at = open_page([PIXELS], map_selected_rows=np.array([0]))
    assert not errors(at), errors(at)
    assert any(m.value.startswith("#### Item ") for m in at.markdown)
    assert any(m.value == f"**{PIXELS}**" for m in at.markdown)


def test_text_search_says_when_a_model_has_no_text_tower(embedded):
    at = open_page([PIXELS])
    at.selectbox(key="map_query_model").set_value(PIXELS).run()
    assert not at.exception, at.exception
    infos = [i.value for i in at.info]
    assert any("no text tower" in i for i in infos), infos


def test_text_search_with_a_two_tower_model_scores_every_item(embedded, monkeypatch):
    """The fake second model embeds images and texts in one space, like CLIP. The search is
    the workspace's (``Workspace.search``): the default k of every door, every row scored."""
    from engine.params import SEARCH

    serve_fake_model(monkeypatch, MeanColourModel(dim=16))
    at = open_page([PIXELS, SECOND])
    at.selectbox(key="map_query_model").set_value(SECOND).run()
    at.text_input(key="map_query").input("a round zero")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    assert any("Best matches for **a round zero**" in m.value for m in at.markdown)
    scores = at.session_state["map_search"]["scores"]
    assert scores.shape == (1797,) and np.isfinite(scores).all()
    assert len(at.image) == SEARCH.k  # the best matches, as thumbnails
    # the scores colour the maps of both models
    at.selectbox(key="map_colour").set_value("text search score").run()
    assert not at.exception, at.exception
    for m in scatter_maps(at):
        assert m["n"] == 1797 and m["colours"]["scale"] and "score" in m["colours"]["title"]


def test_the_sidebar_lists_every_map_drawn(embedded):
    at = open_page([PIXELS, SECOND])
    assert [m["title"].split(" · ")[0] for m in scatter_maps(at)] == [PIXELS, SECOND]
    assert [c.value for c in at.sidebar.code] == [DATASET, PIXELS, SECOND]
    # and the address carries both, so a reload draws both again
    again = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    for key in ("ds", "m", "proj"):
        again.query_params[key] = at.query_params[key]
    again.run()
    assert not again.exception, again.exception
    assert [m["title"].split(" · ")[0] for m in scatter_maps(again)] == [PIXELS, SECOND]


def test_texts_are_first_mapped_by_models_with_different_text_towers():
    """On texts the two shipped CLIPs draw the same map (one frozen text tower): the first
    maps are one of them and the text model, never both CLIPs."""
    from dashboard import map_view as mv

    clip, small, text = "demo:shapes-clip", "demo:shapes-clip-small", "st:all-MiniLM-L6-v2"
    sources = [mv.MapSource(s, s, "text", None) for s in (clip, small, text)]
    assert mv.default_maps(sources) == [clip, text]
    images = [mv.MapSource(s, s, "image", None) for s in (clip, small)]
    assert mv.default_maps(images) == [clip, small]  # their image towers differ
