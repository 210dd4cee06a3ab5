"""dashboard.compare_view: the Compare page's tables, figures, parsers and cache look-ups.

Reports come from the real engine (``engine.analysis.compare.compare_models``) on small in-memory
fakes,
so the tables are checked against the numbers the engine produced, not against hand-made dicts.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard import compare_view as cv
from dashboard import keys
from engine.analysis.compare import comparison_key
from engine.analysis.zeroshot import ModelPrediction
from engine.store import catalog
from tests.fakes import ArrayImageDataset, MeanColourModel


# -- parsing --------------------------------------------------------------------------------------
def test_parse_list_splits_on_commas_and_newlines_and_dedupes():
    assert cv.parse_list(" cat, dog,,\nbird , cat ") == ["cat", "dog", "bird"]
    assert cv.parse_list("") == [] and cv.parse_list(None) == []


def test_parse_templates_keeps_commas_and_parse_texts_keeps_duplicates():
    assert cv.parse_templates("a photo of a {}, close up\n\n{}\n{}") == [
        "a photo of a {}, close up",
        "{}",
    ]
    assert cv.parse_texts("one\n\n one \ntwo") == ["one", "one", "two"]


def test_dataset_label_names_natural_order_without_none():
    assert cv.dataset_label_names(["10", "2", None, "1", "2", " "]) == ["1", "2", "10"]
    assert cv.dataset_label_names(["dog", "Cat", "ant"]) == ["ant", "Cat", "dog"]


def test_prediction_model_options_need_a_text_tower():
    known = [
        {"spec": "baseline:pixels", "modalities": ["image"]},
        {"spec": "baseline:text", "modalities": ["text"]},
        {"spec": "open_clip:X/y", "modalities": ["image", "text"]},
    ]
    out = cv.prediction_model_options(known, ["baseline:pixels", "hf:/some/clip", "baseline:text"])
    assert out == ["baseline:text", "open_clip:X/y", "hf:/some/clip"]


# -- predictions --------------------------------------------------------------------------------
def _preds() -> tuple[list[ModelPrediction], list[cv.InputItem]]:
    inputs = cv.inputs_of(["a.png", "b.png"], ["some text"])
    good = ModelPrediction(
        model="clip",
        images=[[("cat", 0.7, 1), ("dog", 0.2, 2)], [("dog", 0.6, 1), ("cat", 0.3, 2)]],
        texts=[[("cat", 0.9, 1), ("dog", 0.1, 2)]],
        latency_ms=12.5,
        load_ms=3.0,
    )
    text_only = ModelPrediction(
        model="text", texts=[[("dog", 0.55, 1), ("cat", 0.45, 2)]], latency_ms=1.0, load_ms=0.0
    )
    text_only.error = "not CLIP-like: needs image and text towers"
    broken = ModelPrediction(model="broken", error="cannot load: no such folder")
    return [good, text_only, broken], inputs


def test_answers_follow_input_order_and_leave_gaps_as_none():
    preds, inputs = _preds()
    assert [i.kind for i in inputs] == ["image", "image", "text"]
    good, text_only, broken = (cv.answers_for(p, inputs) for p in preds)
    assert good[0][0][0] == "cat" and good[1][0][0] == "dog" and good[2][0][0] == "cat"
    assert text_only[:2] == [None, None] and text_only[2][0] == ("dog", 0.55, 1)
    assert broken == [None, None, None]


def test_topk_and_predictions_frames():
    preds, inputs = _preds()
    top = cv.topk_frame(preds[0].images[0])
    assert list(top.columns) == ["rank", "label", "probability"]
    assert top["rank"].tolist() == [1, 2] and top["probability"].tolist() == [0.7, 0.2]
    assert list(cv.topk_frame(None).columns) == ["rank", "label", "probability"]

    long = cv.predictions_frame(preds, inputs)
    # clip: 3 inputs x 2 ranks; text model: 2 empty image rows + 2 ranks; broken: 3 empty rows
    assert len(long) == 6 + 4 + 3
    clip_rows = long[long["model"] == "clip"]
    assert clip_rows.groupby("input")["probability"].sum().le(1.0).all()
    assert (long[long["model"] == "broken"]["label"] == "").all()  # no "None" cell
    assert long[long["model"] == "broken"]["rank"].isna().all()
    assert (long[long["model"] == "clip"]["error"] == "").all()
    assert (long[long["model"] == "broken"]["error"] == "cannot load: no such folder").all()

    timing = cv.timing_frame(preds)
    assert timing["model"].tolist() == ["clip", "text", "broken"]
    assert timing["latency_ms"].tolist()[:2] == [12.5, 1.0] and pd.isna(timing["latency_ms"][2])


def test_tied_answers_share_their_rank():
    """Three labels at 33.33 % are not first, second and third: they share rank 1."""
    third = 1 / 3
    top = cv.topk_frame([("red", third, 1), ("green", third, 2), ("blue", third, 3)])
    assert top["rank"].tolist() == [1, 1, 1]
    top = cv.topk_frame([("a", 0.5, 1), ("b", 0.25, 2), ("c", 0.25, 3), ("d", 0.0, 4)])
    assert top["rank"].tolist() == [1, 2, 2, 4]
    tied = ModelPrediction(model="m", texts=[[("x", 0.5, 1), ("y", 0.5, 2)]])
    long = cv.predictions_frame([tied], cv.inputs_of([], ["hello"]))
    assert long["rank"].tolist() == [1, 1]


def test_thumbnail_of_keeps_the_upload_and_fits_the_box():
    from PIL import Image

    image = Image.new("RGB", (640, 320), (10, 20, 30))
    small = cv.thumbnail_of(image)
    assert small.size == (160, 80) and image.size == (640, 320)


# -- comparison on real engine reports ----------------------------------------------------------
@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from engine.analysis.compare import compare_models
    from engine.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("cache"))
    ds = ArrayImageDataset(60, seed=3)
    models = [MeanColourModel(dim=16), MeanColourModel(dim=8, version="2")]
    report = compare_models(ds, models, cache=ws.cache, k=5)
    return ws, ds, models, report


def test_embedded_models_and_comparison_key_match_the_engine(compared):
    from engine.analysis.compare import compare_models
    from engine.params import CompareParams

    ws, ds, models, report = compared
    cache = ws.cache
    found = ws.embeddings(ds)  # what dashboard.projections.embedded_models asks
    assert set(found) == {m.spec for m in models}
    assert all(set(v) == {"image"} for v in found.values())
    assert ws.embeddings(ArrayImageDataset(60, seed=4)) == {}  # another dataset

    keys = [found[m.spec][catalog.comparison_modality(ds, found[m.spec])].key for m in models]
    assert keys == [m["vectors_key"] for m in report.models]
    key = comparison_key(ds, keys, CompareParams(k=5))
    assert key == report.key
    assert comparison_key(ds, keys, CompareParams(k=6)) != key
    specs = [m.spec for m in models]
    loaded = ws.cached_report(ds, found, specs, CompareParams(k=5))
    assert loaded is not None and loaded.cached and loaded.key == report.key
    assert cv.metrics_frame(loaded).equals(cv.metrics_frame(report))
    assert catalog.cached_report(ds, found, specs, CompareParams(k=6), cache) is None
    assert catalog.cached_report(ds, found, [*specs, "missing:model"], CompareParams(k=5)) is None
    # the engine reads the same entry back
    assert compare_models(ds, models, cache=cache, k=5).cached


def test_comparison_modality_mirrors_the_engine_choice():
    ds = ArrayImageDataset(10)
    assert catalog.comparison_modality(ds, {"image": 1, "text": 2}) == "image"
    assert catalog.comparison_modality(ds, {"text": 2}) == "text"
    assert catalog.comparison_modality(ds, {}) is None
    assert catalog.comparison_modality(ds, {"image": 1}, "text") is None
    assert catalog.comparison_modality(ArrayImageDataset(10, texts=False), {"text": 2}) is None


def test_metrics_and_per_class_frames(compared):
    _, _, models, report = compared
    metrics = cv.metrics_frame(report)
    assert list(metrics.columns) == cv.METRIC_COLUMNS
    assert metrics["model"].tolist() == [m.spec for m in models]
    for row, m in zip(metrics.to_dict("records"), report.models, strict=True):
        assert row["knn_accuracy"] == m["knn_accuracy"]
        assert row["linear_probe_accuracy"] == m["linear_probe"]["accuracy"]
        assert row["zero_shot_accuracy"] == m["zero_shot"]["accuracy"]  # fakes are CLIP-like
        assert (row["n"], row["dim"]) == (60, m["dim"])
    per_class = cv.per_class_frame(report)
    assert list(per_class.columns) == ["class", *[m.spec for m in models]]
    assert per_class["class"].tolist() == ["0", "1", "2"]
    assert per_class[models[0].spec].tolist() == [
        report.models[0]["per_class"][c] for c in ("0", "1", "2")
    ]
    fig = cv.per_class_figure(per_class)
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert list(fig.data[0].x) == ["0", "1", "2"]


def test_confusion_frame_and_heatmap_shape(compared):
    _, _, models, report = compared
    frame = cv.confusion_frame(report, models[0].spec)
    assert frame.shape == (3, 3)
    assert frame.to_numpy().tolist() == report.metric(models[0].spec)["confusion"]
    assert frame.to_numpy().sum() == report.metric(models[0].spec)["linear_probe"]["n_test"]
    assert cv.confusion_source(report, models[0].spec) == "linear-probe test split"
    fig = cv.confusion_figure(frame, title="cm")
    (trace,) = fig.data
    assert trace.type == "heatmap" and np.asarray(trace.z).shape == (3, 3)
    assert list(trace.x) == ["0", "1", "2"] and trace.texttemplate == "%{z}"
    csv = pd.read_csv(io.BytesIO(cv.to_csv_bytes(frame, index=True)))
    assert list(csv.columns) == ["true", "0", "1", "2"]


def test_pairwise_heatmaps(compared):
    report = compared[3]
    cka = cv.pairwise_frame(report, "cka")
    assert cka.shape == (2, 2) and np.allclose(np.diag(cka), 1.0)
    assert cka.iloc[0, 1] == cka.iloc[1, 0] == report.pairwise[0]["cka"]
    fig = cv.pairwise_figure(cka, "linear CKA")
    (trace,) = fig.data
    assert np.asarray(trace.z).shape == (2, 2) and (trace.zmin, trace.zmax) == (0.0, 1.0)
    assert fig.layout.title.text == "linear CKA"
    long = cv.pairwise_long_frame(report)
    assert long.to_dict("records") == [
        {k: report.pairwise[0][k] for k in ("a", "b", "cka", "knn_overlap")}
    ]
    assert cv.short_name("x" * 40, 10) == "…" + "x" * 9


def test_disagreement_frame_thumbnails_texts_and_csv(compared):
    ws, ds, models, report = compared
    assert cv.prediction_sources(report) == ["knn", "zero_shot"]
    table = cv.disagreement_frame(report, ds, "knn", ws, max_thumbs=3)
    engine_table = report.disagreements("knn")
    assert table["id"].tolist() == engine_table["id"].tolist()
    assert [ds.ids[r] for r in table["row"]] == table["id"].tolist()
    assert table.columns[:4].tolist() == ["row", "id", "thumbnail", "text"]  # the item first
    assert table["text"].tolist() == [ds.texts[r] for r in table["row"]]
    assert table.columns[-1] == "n_correct"
    if len(table) > 3:
        assert table["thumbnail"].iloc[3:].isna().all()
    assert table["thumbnail"].iloc[0].startswith("data:image/png;base64,")
    csv = pd.read_csv(io.BytesIO(cv.to_csv_bytes(table)))
    assert "thumbnail" not in csv.columns
    assert list(csv.columns) == [
        "row",
        "id",
        "text",
        "label",
        *[m.spec for m in models],
        "n_correct",
    ]
    assert len(csv) == len(table)


def test_rows_for_ids_and_map_selection_state():
    rows = cv.rows_for_ids(["a", "b", "c", "d"], ["d", "b", "zz"])
    assert rows.tolist() == [3, 1] and rows.dtype == np.int64
    sel = cv.map_selection_state([3, 1, 3], "fp")
    assert sel[keys.MAP_ROWS].tolist() == [1, 3]
    assert sel[keys.MAP_SELECTION_SOURCE] == "compare" and sel[keys.MAP_SELECTION_DATASET] == "fp"
    # the keys are the ones the Map page's selection reads (dashboard.map_view)
    text = (Path(cv.__file__).resolve().parent / "map_view.py").read_text("utf-8")
    for name in ("MAP_ROWS", "MAP_SELECTION_SOURCE", "MAP_SELECTION_DATASET"):
        assert f"keys.{name}" in text


def test_heads_frame_from_trained_heads():
    from engine.analysis.fusion import TrainConfig, train_heads

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 40)
    xi = rng.normal(size=(80, 6)).astype(np.float32) + (labels == "a")[:, None] * 2.0
    xt = rng.normal(size=(80, 4)).astype(np.float32)
    results = train_heads(xi, xt, labels, config=TrainConfig(max_epochs=3, hidden=8))
    frame = cv.heads_frame(results)
    assert list(frame.columns) == cv.HEAD_COLUMNS
    assert frame["variant"].tolist() == ["image", "text", "concat", "gated"]
    assert frame["accuracy"].tolist() == [results[v].accuracy for v in frame["variant"]]
    assert frame["mean_gate"].notna().tolist() == [False, False, False, True]
    csv = pd.read_csv(io.BytesIO(cv.to_csv_bytes(frame)))
    assert list(csv.columns) == cv.HEAD_COLUMNS and len(csv) == 4


def test_image_data_url_roundtrip():
    import base64

    from PIL import Image

    url = cv.image_data_url(Image.new("RGB", (4, 3), (1, 2, 3)))
    assert url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        assert im.size == (4, 3) and im.getpixel((0, 0)) == (1, 2, 3)
