"""A hostile visitor of a shared deployment (issue 21): one test per finding.

Each test plays the attacker through the surface a visitor has (a page, a link, an upload, a
bundle) and checks the server, the other visitors and the cache come out untouched. The
attacks are generated inside the tests; nothing hostile is committed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.store.cache import Cache
from engine.store.links import resolve_link, source_kind
from tests.hostile_bundles import (
    DEMO_BUNDLE,
    genuine_map,
    home_bundle_impostor,
    lookalike_bundle,
    rebundle,
)

REPO = Path(__file__).resolve().parent.parent
DATA_PAGE = str(REPO / "pages" / "data.py")
EMBED_PAGE = str(REPO / "pages" / "embed.py")
ENV_KEYS = ("PARALLAX_CACHE", "HF_HUB_OFFLINE", "PARALLAX_SERVER_PATHS", "PARALLAX_VIEW_ONLY")


@pytest.fixture
def deployment(tmp_path, monkeypatch):
    """A shared deployment as documented for Community Cloud: a private cache, no
    ``PARALLAX_SERVER_PATHS`` (it is optional there), the full app."""
    cache = tmp_path / "repo" / "cache"
    cache.mkdir(parents=True)
    monkeypatch.setenv("PARALLAX_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PARALLAX_VIEW_ONLY", "0")
    monkeypatch.delenv("PARALLAX_SERVER_PATHS", raising=False)
    monkeypatch.delenv("PARALLAX_BUNDLE", raising=False)
    return cache


def _png(colour: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(folder: Path, n: int = 3) -> Path:
    for label, colour in (("red", (200, 20, 20)), ("blue", (20, 20, 200))):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / label / f"{i}.png").write_bytes(_png((colour[0], i * 30, colour[2])))
    return folder


def _session(page: str = DATA_PAGE, owner: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(page, default_timeout=180)
    at.session_state["dataset_spec"] = "demo:digits"
    if owner is not None:
        at.session_state["_parallax_session"] = owner
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _open_spec(at: AppTest, spec: str) -> list[str]:
    at.text_input(key="data_any_spec").set_value(spec).run()
    at.button(key="data_open_spec").click().run()
    assert not at.exception, at.exception
    return [e.value for e in at.error]


def _shown(at: AppTest) -> str:
    parts = [*at.code, *at.markdown, *at.caption, *at.success, *at.error, *at.warning]
    frames = [df.value.to_csv() for df in at.dataframe]
    return " ".join(str(p.value) for p in parts) + " ".join(frames)


# -- critical: code execution from the page -----------------------------------------------------
def _remote_code_folder(folder: Path, marker: Path) -> Path:
    """A transformers folder whose config asks for remote code that writes ``marker``."""
    folder.mkdir(parents=True)
    payload = f"open({str(marker)!r}, 'w').write('pwned')\n"
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {
                    "AutoConfig": "configuration_evil.EvilConfig",
                    "AutoModel": "modeling_evil.EvilModel",
                },
            }
        )
    )
    config_src = (
        payload + "from transformers import PretrainedConfig\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    (folder / "configuration_evil.py").write_text(config_src)
    (folder / "modeling_evil.py").write_text(payload)
    return folder


def test_remote_code_from_a_link_or_a_typed_spec_never_runs(deployment, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    marker = tmp_path / "pwned.txt"
    # The visitor's own upload folder: the one place on the server a visitor can write.
    owner = "a" * 32
    upload = deployment / "uploads" / owner / "upload-1"
    folder = _remote_code_folder(upload / "evil-model", marker)
    spec = f"hf:{folder}?trust_remote_code=1"
    # 1. a link preselects it for a victim (the app restores links), who presses Embed
    app = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=180)
    app.query_params["ds"] = "demo:sentences"
    app.query_params["m"] = [spec]
    app.run()
    assert not app.exception, app.exception
    app.switch_page("../pages/embed.py").run()
    assert not app.exception, app.exception
    for button in [b for b in app.button if b.label == "Embed" and not b.disabled]:
        button.click().run()
    assert not marker.exists(), "a link made the server run the visitor's Python"
    assert spec not in app.session_state["model_specs"]
    # 2. the attacker types it (and the other local-path spellings) on the Embed page
    at = _session(EMBED_PAGE, owner=owner, dataset_spec="demo:sentences")
    for typed in (
        spec,
        f"hf:{folder}",
        f"st:{folder}",
        f"open_clip:local-dir:{folder}",
        f"open_clip:ViT-B-32/{folder}/weights.safetensors",
        "hf:/",
    ):
        at.session_state["model_specs"] = ["baseline:text"]
        at.text_input(key=at.text_input[0].key).set_value(typed)
        next(b for b in at.button if b.label == "Add").click().run()
        assert not at.exception, at.exception
        refusals = [e.value for e in at.error if "refused" in e.value]
        if typed == spec:
            for button in [b for b in at.button if b.label == "Embed" and not b.disabled]:
                button.click().run()
            assert not marker.exists(), "a typed spec made the server run the visitor's Python"
        assert typed not in at.session_state["model_specs"], typed
        assert refusals, (typed, [e.value for e in at.error])


def test_shipped_aliases_and_hub_names_stay_allowed(deployment, monkeypatch):
    from engine import settings
    from engine.policy import VisitorPolicy

    policy = VisitorPolicy.for_visitor(deployment, "b" * 32)
    for spec in ("demo:shapes-clip", "baseline:pixels", "st:all-MiniLM-L6-v2"):
        policy.check_model_spec(spec)  # raises if refused (default budget: 1 GiB deployment)
    # The catalogue's CLIPs are ~600 MB of weights: over a 1 GiB deployment's model budget,
    # allowed once the operator sizes it for them; an operator-listed hub name likewise.
    for spec in ("hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-32/laion2b_s34b_b79k"):
        with pytest.raises(Exception, match="PARALLAX_MAX_MODEL_BYTES"):
            policy.check_model_spec(spec)
    monkeypatch.setattr(settings, "MAX_MODEL_BYTES", 2 * 1024**3)
    monkeypatch.setattr(settings, "VISITOR_MODELS", ("open_clip:hf-hub:timm/ViT-B-16-SigLIP",))
    for spec in (
        "hf:openai/clip-vit-base-patch32",
        "open_clip:ViT-B-32/laion2b_s34b_b79k",
        "open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "open_clip:hf-hub:timm/ViT-B-16-SigLIP",
    ):
        policy.check_model_spec(spec)
    for spec in ("hf:openai/clip-vit-base-patch32?trust_remote_code=1", "hf:/etc", "st:~"):
        with pytest.raises(Exception, match="refused"):
            policy.check_model_spec(spec)


# -- critical: server files readable by any visitor ---------------------------------------------
def test_server_paths_are_denied_by_default(deployment, tmp_path):
    server = _image_folder(tmp_path / "server-data")
    secrets = tmp_path / "server-data" / "users.csv"
    secrets.write_text("text,password\nhello,hunter2\nworld,swordfish\n")
    at = _session()
    for spec in (f"folder:{server}", f"manifest:{secrets}", "folder:/etc", "folder:/proc/self"):
        errors = _open_spec(at, spec)
        assert any("refused" in e for e in errors), (spec, errors)
        assert at.session_state["dataset_spec"] == "demo:digits"
    at.text_input(key="data_folder_path").set_value("/").run()
    at.button(key="data_open_folder").click().run()
    assert any("refused" in e.value for e in at.error)
    assert at.session_state["dataset_spec"] == "demo:digits"
    assert "hunter2" not in _shown(at)
    # a link opening a server folder on visit
    link = AppTest.from_file(DATA_PAGE, default_timeout=120)
    link.query_params["ds"] = f"folder:{server}"
    link.run()
    assert not link.exception
    assert "dataset_spec" not in link.session_state  # the default dataset stays
    assert any("refused" in w.value for w in link.warning)


def test_operator_roots_open_and_nothing_else(deployment, tmp_path, monkeypatch):
    allowed = _image_folder(tmp_path / "shared" / "pets")
    elsewhere = _image_folder(tmp_path / "private" / "pets")
    monkeypatch.setenv("PARALLAX_SERVER_PATHS", str(tmp_path / "shared"))
    at = _session()
    assert any("refused" in e for e in _open_spec(at, f"folder:{elsewhere}"))
    assert any("refused" in e for e in _open_spec(at, f"folder:{allowed}/../../private/pets"))
    assert not _open_spec(at, f"folder:{allowed}")
    assert at.session_state["dataset_spec"] == f"folder:{allowed}"


# -- critical: other visitors' uploads through a parent folder ----------------------------------
def test_other_visitors_uploads_are_unreachable_even_through_a_parent(
    deployment, tmp_path, monkeypatch
):
    # The operator lists the repository as the docs suggest; the cache lives inside it.
    monkeypatch.setenv("PARALLAX_SERVER_PATHS", str(deployment.parent))
    victim = _session()
    victim.file_uploader(key="data_upload_files").set_value(
        [("secret-face.png", _png((1, 2, 3)), "image/png")]
    )
    victim.run()
    assert not victim.exception
    assert source_kind(victim.session_state["dataset_spec"], Cache(deployment)) == "folder"
    attacker = _session()
    for spec in (
        f"folder:{deployment.parent}",
        f"folder:{deployment}",
        f"folder:{deployment / 'uploads'}",
        f"folder:{deployment / 'extracted'}",
        f"folder:{deployment / 'uploads' / '..' / 'uploads'}",
    ):
        errors = _open_spec(attacker, spec)
        assert any("refused" in e for e in errors), (spec, errors)
        assert attacker.session_state["dataset_spec"] == "demo:digits"
    assert "secret-face" not in _shown(attacker)


# -- critical: one visitor changes what every visitor sees ---------------------------------------
def _rezip(bundle: Path, out: Path, edit) -> Path:
    """``bundle`` with only its manifest changed by ``edit(manifest)``."""
    return rebundle(bundle, out, lambda members, manifest: edit(manifest))


@pytest.fixture(scope="module")
def digits_lookalike_bundle(tmp_path_factory) -> Path:
    """A 1,797-item bundle of random images (baseline:pixels), built once."""
    return lookalike_bundle(tmp_path_factory.mktemp("lookalike"))


def test_a_bundle_cannot_replace_the_demo_for_everyone(deployment, digits_lookalike_bundle):
    from engine.data import open_dataset
    from engine.data.bundle import open_bundle
    from engine.data.thumbnails import thumbs_dir
    from engine.embed.local import embed_dataset, vectors_key
    from engine.maps.project import project, projection_key
    from engine.models import load_model
    from engine.store.cache import Cache

    demo = open_dataset("demo:digits")
    pixels = load_model("baseline:pixels")
    home_key = vectors_key(demo, pixels, "image")
    pca_key = projection_key(home_key, "pca", {"seed": 0})

    def claim_the_demo(manifest: dict) -> None:
        manifest["dataset"]["fingerprint"] = demo.fingerprint()
        model = manifest["models"][0]
        model["vectors_key"] = home_key
        model["vectors_manifest"]["dataset_fingerprint"] = demo.fingerprint()
        for proj in manifest["projections"]:
            proj["key"] = pca_key
            proj["params"] = {"seed": 0}

    hostile = _rezip(digits_lookalike_bundle, deployment / "hostile.parallax.zip", claim_the_demo)
    cache = Cache(deployment)
    bundle = open_bundle(hostile, cache=cache)  # the attacker's session opens it
    assert bundle.dataset.fingerprint() != demo.fingerprint()
    assert thumbs_dir(bundle.dataset, cache) != thumbs_dir(demo, cache)
    # a victim's Home map afterwards: the demo's own vectors and map, not the attacker's
    clean = Cache(deployment.parent / "clean-cache")
    truth = embed_dataset(demo, pixels, cache=clean)
    seen = embed_dataset(demo, pixels, cache=cache)
    assert np.array_equal(np.load(seen.path), np.load(truth.path))
    victim_map = project(cache.get("vectors", seen.key), "pca", cache=cache).coords()
    true_map = project(clean.get("vectors", truth.key), "pca", cache=clean).coords()
    assert np.allclose(victim_map, true_map)


def test_an_uploaded_impostor_bundle_changes_nothing_for_another_session(deployment, tmp_path):
    """Two AppTest sessions: before anyone opened Home, the attacker uploads a copy of the demo
    bundle that keeps all its claims (fingerprint, keys) but scrambles its maps; the victim's
    Home then opens the real demo bundle, whose maps must be the real ones."""
    from engine.data.bundle import open_bundle
    from engine.maps.project import project
    from engine.store.cache import Cache
    from engine.store.catalog import embeddings_by

    if not DEMO_BUNDLE.is_file():
        pytest.skip("bundles/demo-shapes.parallax.zip not built")
    impostor = home_bundle_impostor(tmp_path / "attack")
    attacker = _session()
    attacker.file_uploader(key="data_upload_files").set_value(
        [(impostor.name, impostor.read_bytes(), "application/zip")]
    )
    attacker.run()
    assert not attacker.exception, attacker.exception
    # The session holds the upload's public link; behind it, the staged bundle.
    staged, _ = resolve_link(attacker.session_state["dataset_spec"], Cache(deployment))
    assert staged.startswith("bundle:")
    victim = AppTest.from_file(str(REPO / "pages" / "home.py"), default_timeout=300)
    victim.run()
    assert not victim.exception, victim.exception
    assert not victim.error, [e.value for e in victim.error]
    # What the victim's Home drew: the demo bundle's first model's cached UMAP map.
    cache = Cache(deployment)
    real = open_bundle(DEMO_BUNDLE, cache=cache)
    (entry,) = embeddings_by(real.dataset, real.model_specs[0], cache)
    shown = project(entry, "umap", cache=cache)
    assert shown.cached
    np.testing.assert_allclose(shown.coords(), genuine_map(0, "umap"), atol=1e-5)
    attackers_upload = staged.removeprefix("bundle:")
    assert attackers_upload not in _shown(victim)


# -- critical: writes outside the cache -----------------------------------------------------------
@pytest.mark.parametrize("fingerprint", ["../../escaped", "/tmp/parallax-h4-escaped-thumbs"])
def test_a_bundle_fingerprint_never_becomes_a_path(
    deployment, digits_lookalike_bundle, fingerprint, tmp_path
):
    from engine.data.bundle import open_bundle
    from engine.data.thumbnails import get_sheet
    from engine.store.cache import Cache

    def lie(manifest: dict) -> None:
        manifest["dataset"]["fingerprint"] = fingerprint

    hostile = _rezip(digits_lookalike_bundle, tmp_path / "fp.parallax.zip", lie)
    cache = Cache(deployment)
    outside = {p for p in deployment.parent.parent.rglob("*") if "cache" not in p.parts}
    try:
        bundle = open_bundle(hostile, cache=cache)
        get_sheet(bundle.dataset, 0, cache)
    except Exception as exc:  # refusing the bundle is fine too, if it says so in one line
        from engine.errors import ParallaxError

        assert isinstance(exc, ParallaxError), exc
    after = {p for p in deployment.parent.parent.rglob("*") if "cache" not in p.parts}
    assert after - outside <= {hostile}, after - outside
    assert not Path("/tmp/parallax-h4-escaped-thumbs").exists()


def test_bundle_cache_keys_must_be_digests(deployment, digits_lookalike_bundle, tmp_path):
    from engine.data.bundle import open_bundle
    from engine.store.cache import Cache

    def lie(manifest: dict) -> None:
        manifest["models"][0]["vectors_key"] = "not-a-digest"
        manifest["projections"][0]["key"] = "x"

    hostile = _rezip(digits_lookalike_bundle, tmp_path / "keys.parallax.zip", lie)
    cache = Cache(deployment)
    open_bundle(hostile, cache=cache)
    names = {e.key for e in cache.entries()}
    assert "not-a-digest" not in names and "x" not in names
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in names), names


# -- critical: a full disk kills the server -------------------------------------------------------
_FULL_DISK_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from tests.fakes import ArrayImageDataset, MeanColourModel
from engine.store.cache import Cache
from engine.embed.local import embed_dataset
from engine.errors import ParallaxError

try:
    embed_dataset(
        ArrayImageDataset(1200, texts=False), MeanColourModel(dim=1024), cache=Cache({cache!r})
    )
except ParallaxError as exc:
    print("ERROR:", exc)
    sys.exit(2)
print("OK")
"""


def test_a_full_disk_while_writing_vectors_is_one_error_not_a_crash(tmp_path):
    """Shards (4.9 MB) fit on a 7 MB disk, the final 4.9 MB file does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=7m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("needs a small tmpfs (root): " + mounted.stderr.decode()[:200])
    try:
        code = _FULL_DISK_CHILD.format(repo=str(REPO), cache=str(disk / "cache"))
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "disk is full" in done.stdout
    assert "Traceback" not in done.stderr


# -- high: tracebacks shown to visitors -----------------------------------------------------------
def _bundle_with(tmp_path: Path, source: Path, name: str, edit_members) -> Path:
    """``source`` with members replaced by ``edit_members(members, manifest)`` (checksums
    recomputed, so only the content is hostile)."""
    return rebundle(source, tmp_path / name, edit_members)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _malformed_bundles(tmp_path: Path, good: Path) -> dict[str, Path]:
    def nan_vectors(members, manifest):
        v = np.load(io.BytesIO(members["vectors/0.npy"])).copy()
        v[3, :] = np.nan
        v[4, 0] = np.inf
        members["vectors/0.npy"] = _npy(v)

    def no_models(members, manifest):
        manifest["models"] = "none"

    def dataset_not_a_dict(members, manifest):
        manifest["dataset"] = ["x"]

    def missing_n(members, manifest):
        del manifest["dataset"]["n"]

    def projection_of_model_9(members, manifest):
        manifest["projections"][0]["model"] = 9

    def dim_is_text(members, manifest):
        manifest["models"][0]["dim"] = "wide"

    return {
        name: _bundle_with(tmp_path, good, f"{name}.parallax.zip", fn)
        for name, fn in {
            "nan_vectors": nan_vectors,
            "no_models": no_models,
            "dataset_not_a_dict": dataset_not_a_dict,
            "missing_n": missing_n,
            "projection_of_model_9": projection_of_model_9,
            "dim_is_text": dim_is_text,
        }.items()
    }


def test_malformed_bundles_are_one_line(deployment, digits_lookalike_bundle, tmp_path):
    from engine.data.bundle import BundleError, open_bundle
    from engine.store.cache import Cache

    for name, path in _malformed_bundles(tmp_path, digits_lookalike_bundle).items():
        with pytest.raises(BundleError) as info:
            open_bundle(path, cache=Cache(deployment))
        assert "\n" not in str(info.value), name


@pytest.mark.parametrize(
    "name,content",
    [
        ("header-only.csv", b"image,text,label\n"),
        ("empty.csv", b""),
        ("empty.jsonl", b"\n\n"),
        ("no-rows.parquet", None),
    ],
)
def test_empty_tables_are_one_line(deployment, tmp_path, name, content):
    from engine.data import open_dataset
    from engine.errors import DatasetError

    path = tmp_path / name
    if content is None:
        import pandas as pd

        pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DatasetError) as info:
        open_dataset(f"manifest:{path}", cache_root=deployment)
    assert "\n" not in str(info.value)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_datasets_are_one_line_in_the_cli(deployment, tmp_path, n):
    manifest = tmp_path / "tiny.csv"
    manifest.write_text("text\n" + "".join(f"sentence number {i}\n" for i in range(n)))
    spec = f"manifest:{manifest}"
    env = {"PARALLAX_CACHE": str(deployment)}
    for args in (
        ("project", "--dataset", spec, "--model", "baseline:text", "--method", "pca", "--quality"),
        ("bundle", "--dataset", spec, "--model", "baseline:text", "--out", str(tmp_path / "b.zip")),
    ):
        done = _cli(*args, env=env)
        assert "Traceback" not in done.stderr, (args, done.stderr[-3000:])
        assert done.returncode in (0, 2), (args, done.returncode, done.stderr[-1000:])


def test_hf_root_is_one_quick_line_in_the_cli(deployment):
    done = _cli(
        "embed", "--dataset", "demo:sentences", "--model", "hf:/",
        env={"PARALLAX_CACHE": str(deployment)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]


def test_a_redirect_to_ftp_is_a_per_item_reason(deployment, tmp_path, monkeypatch):
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "ftp://example.com/x.png")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")
    manifest = tmp_path / "urls.csv"
    url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
    manifest.write_text(f"image,text\n{url},one\n{url},two\n")
    try:
        from engine.data import open_dataset

        ds = open_dataset(f"manifest:{manifest}", cache_root=deployment)
    finally:
        server.shutdown()
    reasons = [s.reason for s in ds.skipped] + list(getattr(ds, "image_errors", {}).values())
    assert reasons and all("\n" not in r for r in reasons), reasons
    assert any("non-HTTP" in r for r in reasons), reasons


def test_unexpected_errors_keep_the_traceback_off_the_page(deployment, caplog):
    """With the repository's config (``client.showErrorDetails = "type"``), a bug shows one
    line and no traceback; the traceback goes to the server log."""
    from streamlit import config as st_config

    def page():
        from dashboard import ui

        with ui.guard("Opening the dataset"):
            [][0]  # a bug: IndexError

    saved = st_config.get_option("client.showErrorDetails")
    st_config.set_option("client.showErrorDetails", "type")
    try:
        at = AppTest.from_function(page, default_timeout=60)
        with caplog.at_level("ERROR", logger="parallax.dashboard"):
            at.run()
    finally:
        st_config.set_option("client.showErrorDetails", saved)
    assert not at.exception, at.exception
    assert at.error and "IndexError" in at.error[0].value
    assert not at.expander, "no Details expander for visitors"
    assert "Traceback" not in _shown(at)
    assert any(r.exc_info for r in caplog.records), "the traceback goes to the server log"


def test_untrusted_strings_are_never_markdown(deployment):
    """A link's dataset spec and error lines are shown as text: no image is fetched."""
    evil = "manifest:![x](http://attacker.invalid/pixel.png)"
    at = AppTest.from_file(EMBED_PAGE, default_timeout=120)
    at.query_params["ds"] = evil
    at.run()
    assert not at.exception
    at = _session(EMBED_PAGE, dataset_spec="demo:sentences")
    at.session_state["dataset_spec"] = evil
    at.run()
    for el in [*at.markdown, *at.error, *at.warning, *at.caption, *at.info]:
        assert "![x](" not in el.value, el.value


# -- issue 27: deny by default for every kind ----------------------------------------------------
def _server_parquet(folder: Path) -> Path:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": ["alice", "bob"], "password": ["hunter2", "swordfish"]}).to_parquet(
        folder / "users.parquet"
    )
    return folder


def test_hfds_falls_under_the_path_policy_in_any_case(deployment, tmp_path):
    """``?ds=hfds:/any/server/dir`` showed a server Parquet's password column, and
    ``hfds:<cache>/uploads`` other visitors' uploads: the kinds table makes ``hfds:`` a
    path-carrying kind like the others, whatever its letter case."""
    from engine.policy import DatasetRefused
    from engine.workspace import Workspace

    pytest.importorskip("datasets")
    server = _server_parquet(tmp_path / "srv")
    victim = Workspace(deployment).visitor("v" * 32)
    Path(deployment / "uploads" / ("v" * 32) / "upload-1").mkdir(parents=True)
    _server_parquet(deployment / "uploads" / ("v" * 32) / "upload-1")
    attacker = Workspace(deployment).visitor("a" * 32)
    for spec in (
        f"hfds:{server}",
        f"HFDS:{server}",
        f"Hfds:{server}?split=train",
        f"hfds:{deployment / 'uploads'}",
        f"hfds:{deployment}",
        "hfds:/",
        f"hfds:{server}/../srv",
    ):
        with pytest.raises(DatasetRefused, match="refused") as err:
            attacker.open(spec)
        assert "\n" not in str(err.value)
    # the visitor's own upload still opens, and the operator (no policy) keeps full freedom
    own = victim.open(f"hfds:{deployment / 'uploads' / ('v' * 32) / 'upload-1'}")
    assert len(own) == 2
    assert len(Workspace(deployment).open(f"hfds:{server}")) == 2


def test_every_visitor_kind_is_in_the_table_and_unknown_kinds_are_refused(deployment):
    from engine.data import DATASET_KINDS
    from engine.errors import DatasetError
    from engine.policy import VisitorPolicy

    policy = VisitorPolicy.for_visitor(deployment, "a" * 32)
    for kind, row in DATASET_KINDS.items():
        if row.path_of("/etc") is not None:  # a path-carrying kind: refused outside the roots
            with pytest.raises(DatasetError, match="refused"):
                policy.check_dataset_spec(f"{kind}:/etc")
    with pytest.raises(DatasetError):
        policy.check_dataset_spec("sqlite:/etc/passwd")
    policy.check_dataset_spec("demo:digits")
    policy.check_dataset_spec("hfds:someone/some-dataset")  # a hub name carries no path


def test_random_and_arbitrary_architectures_are_never_built_for_a_visitor(deployment):
    """60-byte requests built ViT-B-32, ViT-L-14, ViT-bigG-14 with random weights (13 GB
    held): visitors' model specs come from an allow-list with sizes known up front."""
    from engine.models.registry import loaded_models
    from engine.policy import ModelRefused
    from engine.workspace import Workspace

    ws = Workspace(deployment).visitor("a" * 32)
    before = len(loaded_models())
    for spec in (
        "open_clip:ViT-bigG-14/random",
        "open_clip:ViT-L-14/random",
        "open_clip:ViT-B-32/random",
        "open_clip:ViT-bigG-14/laion2b_s39b_b160k",
        "hf:someone/huge-model",
        "st:someone/any-model",
        "open_clip:hf-hub:someone/any",
        "OPEN_CLIP:ViT-B-32/random",
    ):
        with pytest.raises(ModelRefused, match="refused") as err:
            ws.model(spec)
        assert "\n" not in str(err.value)
    assert len(loaded_models()) == before  # nothing was built
    with pytest.raises(ModelRefused, match="PARALLAX_MAX_MODEL_BYTES"):
        ws.check_model_spec("hf:google/siglip-base-patch16-224")  # 813 MB > 512 MB budget
    ws.check_model_spec("demo:shapes-clip")
    ws.check_model_spec("baseline:pixels")
    Workspace(deployment).check_model_spec("open_clip:ViT-bigG-14/random")  # the operator


def test_a_models_size_is_known_before_it_is_built():
    from engine.models.registry import model_param_bytes

    assert model_param_bytes("baseline:pixels") == 0
    assert 80e6 < model_param_bytes("st:all-MiniLM-L6-v2") < 100e6
    assert 500e6 < model_param_bytes("open_clip:ViT-B-32/laion2b_s34b_b79k") < 700e6
    assert model_param_bytes("open_clip:ViT-bigG-14/random") is None
    assert 0 < model_param_bytes("demo:shapes-clip") < 20e6  # its weight files, by stat


def test_model_listings_name_no_server_path():
    from engine.models.registry import known_models
    from engine.settings import REPO_ROOT

    for row in known_models():
        assert str(REPO_ROOT) not in json.dumps(row), row
        assert "local-dir:/" not in row["description"], row


# -- issue 27: subsets belong to whoever kept them -----------------------------------------------
def test_subsets_are_per_visitor_shared_by_link_and_deletable(deployment):
    from engine.data import open_dataset
    from engine.errors import ParallaxError
    from engine.store import subsets

    cache = Cache(deployment)
    ds = open_dataset("demo:sentences", cache_root=deployment)
    alice, mallory = "a" * 32, "m" * 32
    mine = subsets.save_subset(ds, "my picks", [1, 2, 3], cache, owner=alice)
    subsets.save_subset(ds, "my picks", [7, 8], cache, owner=mallory)  # no overwrite now
    subsets.save_subset(ds, "Click here: free prizes", [0], cache, owner=mallory)
    assert [s.rows.tolist() for s in subsets.list_subsets(ds, cache, owner=alice)] == [[1, 2, 3]]
    assert {s.name for s in subsets.list_subsets(ds, cache, owner="n" * 32)} == set()
    assert subsets.list_subsets(ds, cache) == []  # the operator's list is the operator's
    # the link (a token, not a name) selects Alice's rows for whoever holds it
    assert len(mine.token) >= 16
    assert subsets.open_link(ds, mine.token, cache).rows.tolist() == [1, 2, 3]
    with pytest.raises(ParallaxError):
        subsets.open_link(ds, "my picks", cache)
    # Mallory's delete of "my picks" deletes hers; Alice's and its link stay
    assert subsets.delete_subset(ds, "my picks", cache, owner=mallory)
    assert subsets.open_link(ds, mine.token, cache).rows.tolist() == [1, 2, 3]
    assert subsets.delete_subset(ds, "my picks", cache, owner=alice)
    with pytest.raises(ParallaxError, match="subset link is not kept"):
        subsets.open_link(ds, mine.token, cache)
    # the cap is per owner: Mallory filling hers leaves Alice room
    for i in range(subsets.MAX_SUBSETS - 1):
        subsets.save_subset(ds, f"s{i}", [i % len(ds)], cache, owner=mallory)
    with pytest.raises(ParallaxError, match="at most"):
        subsets.save_subset(ds, "one more", [0], cache, owner=mallory)
    subsets.save_subset(ds, "mine", [0], cache, owner=alice)
    # the operator's subsets stay the operator's
    subsets.save_subset(ds, "ops", [4], cache)
    assert [s.name for s in subsets.list_subsets(ds, cache)] == ["ops"]


def test_escape_markdown_leaves_nothing_to_render():
    from engine.store.links import escape_markdown

    hostile = "![x](https://evil.example/p.png) <img src=x> [click](javascript:x) **b** :red[x]"
    out = escape_markdown(hostile + "\nsecond line")
    assert "\n" not in out
    import re

    # every character that starts Markdown syntax is escaped (preceded by a backslash)
    assert re.search(r"(?<!\\)[\[\]()<>*!:_`]", out) is None, out
    assert out.replace("\\", "") == (hostile + " second line")


# -- issue 27: uploads: a limit, a total quota, a lifetime ---------------------------------------
def test_an_upload_over_the_limit_is_one_line_and_leaves_nothing(deployment, monkeypatch):
    from engine import settings
    from engine.errors import BudgetError
    from engine.store.uploads import UploadFile, stage_upload

    monkeypatch.setattr(settings, "MAX_UPLOAD_BYTES", 1000)
    with pytest.raises(BudgetError, match="PARALLAX_MAX_UPLOAD_BYTES") as err:
        stage_upload([UploadFile("big.csv", b"text\n" + b"a" * 2000)], "a" * 32)
    assert "\n" not in str(err.value)
    assert not (deployment / "uploads").exists() or not any((deployment / "uploads").rglob("*"))


def test_uploads_have_a_total_quota_and_expire(deployment, monkeypatch):
    from engine import settings
    from engine.store.uploads import UploadFile, expire_uploads, stage_upload

    cache = Cache(deployment)
    monkeypatch.setattr(settings, "QUOTA_UPLOADS_TOTAL", 5000)
    owners = [c * 32 for c in "abc"]
    specs = [
        stage_upload([UploadFile("t.csv", f"text\n{o}\n".encode() + b"x" * 2000)], o, cache=cache)
        for o in owners
    ]
    # the third visitor's upload made room by removing the oldest not in use (anyone's)
    total = sum(e.bytes for e in cache.stored("uploads"))
    assert total <= 5000 and len(cache.stored("uploads")) == 2
    assert specs[2].startswith("manifest:")
    removed = expire_uploads(cache, ttl_s=-1)  # everything is past a negative lifetime
    assert len(removed) == 2 and cache.stored("uploads") == []


def test_a_killed_extraction_leaves_nothing_after_the_next_open(deployment, tmp_path):
    import zipfile

    from engine.data import open_dataset
    from engine.data.archive import file_sha256

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"red/{i}.png", _png((200, i * 30, 20)))
    digest = file_sha256(archive)
    leftover = deployment / "extracted" / f".tmp-{digest}-killed"
    (leftover / "red").mkdir(parents=True)
    (leftover / "red" / "0.png").write_bytes(b"x" * 10_000)
    ds = open_dataset(f"zip:{archive}", cache_root=deployment)
    assert len(ds) == 3
    assert not leftover.exists()


def test_hfds_hub_snapshots_go_into_parallax_cache(deployment, monkeypatch):
    """``hfds:ORG/NAME`` wrote 1.8 GB into ``~/.cache/huggingface``: its snapshots now go to
    the cache's downloads namespace (under its quota)."""
    pytest.importorskip("datasets")
    import huggingface_hub

    from engine.data import hfds

    seen = []

    def fake(repo, **kw):
        seen.append(kw.get("cache_dir"))
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.setenv("PARALLAX_OFFLINE", "1")
    with pytest.raises(Exception, match="not in this deployment's cache"):
        hfds._hub_snapshot("someone/data", "hfds:someone/data", deployment)
    assert seen and all(Path(s).is_relative_to(deployment) for s in seen)


def test_hfds_root_never_walks_the_disk(deployment, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    from engine.data import hfds
    from engine.errors import DatasetError

    deep = tmp_path / "deep"
    for i in range(30):
        (deep / f"d{i}").mkdir(parents=True)
        for j in range(10):
            (deep / f"d{i}" / f"f{j}.txt").write_text("x")
    monkeypatch.setattr(hfds, "MAX_WALK_ENTRIES", 100)
    with pytest.raises(DatasetError, match="more than 100 files") as err:
        hfds._data_files(deep, "hfds:deep")
    assert "\n" not in str(err.value)
