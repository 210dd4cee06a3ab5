"""The Map page through AppTest, on a temporary cache with vectors made by the engine.

AppTest cannot drive a plotly selection, so selections are injected through session state (the
page's selection callback is covered by tests/test_maps.py and tests/test_browser.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import private_app_env
from tests.fakes import MeanColourModel

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
    from engine.cache import Cache
    from engine.datasets import open_dataset
    from engine.embed import embed_dataset

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


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _length(array) -> int:
    if isinstance(array, dict) and "bdata" in array:
        return len(base64.b64decode(array["bdata"])) // np.dtype(array["dtype"]).itemsize
    return len(array)


def _rows(trace: dict) -> np.ndarray:
    cd = trace["customdata"]
    return np.frombuffer(base64.b64decode(cd["bdata"]), dtype=np.dtype(cd["dtype"]))


def points(fig: dict, selected: bool = False) -> int:
    return sum(
        _length(t["x"])
        for t in fig["data"]
        if t["type"] == "scattergl" and t.get("name", "").startswith("selected (") == selected
    )


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_empty_state_links_to_embed():
    at = open_page(dataset="demo:shapes?n=100&seed=7")
    assert not figures(at)
    assert any("Nothing is embedded yet" in i.value for i in at.info)
    assert not errors(at)


def test_map_renders_all_points_coloured_by_label(embedded):
    at = open_page([PIXELS])
    assert not errors(at), errors(at)
    figs = figures(at)
    assert len(figs) == 1
    fig = figs[0]
    assert points(fig) == len(embedded) == 1797
    names = [t["name"] for t in fig["data"] if t["type"] == "scattergl"]
    assert names == [str(i) for i in range(10)]
    assert fig["layout"]["meta"]["parallax_map"] is True
    assert "PCA" in fig["layout"]["title"]["text"]
    assert any("trustworthiness" in c.value for c in at.caption)
    # nothing selected yet
    assert any("Nothing selected yet" in c.value for c in at.caption)


def test_switch_colour_by(embedded):
    at = open_page([PIXELS])
    colour = at.selectbox(key="map_colour")
    assert colour.value == "label"
    assert "neighbourhood agreement" in colour.options
    meta_cols = [str(c) for c in embedded.metadata().columns]
    for option in [*meta_cols[:2], "neighbourhood agreement"]:
        at.selectbox(key="map_colour").set_value(option).run()
        assert not at.exception, at.exception
        assert not errors(at), errors(at)
        fig = figures(at)[0]
        assert points(fig) == 1797
        if option == "neighbourhood agreement":
            scaled = [t for t in fig["data"] if t.get("marker", {}).get("colorscale")]
            assert scaled, "agreement colouring should use a colour scale"


def test_side_by_side_with_agreement_table(embedded):
    at = open_page([PIXELS, SECOND])
    figs = figures(at)
    assert len(figs) == 2
    assert all(points(f) == 1797 for f in figs)
    assert {f["layout"]["title"]["text"].split(" · ")[0] for f in figs} == {PIXELS, SECOND}
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


def test_selection_highlights_every_map_and_fills_gallery(embedded):
    rows = np.array([3, 10, 42, 1000])
    at = open_page([PIXELS, SECOND], map_selected_rows=rows)
    assert not errors(at), errors(at)
    for fig in figures(at):
        assert points(fig) == 1797
        assert points(fig, selected=True) == len(rows)
        sel = np.sort(
            np.concatenate(
                [_rows(t) for t in fig["data"] if t.get("name", "").startswith("selected (")]
            )
        )
        assert sel.tolist() == rows.tolist()
    assert any("4 item(s) selected" in m.value for m in at.markdown)
    assert len(at.image) == len(rows), "gallery should show one thumbnail per selected item"
    labels = [b.label for b in at.get("download_button")]
    assert "Download CSV" in labels and "Download Parquet" in labels
    # clearing empties the selection
    next(b for b in at.button if b.label == "Clear selection").click().run()
    assert not at.exception, at.exception
    assert len(at.session_state["map_selected_rows"]) == 0
    assert all(points(f, selected=True) == 0 for f in figures(at))


def test_single_item_lists_its_neighbours(embedded):
    at = open_page([PIXELS], map_selected_rows=np.array([0]))
    assert not errors(at), errors(at)
    assert any("Nearest neighbours of" in m.value for m in at.markdown)
    assert at.selectbox(key="map_nn").value == PIXELS


def test_text_search_says_when_a_model_has_no_text_tower(embedded):
    at = open_page([PIXELS])
    at.selectbox(key="map_query_model").set_value(PIXELS).run()
    assert not at.exception, at.exception
    infos = [i.value for i in at.info]
    assert any("no text tower" in i for i in infos), infos


def test_text_search_with_a_two_tower_model_scores_every_item(embedded, monkeypatch):
    """The fake second model embeds images and texts in one space, like CLIP."""
    from dashboard import state

    monkeypatch.setattr(state, "get_model", lambda spec: MeanColourModel(dim=16))
    at = open_page([PIXELS, SECOND])
    at.selectbox(key="map_query_model").set_value(SECOND).run()
    at.text_input(key="map_query").input("a round zero")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    assert any("Best matches for **a round zero**" in m.value for m in at.markdown)
    scores = at.session_state["map_search"]["scores"]
    assert scores.shape == (1797,) and np.isfinite(scores).all()
    assert len(at.image) == 12  # the best matches, as thumbnails
    # the scores colour the maps of both models
    at.selectbox(key="map_colour").set_value("text search score").run()
    assert not at.exception, at.exception
    for fig in figures(at):
        scaled = [t for t in fig["data"] if t.get("marker", {}).get("colorscale")]
        assert scaled and points(fig) == 1797
