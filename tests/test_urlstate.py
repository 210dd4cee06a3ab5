"""Shareable links: the view <-> query parameters, and pages restoring a view from a link."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import urlstate
from dashboard.urlstate import View, decode_rows, decode_view, encode_rows, encode_view
from tests.apptest_maps import scatter_maps
from tests.fakes import MeanColourModel

pytestmark = pytest.mark.usefixtures("fake_model_kind")

REPO = Path(__file__).resolve().parent.parent
MAP_PAGE = str(REPO / "pages" / "map.py")
DATA_PAGE = str(REPO / "pages" / "data.py")
PIXELS = "baseline:pixels"
SECOND = MeanColourModel(dim=16).spec
AGREEMENT = "neighbourhood agreement"


# -- pure encoding ------------------------------------------------------------------------------
def test_rows_round_trip_as_compact_runs():
    rows = [9, 0, 1, 2, 5, 10, 10, 400]
    assert encode_rows(rows) == "0-2_5_9-10_400"
    assert decode_rows("0-2_5_9-10_400").tolist() == [0, 1, 2, 5, 9, 10, 400]
    assert encode_rows([]) == "" and decode_rows("").tolist() == []
    rng = np.random.default_rng(0)
    for _ in range(50):
        sel = np.unique(rng.integers(0, 5000, size=rng.integers(1, 200)))
        text = encode_rows(sel)
        assert text is not None and decode_rows(text).tolist() == sel.tolist()
    # a contiguous block of 100k rows is one short run
    assert encode_rows(np.arange(1000, 101_000)) == "1000-100999"


def test_large_scattered_selections_are_left_out_of_the_link():
    scattered = np.arange(0, 20_000, 2)  # 10,000 runs of one row
    assert encode_rows(scattered) is None
    view = View(dataset="demo:digits", method="PCA", selection=scattered)
    params = encode_view(view)
    assert "sel" not in params and params["ds"] == "demo:digits" and params["proj"] == "pca"


def test_decoding_never_trusts_the_url():
    assert decode_rows("0-9", n=5).tolist() == [0, 1, 2, 3, 4]  # rows past N dropped
    for bad in ("1-", "a", "5-2", "1--2", "-3", "1,2", "9" * 12):
        with pytest.raises(ValueError):
            decode_rows(bad)
    with pytest.raises(ValueError):
        decode_rows("0-999999999_0-999999999")  # would expand past MAX_ROWS
    view = decode_view(
        {
            "ds": ["demo:digits"],
            "m": ["a", "b", "a", "c", "d", "e"],
            "colour": "x" * (urlstate.MAX_TEXT + 1),
            "proj": "TSNE",
            "sel": "junk",
            "other": "ignored",
        }
    )
    assert view.dataset == "demo:digits"
    assert view.models == ["a", "b", "c", "d"]  # deduplicated, at most MAX_MODELS
    assert view.colour is None and view.method is None and view.selection is None


def test_view_round_trip():
    view = View(
        dataset="bundle:/srv/x.parallax.zip",
        models=[PIXELS, SECOND],
        colour=AGREEMENT,
        method="UMAP",
        selection=np.array([3, 4, 5, 77]),
    )
    params = encode_view(view)
    assert params == {
        "ds": "bundle:/srv/x.parallax.zip",
        "m": [PIXELS, SECOND],
        "colour": AGREEMENT,
        "proj": "umap",
        "sel": "3-5_77",
    }
    assert decode_view(params) == view
    assert decode_view({"proj": ["pca"]}).method == "PCA"  # lower case in links, widget's case here


# -- pages restoring a view ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """demo:digits embedded by baseline:pixels and a fake second model, in a private cache."""
    saved = {k: os.environ.get(k) for k in ("PARALLAX_CACHE", "HF_HUB_OFFLINE")}
    root = tmp_path_factory.mktemp("cache")
    os.environ["PARALLAX_CACHE"] = str(root)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    cache = Cache(root)
    ds = open_dataset("demo:digits", cache_root=cache.root)
    embed_dataset(ds, PIXELS, cache=cache)
    embed_dataset(ds, MeanColourModel(dim=16), cache=cache)
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_a_link_restores_the_map_view(embedded):
    at = AppTest.from_file(MAP_PAGE, default_timeout=180)
    at.query_params["ds"] = "demo:digits"
    at.query_params["m"] = [SECOND, PIXELS]
    at.query_params["colour"] = AGREEMENT
    at.query_params["proj"] = "pca"
    at.query_params["sel"] = "0-9_100"
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["dataset_spec"] == "demo:digits"
    assert at.multiselect(key="map_models").value == [SECOND, PIXELS]
    assert at.selectbox(key="map_colour").value == AGREEMENT
    assert at.session_state["map_method"] == "PCA"
    assert at.session_state["map_selected_rows"].tolist() == [*range(10), 100]
    assert any("11 item(s) selected" in m.value for m in at.markdown)
    titles = [m["title"] for m in scatter_maps(at)]
    assert len(titles) == 2 and all("PCA" in t for t in titles)
    # the page keeps the link in step with what it shows
    assert at.query_params["proj"] == "pca" and at.query_params["sel"] == "0-9_100"
    assert at.query_params["m"] == [SECOND, PIXELS]

    # a change made on the page lands in the link
    at.selectbox(key="map_colour").set_value("label").run()
    assert not at.exception, at.exception
    assert at.query_params["colour"] == "label"


def test_the_page_writes_a_link_that_reopens_the_same_view(embedded):
    first = AppTest.from_file(MAP_PAGE, default_timeout=180)
    first.session_state["dataset_spec"] = "demo:digits"
    first.session_state["map_models"] = [PIXELS]
    first.session_state["map_method"] = "PCA"
    first.session_state["map_colour"] = "label"
    first.session_state["map_selected_rows"] = np.array([5, 6, 7])
    first.run()
    assert not first.exception, first.exception
    link = dict(first.query_params)

    second = AppTest.from_file(MAP_PAGE, default_timeout=180)  # a new session, same URL
    for key, value in link.items():
        second.query_params[key] = value
    second.run()
    assert not second.exception, second.exception
    for key in ("dataset_spec", "map_models", "map_method", "map_colour"):
        assert second.session_state[key] == first.session_state[key], key
    assert second.session_state["map_selected_rows"].tolist() == [5, 6, 7]


def test_a_link_into_another_sessions_uploads_is_refused(embedded):
    other = Path(embedded) / "uploads" / "someone-else" / "upload-1" / "images"
    other.mkdir(parents=True)
    at = AppTest.from_file(DATA_PAGE, default_timeout=120)
    at.query_params["ds"] = f"folder:{other}"
    at.run()
    assert not at.exception, at.exception
    assert any("another visitor's uploads" in w.value for w in at.warning), at.warning
    shown = [c.value for c in at.code]
    assert "demo:digits" in shown and not any(v.startswith("folder:") for v in shown), shown
