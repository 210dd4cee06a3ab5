"""The item view through AppTest: one item's detail and its neighbours under every model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

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
def embedded(temp_cache):
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    cache = Cache(temp_cache)
    ds = open_dataset(DATASET, cache_root=cache.root)
    a = embed_dataset(ds, PIXELS, cache=cache)
    b = embed_dataset(ds, MeanColourModel(dim=16), cache=cache)
    return ds, {PIXELS: np.load(a.path), SECOND: np.load(b.path)}


def open_map(**state) -> AppTest:
    at = AppTest.from_file(MAP, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = DATASET
    at.session_state["model_specs"] = [PIXELS]
    at.session_state["map_method"] = "PCA"
    at.session_state["map_models"] = [PIXELS, SECOND]
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_one_selected_item_opens_with_every_models_neighbours(embedded):
    from engine.analysis.item_neighbours import item_neighbours

    ds, vectors = embedded
    at = open_map(map_selected_rows=np.array([7]))
    assert any(m.value == f"#### Item {ds.ids[7]}" for m in at.markdown)
    fields = next(d.value for d in at.dataframe if "field" in d.value.columns)
    assert fields.set_index("field").loc["label", "value"] == str(ds.labels[7])
    k = at.number_input(key="map_item_k").value
    direct = item_neighbours(vectors, 7, k)
    # the full item, the selection gallery's thumbnail, then k neighbours per model
    captions = [img.caption for im in at.image for img in im.proto.imgs]
    assert len(captions) == 2 + 2 * k
    for j, m in enumerate(direct.models):
        shown = captions[2 + j * k : 2 + (j + 1) * k]  # two thumbnail columns per model
        got = {c.split(" · ")[0]: float(c.split(" · ")[2].split()[0]) for c in shown}
        want = {str(ds.ids[r]): c for r, c in zip(m.rows, m.cosines, strict=True)}
        assert got.keys() == want.keys()
        assert [got[i] for i in want] == pytest.approx(list(want.values()), abs=1e-3)
    overlap = next(d.value for d in at.dataframe if list(d.value.columns) == [PIXELS, SECOND])
    assert overlap.to_numpy().tolist() == direct.overlap_matrix()[1].tolist()
    # fewer neighbours: the view follows
    at.number_input(key="map_item_k").set_value(3).run()
    assert not at.exception, at.exception
    assert len(at.image) == 2 + 2 * 3


def test_an_item_of_a_larger_selection_opens_from_the_menu(embedded):
    ds, _ = embedded
    at = open_map(map_selected_rows=np.array([3, 10, 42]))
    assert not any(m.value.startswith("#### Item") for m in at.markdown)
    at.selectbox(key="map_pick").set_value(42).run()
    assert not at.exception, at.exception
    assert any(m.value == f"#### Item {ds.ids[42]}" for m in at.markdown)
