"""The Compare page through AppTest, on a temporary cache, with tiny local CLIPs.

Every displayed number is checked against the engine called directly on the same inputs (the
engine caches a comparison / a head, so the second call reads what the page computed).
Downloads are read back from the test runtime's media store (see ``media_store``).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
PAGE = str(REPO / "pages" / "compare.py")
TIMEOUT = 180
DIGITS = "demo:digits"
SHAPES = "demo:shapes?n=300&seed=0"
PIXELS = "baseline:pixels"
TEXT = "baseline:text"
TAB_PREDICT = "Predictions on uploads"
TAB_DATASET = "Dataset comparison"
TAB_FUSION = "Fusion classifier"
TOPK_COLUMNS = ["rank", "label", "probability"]


def require_engine() -> None:
    try:
        from engine.models import load_model  # noqa: F401
        from tests.model_fixtures import build_open_clip_dir  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"engine models or test model fixtures unavailable: {exc}")


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


@pytest.fixture(scope="module")
def clip_specs(tmp_path_factory) -> tuple[str, str]:
    """Two tiny, differently seeded open_clip models (local-dir specs)."""
    require_engine()
    from tests.model_fixtures import build_open_clip_dir

    root = tmp_path_factory.mktemp("models")
    a = build_open_clip_dir(root / "clip-a", seed=0)
    b = build_open_clip_dir(root / "clip-b", seed=1)
    return f"open_clip:local-dir:{a}", f"open_clip:local-dir:{b}"


@pytest.fixture(scope="module")
def digits_embedded(temp_cache, clip_specs):
    """demo:digits embedded by baseline:pixels and by the first tiny CLIP."""
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.models import load_model
    from engine.store.cache import Cache

    cache = Cache(temp_cache)
    ds = open_dataset(DIGITS, cache_root=cache.root)
    clip = load_model(clip_specs[0], device="cpu")
    embed_dataset(ds, load_model(PIXELS), cache=cache)
    embed_dataset(ds, clip, cache=cache)
    return ds, [PIXELS, str(clip.spec)]


@pytest.fixture
def media_store(monkeypatch):
    """Keep the media stores AppTest creates per run, so download buttons can be read."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores: list[MemoryMediaFileStorage] = []

    class Recording(MemoryMediaFileStorage):
        def __init__(self, endpoint: str) -> None:
            super().__init__(endpoint)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", Recording)
    return stores


def download_bytes(at: AppTest, stores: list, name_part: str) -> bytes:
    """The bytes behind the download button whose file name contains ``name_part``."""
    from streamlit.runtime.media_file_storage import MediaFileStorageError

    for button in at.get("download_button"):
        filename = button.proto.url.rsplit("/", 1)[-1]
        for store in reversed(stores):
            try:
                f = store.get_file(filename)
            except MediaFileStorageError:
                continue
            if name_part in (f.filename or ""):
                return f.content
    raise AssertionError(f"no download named like {name_part!r}")


def open_page(tab: str, dataset: str = DIGITS, **session) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = dataset
    at.session_state["model_specs"] = [PIXELS]
    at.session_state["compare_tab"] = tab
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def frames(at: AppTest, column: str) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe if column in d.value.columns]


def figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def heatmap_z(fig: dict) -> np.ndarray:
    z = fig["data"][0]["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding
        raw = base64.b64decode(z["bdata"])
        shape = [int(x) for x in str(z["shape"]).split(",")]
        return np.frombuffer(raw, dtype=np.dtype(z["dtype"])).reshape(shape)
    return np.asarray(z, dtype=float)


def png_bytes(colour: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


# -- empty states -------------------------------------------------------------------------------
def test_dataset_tab_empty_state_links_to_embed():
    at = open_page(TAB_DATASET, dataset="demo:shapes?n=100&seed=11")
    assert any("Nothing is embedded yet" in i.value for i in at.info)
    assert any("Embed page" in c.value for c in at.caption)  # the link (a caption in AppTest)
    assert not errors(at)
    assert not at.dataframe and not figures(at)


def test_fusion_tab_needs_images_texts_and_labels():
    at = open_page(TAB_FUSION, dataset=DIGITS)  # digits: images and labels but no texts
    assert any(
        "Fusion heads need a dataset with images, texts and labels" in i.value for i in at.info
    )
    assert not errors(at)


# -- predictions on uploads ---------------------------------------------------------------------
def test_predictions_side_by_side_with_a_failing_model(clip_specs, media_store):
    from engine.analysis.zeroshot import DEFAULT_TEMPLATES, predict_model
    from engine.models import load_model

    clip_a, clip_b = clip_specs
    broken = "open_clip:local-dir:/nonexistent/parallax-model"
    at = open_page(TAB_PREDICT, cmp_models=[])
    at.file_uploader(key="cmp_files").set_value(("red.png", png_bytes((250, 10, 10)), "image/png"))
    at.text_input(key="cmp_labels").set_value("red, green, blue")
    at.text_input(key="cmp_extra_models").set_value(f"{clip_a}, {broken}, {clip_b}")
    at.number_input(key="cmp_topk").set_value(2)
    at.button(key="cmp_predict").click().run()
    assert not at.exception, at.exception

    # the broken spec: one st.error line naming it; the two CLIPs answered anyway
    errs = errors(at)
    assert len(errs) == 1 and "/nonexistent/parallax-model" in errs[0], errs
    assert "\n" not in errs[0] and "Traceback" not in errs[0]
    tops = frames(at, "probability")
    tops = [f for f in tops if list(f.columns) == TOPK_COLUMNS]
    assert len(tops) == 2  # one input x two working models, side by side
    for top in tops:
        assert top["rank"].tolist() == [1, 2]
        assert top["probability"].between(0, 1).all()
        assert top["probability"].sum() <= 1.0 + 1e-9
        assert top["probability"].is_monotonic_decreasing
        assert set(top["label"]) <= {"red", "green", "blue"}

    # exactly the engine's numbers for the same image, labels and (first) template
    image = Image.open(io.BytesIO(png_bytes((250, 10, 10)))).convert("RGB")
    models = [load_model(clip_a, device="cpu"), load_model(clip_b, device="cpu")]
    labels = ["red", "green", "blue"]
    direct = [predict_model(m, [image], None, labels, DEFAULT_TEMPLATES, top_k=2) for m in models]
    for top, pred in zip(tops, direct, strict=True):
        assert top["label"].tolist() == [lab for lab, _, _ in pred.images[0]]
        np.testing.assert_allclose(top["probability"], [p for _, p, _ in pred.images[0]], atol=1e-6)

    # per-model timing: latency for the working ones, the reason for the broken one
    (timing,) = frames(at, "latency_ms")
    assert len(timing) == 3
    ok = timing[timing["error"] == ""]
    assert len(ok) == 2
    assert (ok["latency_ms"].astype(float) > 0).all() and (ok["load_ms"].astype(float) >= 0).all()
    assert (timing["error"] != "").sum() == 1
    # no "None" cell: a time the broken model never had reads "–"
    assert not timing.isna().any().any() and "–" in set(timing["latency_ms"])

    # the long CSV: one row per (input, model, rank), plus a row for the failed model
    csv = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "predictions")))
    assert list(csv.columns) == [
        "input",
        "kind",
        "model",
        "rank",
        "label",
        "probability",
        "latency_ms",
        "load_ms",
        "error",
    ]
    assert len(csv) == 2 * 2 + 1
    assert set(csv["input"]) == {"red.png"}
    timing_csv = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "timing")))
    assert list(timing_csv.columns) == ["model", "load_ms", "latency_ms", "error"]


def test_predictions_on_texts_with_a_text_model_and_dataset_labels(clip_specs):
    """Texts are answered by a text-only model too; images need a CLIP (one-line reason)."""
    at = open_page(TAB_PREDICT, cmp_models=[TEXT], cmp_lab_mode="The current dataset's labels")
    at.file_uploader(key="cmp_files").set_value(("blue.png", png_bytes((0, 0, 250)), "image/png"))
    at.text_area(key="cmp_texts").set_value("seven\nzero")
    at.text_input(key="cmp_extra_models").set_value(clip_specs[0])
    at.checkbox(key="cmp_ensemble").check()
    at.button(key="cmp_predict").click().run()
    assert not at.exception, at.exception
    assert errors(at) == ["not CLIP-like: needs image and text towers"]  # baseline:text, image
    tops = [f for f in frames(at, "probability") if list(f.columns) == TOPK_COLUMNS]
    # image: CLIP only; two texts: text model + CLIP
    assert len(tops) == 1 + 2 * 2
    for top in tops:
        assert len(top) == 5  # default top-k of the 10 digit labels
        assert top["probability"].sum() <= 1.0 + 1e-9
        assert set(top["label"]) <= {str(i) for i in range(10)}


# -- dataset comparison -------------------------------------------------------------------------
def test_dataset_comparison_shows_the_engine_numbers(digits_embedded, temp_cache, media_store):
    from dashboard import compare_view as cv
    from engine.analysis.compare import compare_models
    from engine.store.cache import Cache

    ds, specs = digits_embedded
    at = open_page(TAB_DATASET, cmp_ds_models=specs)
    if not frames(at, "knn_accuracy"):  # not cached yet: run it
        at.button(key="cmp_run").click().run()
        assert not at.exception, at.exception
    assert not errors(at), errors(at)
    (shown,) = frames(at, "knn_accuracy")

    report = compare_models(ds, specs, cache=Cache(temp_cache))
    assert report.cached  # the page's comparison was stored and is reused
    assert shown["model"].tolist() == specs
    for _, row in shown.iterrows():
        m = report.metric(row["model"])
        assert row["knn_accuracy"] == m["knn_accuracy"]
        assert row["linear_probe_accuracy"] == m["linear_probe"]["accuracy"]
        assert row["n"] == m["n"] == 1797 and row["dim"] == m["dim"]
        zs = m["zero_shot"]
        # a model without zero-shot reads "–" (never "None"), so the column is shown as text
        if zs is None:
            assert row["zero_shot_accuracy"] == "–"
        else:
            assert row["zero_shot_accuracy"] == f"{zs['accuracy']:.1%}"
    assert report.metric(PIXELS)["knn_accuracy"] > 0.9  # raw pixels separate digits well
    assert report.metric(specs[1])["zero_shot"] is not None  # the CLIP gets zero-shot

    # figures: per-class bars, confusion heatmap of the first model, CKA and overlap heatmaps
    figs = figures(at)
    heat = [f for f in figs if f["data"] and f["data"][0]["type"] == "heatmap"]
    assert len(heat) == 3
    np.testing.assert_array_equal(
        heatmap_z(heat[0]), np.asarray(report.metric(PIXELS)["confusion"])
    )
    np.testing.assert_allclose(heatmap_z(heat[1]), report.pairwise_matrix("cka").to_numpy())
    np.testing.assert_allclose(heatmap_z(heat[2]), report.pairwise_matrix("knn_overlap").to_numpy())
    bars = [f for f in figs if f["data"] and f["data"][0]["type"] == "bar"]
    assert len(bars) == 1 and len(bars[0]["data"]) == 2

    # the disagreement list: the engine's rows, with thumbnails and dataset rows
    (table,) = frames(at, "n_correct")
    expected = report.disagreements()
    assert table["id"].tolist() == expected["id"].tolist()
    assert table["thumbnail"].iloc[0].startswith("data:image/png;base64,")
    assert [ds.ids[r] for r in table["row"]] == table["id"].tolist()

    # downloads: CSV with the expected columns
    metrics_csv = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "metrics")))
    assert list(metrics_csv.columns) == cv.METRIC_COLUMNS
    np.testing.assert_allclose(metrics_csv["knn_accuracy"], shown["knn_accuracy"])
    per_class = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "per-class")))
    assert list(per_class.columns) == ["class", *specs] and len(per_class) == 10
    confusion = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "confusion")))
    assert confusion.shape == (10, 11) and confusion.iloc[:, 1:].to_numpy().sum() == 450
    pairwise = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "pairwise")))
    assert list(pairwise.columns) == ["a", "b", "cka", "knn_overlap"]
    dis = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "disagreements")))
    assert "thumbnail" not in dis.columns
    assert list(dis.columns) == ["row", "id", "label", *specs, "n_correct"]
    assert len(dis) == len(expected)


def test_cached_comparison_opens_without_running_and_feeds_the_map(digits_embedded, temp_cache):
    from dashboard import compare_view as cv
    from dashboard import keys
    from engine.analysis.compare import compare_models
    from engine.store.cache import Cache

    ds, specs = digits_embedded
    report = compare_models(ds, specs, cache=Cache(temp_cache))  # cached (or computed) here
    at = open_page(TAB_DATASET, cmp_ds_models=specs)
    assert any("from the cache" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "cmp_run"]
    assert frames(at, "knn_accuracy")

    at.button(key="cmp_to_map").click().run()
    assert not at.exception, at.exception
    expected = np.sort(cv.rows_for_ids(ds.ids, report.disagreements()["id"]))
    np.testing.assert_array_equal(at.session_state[keys.MAP_ROWS], expected)
    assert at.session_state[keys.MAP_SELECTION_DATASET] == ds.fingerprint()
    assert at.session_state[keys.MAP_SELECTION_SOURCE] == "compare"
    # outside the app's navigation switch_page cannot run: the page says where to look instead
    assert any("selected on the Map page" in s.value for s in at.success)


def test_dataset_comparison_reports_a_model_that_cannot_load(digits_embedded, temp_cache, tmp_path):
    """Vectors of a model whose weights are gone: one error line, the others still compared."""
    import shutil

    from engine.embed.local import embed_dataset
    from engine.models import clear_cache, load_model
    from engine.store.cache import Cache
    from tests.model_fixtures import build_open_clip_dir

    ds, _ = digits_embedded
    folder = build_open_clip_dir(tmp_path / "gone-clip", seed=2)
    gone = load_model(f"open_clip:local-dir:{folder}", device="cpu")
    embed_dataset(ds, gone, cache=Cache(temp_cache))
    shutil.rmtree(folder)
    clear_cache()  # the engine's registry would otherwise still hold the loaded model

    at = open_page(TAB_DATASET, cmp_ds_models=[PIXELS, str(gone.spec)])
    at.button(key="cmp_run").click().run()
    assert not at.exception, at.exception
    (line,) = errors(at)
    assert str(gone.spec) in line and "\n" not in line
    (shown,) = frames(at, "knn_accuracy")
    assert shown["model"].tolist() == [PIXELS]


# -- fusion classifier --------------------------------------------------------------------------
def test_fusion_tab_trains_four_heads(temp_cache, media_store):
    require_engine()
    from engine.analysis.fusion import TrainConfig, train_heads_for_dataset
    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    cache = Cache(temp_cache)
    ds = open_dataset(SHAPES, cache_root=cache.root)
    embed_dataset(ds, PIXELS, modality="image", cache=cache)
    embed_dataset(ds, TEXT, modality="text", cache=cache)

    at = open_page(TAB_FUSION, dataset=SHAPES, cmp_epochs=30)
    assert at.selectbox(key="cmp_fusion_image").value == PIXELS
    assert at.selectbox(key="cmp_fusion_text").value == TEXT
    at.button(key="cmp_train").click().run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    (heads,) = frames(at, "val_accuracy")
    assert heads["variant"].tolist() == ["image", "text", "concat", "gated"]
    assert heads["accuracy"].between(0, 1).all()

    again = train_heads_for_dataset(
        ds, PIXELS, TEXT, cache=cache, config=TrainConfig(max_epochs=30)
    )  # the page saved them: read back, not retrained
    for _, row in heads.iterrows():
        r = again[row["variant"]]
        assert r.cached and row["accuracy"] == pytest.approx(r.accuracy, abs=1e-12)
        assert Path(row["path"]) == r.path and (r.path / "head.safetensors").is_file()
    # captions are the label (shape) in words: texts alone beat chance by far
    assert again["text"].accuracy > 0.5
    assert any(str(again["gated"].path) in c.value for c in at.code)

    csv = pd.read_csv(io.BytesIO(download_bytes(at, media_store, "fusion-heads")))
    assert csv["variant"].tolist() == ["image", "text", "concat", "gated"]
    assert {"accuracy", "val_accuracy", "path"} <= set(csv.columns)

    # the trained text head also labels typed texts in the predictions tab
    at.session_state["compare_tab"] = TAB_PREDICT
    at.run()
    at.checkbox(key="cmp_use_fusion").check()
    at.multiselect(key="cmp_models").set_value([])
    at.text_area(key="cmp_texts").set_value(ds.texts[0])
    at.button(key="cmp_predict").click().run()
    assert not at.exception, at.exception
    assert not errors(at), errors(at)
    (top,) = [f for f in frames(at, "probability") if list(f.columns) == TOPK_COLUMNS]
    assert set(top["label"]) <= set(again["text"].classes)
    assert top["probability"].sum() <= 1.0 + 1e-9
