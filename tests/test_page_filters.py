"""Filters and named subsets on the Map page, through AppTest (demo:digits, two models)."""

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
MAP = str(REPO / "pages" / "map.py")
DATASET = "demo:digits"
PIXELS = "baseline:pixels"
SECOND = MeanColourModel(dim=16).spec
TIMEOUT = 180


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


@pytest.fixture(scope="module")
def ds(temp_cache):
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    cache = Cache(temp_cache)
    dataset = open_dataset(DATASET, cache_root=cache.root)
    embed_dataset(dataset, PIXELS, cache=cache)
    embed_dataset(dataset, MeanColourModel(dim=16), cache=cache)
    return dataset


def open_map(query: dict[str, str] | None = None, **state) -> AppTest:
    at = AppTest.from_file(MAP, default_timeout=TIMEOUT)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.session_state["dataset_spec"] = DATASET
    at.session_state["model_specs"] = [PIXELS]
    at.session_state["map_method"] = "PCA"
    at.session_state["map_models"] = [PIXELS, SECOND]
    for key, value in state.items():
        at.session_state[key] = value
    return run(at)


def serve_fake_model(monkeypatch, model) -> None:
    """The workspace (the one door) loads ``model`` for the fake spec; real specs as ever."""
    from engine.workspace import Workspace

    check, name, load = Workspace.check_model_spec, Workspace.check_model_name, Workspace.model
    monkeypatch.setattr(
        Workspace, "check_model_spec", lambda ws, spec: None if spec == SECOND else check(ws, spec)
    )
    monkeypatch.setattr(
        Workspace, "check_model_name", lambda ws, spec: None if spec == SECOND else name(ws, spec)
    )
    monkeypatch.setattr(
        Workspace,
        "model",
        lambda ws, spec, **kw: model if spec == SECOND else load(ws, spec, **kw),
    )


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def control(ds, column: str) -> str:
    return f"map_filter_{ds.fingerprint()[:8]}_{column}"


def test_a_label_filter_greys_the_rest_on_every_map_and_selects_the_matches(ds):
    at = open_map()
    at.multiselect(key=control(ds, "label")).set_value(["3"])
    run(at)
    threes = [i for i, lab in enumerate(ds.labels) if lab == "3"]
    for m in scatter_maps(at):  # only the matching class keeps a colour, on both maps
        assert [(x["label"], x["count"]) for x in m["colours"]["legend"]] == [("3", len(threes))]
    assert any(f"**{len(threes):,} of 1,797 items** match" in m.value for m in at.markdown)
    next(b for b in at.button if b.label.startswith("Select the")).click()
    run(at)
    assert at.session_state["map_selected_rows"].tolist() == threes
    assert all(selected(m) == threes for m in scatter_maps(at))


def test_a_metadata_range_and_a_label_combine(ds):
    at = open_map()
    at.slider(key=control(ds, "digit")).set_value((2.0, 4.0))
    run(at)
    digits = ds.metadata()["digit"].to_numpy()
    in_range = int(((digits >= 2) & (digits <= 4)).sum())
    assert any(f"**{in_range:,} of 1,797 items** match" in m.value for m in at.markdown)
    at.multiselect(key=control(ds, "label")).set_value(["4", "7"])
    run(at)
    both = int((digits == 4).sum())  # label 7 is outside the digit range
    (legend,) = {
        tuple((x["label"], x["count"]) for x in m["colours"]["legend"]) for m in scatter_maps(at)
    }
    assert legend == (("4", both),)


def test_keep_a_selection_as_a_subset_and_reopen_it_from_a_link(ds):
    rows = np.array([3, 10, 42])
    at = open_map(map_selected_rows=rows)
    name_box = next(t for t in at.text_input if t.label.startswith("Keep the 3 selected"))
    name_box.set_value("three odd ones")
    next(b for b in at.button if b.label == "Keep").click()
    run(at)
    assert any("Kept 3 item(s) as **three odd ones**" in s.value for s in at.success)
    assert at.selectbox(key="map_subset_pick").value == "three odd ones"
    link = next(c.value for c in at.code if "subset=" in c.value)
    token = link.rpartition("subset=")[2]
    assert "three" not in token and len(token) >= 16  # an unguessable token, not the name
    # another visit: nothing selected, the link's subset is selected on every map
    fresh = open_map(query={"subset": token})
    assert fresh.session_state["map_selected_rows"].tolist() == rows.tolist()
    assert all(selected(m) == rows.tolist() for m in scatter_maps(fresh))
    # the subset stays its keeper's: the other visitor's list does not show it (issue 27)
    assert not any(s.key == "map_subset_pick" for s in fresh.selectbox)
    # its keeper deletes it: the link no longer opens it
    next(b for b in at.button if b.label == "Delete").click()
    run(at)
    gone = open_map(query={"subset": token})
    assert any("subset was not opened" in w.value for w in gone.warning)


def test_a_link_to_a_missing_subset_says_so_and_selects_nothing(ds):
    at = open_map(query={"subset": "no such thing"})
    assert any("subset was not opened" in w.value for w in at.warning)
    assert "map_selected_rows" not in at.session_state or not len(
        at.session_state["map_selected_rows"]
    )


def test_text_search_names_the_words_the_model_does_not_know(ds, monkeypatch):
    class KnowsThreeWords(MeanColourModel):
        def unknown_words(self, text: str) -> list[str]:
            return [w for w in text.split() if w not in {"a", "round", "zero"}]

    serve_fake_model(monkeypatch, KnowsThreeWords(dim=16))
    at = open_map()
    at.selectbox(key="map_query_model").set_value(SECOND)
    run(at)
    at.text_input(key="map_query").input("a round astronaut")
    next(b for b in at.button if b.label == "Search").click()
    run(at)
    (banner,) = [w.value for w in at.warning]
    assert "does not know 'astronaut'" in banner and "'a round'" in banner
