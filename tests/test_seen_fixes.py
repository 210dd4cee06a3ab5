"""The small fixes of issue #17's "Seen" list that live in the engine, each pinned by a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def embed_json(argv: list[str], cache: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    from engine.cli import main

    assert main(["embed", *argv, "--cache-dir", str(cache), "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_embed_json_has_one_shape_for_one_model_and_several(tmp_path, capsys) -> None:
    dataset = ["--dataset", "demo:shapes?n=100&seed=3"]
    one = embed_json([*dataset, "--model", "baseline:pixels"], tmp_path, capsys)
    two = embed_json(
        [*dataset, "--model", "baseline:pixels", "--model", "baseline:text"], tmp_path, capsys
    )
    for payload, n_models in ((one, 1), (two, 2)):
        assert len(payload["results"]) == n_models
        assert all(r["n"] == 100 for r in payload["results"])
    assert [r["model"] for r in two["results"]] == ["baseline:pixels", "baseline:text"]
    # one model: its fields also stay at the top level, as before the list existed
    assert one["model"] == "baseline:pixels" and one["dim"] == one["results"][0]["dim"]
    assert "model" not in two


def test_missing_hub_weights_say_hf_download(monkeypatch) -> None:
    from engine.models import offline

    message = str(offline.unavailable("hf:org/model", "org/model", "the hub cannot be reached"))
    assert "`hf download org/model`" in message and "huggingface-cli" not in message


def test_disagreements_of_a_text_dataset_show_the_texts_beside_the_ids() -> None:
    from types import SimpleNamespace

    from dashboard import compare_view as cv
    from engine.analysis.compare import ComparisonReport

    texts = ["the cat sat", "stocks fell", "rain tomorrow", "a goal!"]
    ds = SimpleNamespace(ids=["a", "b", "c", "d"], texts=texts, has_images=False)
    report = ComparisonReport(
        dataset="manifest:sentences.csv",
        key="k",
        params={"k": 3},
        n_total=4,
        n_used=4,
        n_labelled=4,
        models=[{"model": "m1"}, {"model": "m2"}],
        pairwise=[],
        ids=ds.ids,
        labels=["pets", "money", "weather", "sport"],
        predictions={
            "m1": {"knn": ["pets", "money", "sport", "sport"]},
            "m2": {"knn": ["pets", "weather", "weather", "pets"]},
        },
    )
    table = cv.disagreement_frame(report, ds, "knn")
    assert table.columns[:3].tolist() == ["row", "id", "text"]
    assert table["text"].tolist() == [texts[r] for r in table["row"]]
    assert set(table["text"]) == {"stocks fell", "rain tomorrow", "a goal!"}


def test_models_that_fit_a_dataset_include_its_vector_columns(tmp_path) -> None:
    from engine.data import open_dataset
    from engine.models.choice import default_prediction_models, models_for
    from tests.test_column_vectors import _vectors, write_manifest

    x, labels = _vectors()
    path = write_manifest(tmp_path / "m", "jsonl", x, labels)  # texts + an "emb" vector column
    ds = open_dataset(f"manifest:{path}", cache_root=tmp_path / "cache")
    fit = models_for(ds, ["baseline:pixels", "baseline:text", "column:other"])
    assert fit.fit == ["baseline:text", "column:emb"]
    assert fit.unfit == {
        "baseline:pixels": "embeds images only; this dataset has texts",
        "column:other": "this dataset has no such vector column",
    }
    options = ["demo:shapes-clip", "demo:shapes-clip-small", "st:x"]
    assert default_prediction_models(options, ["demo:shapes-clip"]) == options[:2]
    assert default_prediction_models(options, ["st:x", "st:x"]) == ["st:x", "demo:shapes-clip"]
