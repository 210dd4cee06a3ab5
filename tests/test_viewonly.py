"""View-only mode: bundles browsed with no model library importable; bundle uploads; the
server-path check on typed specs.

The subprocess test makes torch, transformers, open_clip and umap unimportable (a meta-path
finder injected through ``sitecustomize`` on PYTHONPATH, see ``dashboard.viewonly``), runs every
page on the committed demo bundle and proves none of them was imported.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import viewonly
from tests.apptest_maps import scatter_maps
from tests.fakes import ArrayImageDataset, MeanColourModel

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")
DATA_PAGE = str(REPO / "pages" / "data.py")
MAP_PAGE = str(REPO / "pages" / "map.py")
DEMO = viewonly.DEMO_BUNDLE
N_ITEMS = 60


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    keys = ("PARALLAX_CACHE", "HF_HUB_OFFLINE", "PARALLAX_VIEW_ONLY", "PARALLAX_SERVER_PATHS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["PARALLAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.pop("PARALLAX_SERVER_PATHS", None)
    yield Path(os.environ["PARALLAX_CACHE"])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def view_only(monkeypatch):
    monkeypatch.setenv("PARALLAX_VIEW_ONLY", "1")
    monkeypatch.delenv("PARALLAX_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory) -> Path:
    """60 fake images x two weightless models, PCA maps only (quick to build)."""
    from engine.outputs.bundle import write_bundle
    from engine.store.cache import Cache

    tmp = tmp_path_factory.mktemp("bundle")
    path = tmp / "small.parallax.zip"
    models = [MeanColourModel(dim=16), MeanColourModel(dim=8, version="2")]
    write_bundle(
        ArrayImageDataset(N_ITEMS), models, path, methods=("pca",), cache=Cache(tmp / "producer")
    )
    return path


def _corrupt(src: Path, dst: Path) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "coords/0-pca.npy":
                data = data[:-4] + b"\0\0\0\1"
            zout.writestr(name, data)
    return dst


# -- the switch ---------------------------------------------------------------------------------
def test_view_only_is_decided_by_the_environment_then_by_torch(monkeypatch):
    monkeypatch.setenv("PARALLAX_VIEW_ONLY", "1")
    assert viewonly.is_view_only()
    assert viewonly.model_loadable("baseline:text")
    assert not viewonly.model_loadable("open_clip:ViT-B-32/laion2b_s34b_b79k")
    with pytest.raises(viewonly.ViewOnlyError, match="view-only: this deployment has no models"):
        viewonly.require_model("hf:openai/clip-vit-base-patch32")
    monkeypatch.setenv("PARALLAX_VIEW_ONLY", "off")
    assert not viewonly.is_view_only() and viewonly.model_loadable("hf:x/y")
    monkeypatch.delenv("PARALLAX_VIEW_ONLY")
    assert viewonly.is_view_only() == (not viewonly.models_installed())
    monkeypatch.setenv("PARALLAX_BUNDLE", "bundles/other.parallax.zip")
    assert viewonly.configured_bundle() == REPO / "bundles" / "other.parallax.zip"


def test_committed_demo_bundle_is_small_and_valid(tmp_path):
    if not DEMO.is_file():
        pytest.skip("bundles/demo-shapes.parallax.zip not built (scripts/make_demo_bundle.py)")
    from engine.data.bundle import open_bundle
    from engine.store.cache import Cache

    assert DEMO.stat().st_size < 8_000_000
    bundle = open_bundle(DEMO, cache=Cache(tmp_path))
    assert len(bundle.dataset) == 2000 and bundle.dataset.has_images
    assert {"baseline:pixels", "baseline:text"} <= set(bundle.model_specs)
    methods = {(p["model"], p["method"]) for p in bundle.manifest["projections"]}
    assert all((i, "umap") in methods for i in range(len(bundle.model_specs)))


def test_bundle_thumbnails_feed_the_hover_sprites(small_bundle, tmp_path):
    """engine.data.thumbnails works on a BundleDataset, whose images are the bundle's thumbnails."""
    from engine.data.bundle import open_bundle
    from engine.data.thumbnails import THUMB_SIZE, sheet_data_url, thumbnails
    from engine.store.cache import Cache

    cache = Cache(tmp_path)
    ds = open_bundle(small_bundle, cache=cache).dataset
    thumbs = thumbnails(ds, [0, N_ITEMS - 1], cache)
    assert [t.size for t in thumbs] == [(THUMB_SIZE, THUMB_SIZE)] * 2
    from engine.data.thumbnails import placeholder_tile

    original = np.asarray(ArrayImageDataset(N_ITEMS).load_image(0), float)
    got = np.asarray(thumbs[0], float)
    # the same picture (random 8x8 pixels, WebP-compressed): same mean colour; no placeholder
    assert np.abs(got.mean(axis=(0, 1)) - original.mean(axis=(0, 1))).max() < 12
    assert not np.array_equal(got, np.asarray(placeholder_tile(THUMB_SIZE), float))
    assert sheet_data_url(ds, 0, cache).startswith("data:image/webp;base64,")


# -- no heavy import ----------------------------------------------------------------------------
CHILD = r"""
import json, sys
from streamlit.testing.v1 import AppTest
from dashboard import viewonly
out = {"view_only": viewonly.is_view_only(), "torch_found": viewonly.models_installed()}

def run(page, **state):
    at = AppTest.from_file(f"{REPO}/{page}", default_timeout=600)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
    return at

def maps(at):
    return [json.loads(c.proto.json) for c in at.get("bidi_component")
            if c.proto.component_name == "parallax_scatter"]

home = run("pages/home.py")
out["home"] = {"charts": len(maps(home)), "errors": [e.value for e in home.error],
               "titles": [m["title"] for m in maps(home)]}
data = run("pages/data.py")
out["data"] = {"errors": [e.value for e in data.error], "code": [c.value for c in data.code]}
embed = run("pages/embed.py")
out["embed"] = {"info": [i.value for i in embed.info], "buttons": [b.label for b in embed.button]}
m = run("pages/map.py")
out["map"] = {"charts": len(maps(m)), "errors": [e.value for e in m.error],
              "titles": [mp["title"] for mp in maps(m)]}
m.session_state["map_selected_rows"] = __import__("numpy").array([7])
m.run()
out["map"]["neighbours"] = any(x.value.startswith("#### Item ") for x in m.markdown)
m.selectbox(key="map_query_model").set_value("baseline:text").run()
m.text_input(key="map_query").input("a red circle")
next(b for b in m.button if b.label == "Search").click().run()
assert not m.exception, [e.value for e in m.exception]
search = m.session_state["map_search"]
out["search"] = {"n": int(len(search["scores"])), "errors": [e.value for e in m.error]}
import os
if os.path.isfile(f"{REPO}/pages/compare.py"):  # another engineer's page: it must hold too
    cmp = run("pages/compare.py")
    out["compare"] = {"errors": [e.value for e in cmp.error]}
from dashboard import state
try:
    state.get_model("open_clip:ViT-B-32/laion2b_s34b_b79k")
    out["clip"] = "loaded?!"
except viewonly.ViewOnlyError as exc:
    out["clip"] = str(exc)
heavy = ("torch", "torchvision", "transformers", "open_clip", "umap", "sentence_transformers")
out["heavy"] = sorted({k.split(".")[0] for k in sys.modules} & set(heavy))
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_pages_render_with_no_model_library_importable(tmp_path):
    if not DEMO.is_file():
        pytest.skip("bundles/demo-shapes.parallax.zip not built (scripts/make_demo_bundle.py)")
    env = viewonly.no_models_env(tmp_path / "block")  # no flag: view-only because torch is gone
    env |= {"PARALLAX_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("PARALLAX_BUNDLE", None)
    proc = subprocess.run(
        [sys.executable, "-c", f"REPO = {str(REPO)!r}\n" + CHILD],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT ") :])
    assert out["view_only"] and not out["torch_found"]
    assert out["heavy"] == [], out["heavy"]
    # Home: two of the bundle's models side by side, their cached UMAP maps, at once, no error
    assert out["home"]["charts"] == 2 and not out["home"]["errors"], out["home"]
    assert all("UMAP" in t for t in out["home"]["titles"]), out["home"]["titles"]
    # Data: the bundle is the current dataset
    assert any(c.startswith("bundle:") for c in out["data"]["code"]), out["data"]
    # Embed: says view-only instead of offering to embed
    assert any("view-only: this deployment has no models" in i for i in out["embed"]["info"])
    assert "Embed" not in out["embed"]["buttons"]
    # Map: two models side by side from the bundle's cached UMAP maps; neighbours; search
    assert out["map"]["charts"] == 2 and not out["map"]["errors"], out["map"]
    assert all("UMAP" in t for t in out["map"]["titles"]), out["map"]["titles"]
    assert out["map"]["neighbours"]
    assert out["search"] == {"n": 2000, "errors": []}
    assert "view-only" in out["clip"]


# -- uploads -------------------------------------------------------------------------------------
def _upload(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="data_upload_files").set_value([(name, data, "application/zip")])
    at.run()
    assert not at.exception, at.exception
    return at


def test_uploaded_bundle_opens_and_its_map_renders(private_cache, view_only, small_bundle):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    at.switch_page(DATA_PAGE).run()
    assert not at.exception, at.exception
    _upload(at, "my-set.parallax.zip", small_bundle.read_bytes())
    from engine.store.cache import Cache
    from engine.store.links import resolve_link

    public = at.session_state["dataset_spec"]  # upload:<token>/<name>: no server path
    assert public.startswith("upload:") and public.endswith("/my-set.parallax.zip")
    spec = resolve_link(public, Cache(private_cache))[0]
    assert spec.startswith("bundle:") and spec.endswith("my-set.parallax.zip")
    assert Path(spec[len("bundle:") :]).is_relative_to(private_cache / "uploads")
    assert not [e.value for e in at.error]

    at.switch_page(MAP_PAGE).run()  # same session: the uploaded bundle's maps
    assert not at.exception, at.exception
    charts = scatter_maps(at)
    assert len(charts) == 2, ([i.value for i in at.info], [e.value for e in at.error])
    for m in charts:
        assert "PCA" in m["title"]  # no UMAP in this bundle: never computed
        assert m["n"] == N_ITEMS  # every point drawn
    assert any("No UMAP map" in c.value for c in at.caption)


def test_corrupt_bundle_upload_is_refused_clearly(private_cache, view_only, small_bundle, tmp_path):
    at = AppTest.from_file(DATA_PAGE, default_timeout=120)
    at.session_state["dataset_spec"] = "demo:digits"
    at.run()
    bad = _corrupt(small_bundle, tmp_path / "bad.parallax.zip")
    _upload(at, "bad.parallax.zip", bad.read_bytes())
    errors = [e.value for e in at.error]
    assert any("This upload cannot be used" in e and "checksum" in e for e in errors), errors
    assert at.session_state["dataset_spec"] == "demo:digits"

    at2 = AppTest.from_file(DATA_PAGE, default_timeout=120)
    at2.run()
    _upload(at2, "junk.parallax.zip", b"PK\x03\x04 certainly not a zip")
    errors = [e.value for e in at2.error]
    assert any("not a Parallax bundle" in e for e in errors), errors


# -- typed server paths ---------------------------------------------------------------------------
def _png_folder(folder: Path) -> Path:
    for label, colour in (("red", (220, 30, 30)), ("blue", (30, 70, 230))):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            image = Image.new("RGB", (16, 16), colour)
            image.putpixel((i, i), (i * 40, 0, 0))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            (folder / label / f"{i}.png").write_bytes(buf.getvalue())
    return folder


def _open_spec(at: AppTest, spec: str) -> AppTest:
    at.text_input(key="data_any_spec").set_value(spec).run()
    at.button(key="data_open_spec").click().run()
    assert not at.exception, at.exception
    return at


def test_typed_paths_into_another_sessions_uploads_are_refused(private_cache, tmp_path):
    other = _png_folder(private_cache / "uploads" / "0123456789abcdef" / "upload-x" / "images")
    at = AppTest.from_file(DATA_PAGE, default_timeout=120)
    at.session_state["dataset_spec"] = "demo:digits"
    at.session_state["_parallax_session"] = "a" * 32  # this session's id (see state.session_id)
    at.run()
    own = private_cache / "uploads" / ("a" * 32)
    for spec in (
        f"folder:{other}",
        f"folder:{own}/../0123456789abcdef/upload-x/images",  # `..` out of our own folder
        f"zip:{other.parent}/set.zip",
    ):
        _open_spec(at, spec)
        errors = [e.value for e in at.error]
        assert any("another visitor's uploads" in e for e in errors), (spec, errors)
        assert at.session_state["dataset_spec"] == "demo:digits"
    # this session's own upload folder is fine
    mine = _png_folder(own / "upload-y" / "images")
    _open_spec(at, f"folder:{mine}")
    assert at.session_state["dataset_spec"] == f"folder:{mine}"


def test_server_paths_allow_list(private_cache, tmp_path, monkeypatch):
    allowed = _png_folder(tmp_path / "allowed" / "pets")
    outside = _png_folder(tmp_path / "elsewhere" / "pets")
    monkeypatch.setenv("PARALLAX_SERVER_PATHS", str(tmp_path / "allowed"))
    at = AppTest.from_file(DATA_PAGE, default_timeout=120)
    at.session_state["dataset_spec"] = "demo:digits"
    at.run()
    _open_spec(at, f"folder:{outside}")
    errors = [e.value for e in at.error]
    assert any("PARALLAX_SERVER_PATHS" in e for e in errors), errors
    assert at.session_state["dataset_spec"] == "demo:digits"
    _open_spec(at, f"folder:{allowed}")
    assert at.session_state["dataset_spec"] == f"folder:{allowed}"
    monkeypatch.delenv("PARALLAX_SERVER_PATHS")
    _open_spec(at, f"folder:{outside}")  # unset: no server path at all (deny by default)
    assert any("opens no server paths" in e.value for e in at.error), at.error
    assert at.session_state["dataset_spec"] == f"folder:{allowed}"
