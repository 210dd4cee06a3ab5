"""Links to uploads through AppTest: an upload link reopens the dataset in a new session; a
refused link drops its selection instead of applying it to the fallback dataset."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import urlstate
from tests.apptest_maps import scatter_maps
from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
MAP = str(REPO / "pages" / "map.py")
TIMEOUT = 180


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


@pytest.fixture(scope="module")
def linked_upload(temp_cache):
    """A zip staged by another session, linked, and embedded with baseline:pixels."""
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache
    from engine.store.links import link_upload
    from engine.store.uploads import UploadFile, stage_upload

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(9):
            img = io.BytesIO()
            Image.new("RGB", (16, 16), (25 * i, 100, 0)).save(img, format="PNG")
            zf.writestr(f"set/{('a', 'b', 'c')[i % 3]}/{i}.png", img.getvalue())
    cache = Cache(temp_cache)
    staged = stage_upload([UploadFile("skimg.zip", buf.getvalue())], owner="other", cache=cache)
    public = link_upload(staged, "skimg.zip", cache)
    embed_dataset(open_dataset(public, cache_root=cache.root), "baseline:pixels", cache=cache)
    # the fallback dataset draws its map too, so a stray selection would be applied to it
    embed_dataset(open_dataset("demo:digits"), "baseline:pixels", cache=cache)
    return staged, public


def open_map_from(view: urlstate.View) -> AppTest:
    at = AppTest.from_file(MAP, default_timeout=TIMEOUT)
    for key, value in urlstate.encode_view(view).items():
        at.query_params[key] = value
    at.session_state["map_method"] = "PCA"
    at.run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.warning, *at.info, *at.error, *at.success]
    return "\n".join(str(p.value) for p in parts)


def test_an_upload_link_reopens_in_a_new_session_without_its_path(linked_upload):
    public = linked_upload[1]
    at = open_map_from(urlstate.View(dataset=public, models=["baseline:pixels"]))
    assert at.session_state["dataset_spec"] == public
    assert not at.error, [e.value for e in at.error]
    assert [m["n"] for m in scatter_maps(at)] == [9]  # the same dataset, mapped
    uploads = str(Path(os.environ["PARALLAX_CACHE"]) / "uploads")
    assert uploads not in page_text(at)


def test_a_refused_link_drops_its_selection(linked_upload):
    staged, _ = linked_upload  # another session's upload, by its server path: refused
    view = urlstate.View(dataset=staged, selection=np.array([1, 2, 3], dtype=np.int64))
    at = open_map_from(view)
    assert any("was not opened" in w.value for w in at.warning)
    assert "dataset_spec" not in at.session_state  # the default dataset stays
    assert [m["n"] for m in scatter_maps(at)] == [1797]  # the fallback, demo:digits, is drawn
    try:
        rows = at.session_state["map_selected_rows"]
    except KeyError:
        rows = []
    assert len(rows) == 0, "the link's rows belong to another dataset"


def open_page_from(page: str, query: dict[str, str], **state) -> AppTest:
    """A fresh session on ``page`` whose address is ``?query``: what a reload does."""
    at = AppTest.from_file(str(REPO / "pages" / page), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page", ["embed.py", "compare.py"])
def test_a_reload_keeps_the_upload_on_embed_and_compare(linked_upload, page):
    """Embed and Compare carry the dataset in their address: reloading one (a new session,
    the same address) reopens the upload instead of falling back to demo:digits."""
    public = linked_upload[1]
    first = open_page_from(page, {}, dataset_spec=public)
    assert first.query_params["ds"] == public  # the page wrote its view into the address
    again = open_page_from(page, {"ds": first.query_params["ds"]})  # the reload
    assert again.session_state["dataset_spec"] == public
    assert not again.error, [e.value for e in again.error]
    assert next(c.value for c in again.sidebar.code) == public  # the sidebar names it too
    assert any("skimg.zip" in m.value for m in [*again.markdown, *again.caption])


def test_compare_defaults_to_every_image_text_model_on_an_image_upload(linked_upload):
    from engine.models import known_models

    public = linked_upload[1]
    at = open_page_from("compare.py", {"ds": public}, compare_tab="Predictions on uploads")
    chosen = at.session_state["cmp_models"]
    clip_like = [
        m["spec"]
        for m in known_models()
        if {"image", "text"} <= set(m["modalities"]) and m["available_offline"]
    ]
    assert clip_like and set(chosen) == set(clip_like), chosen  # all of them, nothing else
    assert "baseline:text" not in chosen
    assert at.query_params["ds"] == public
