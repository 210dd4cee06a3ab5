"""The Embed page through AppTest: real embeddings (offline, CPU), the cache, failing models.

Runs against a temporary cache, with the Hugging Face hub forced offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
PAGE = str(REPO / "pages" / "embed.py")
OFFLINE_FAILS = "hf:openai/clip-vit-base-patch32"  # weights not on disk, no network


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


def open_page(dataset: str, models: list[str]) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.session_state["dataset_spec"] = dataset
    at.session_state["model_specs"] = models
    at.run()
    assert not at.exception, at.exception
    return at


def embed(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Embed").click().run()
    assert not at.exception, at.exception
    return at


def results(at: AppTest):
    frames = [df.value for df in at.dataframe if "cached" in df.value.columns]
    assert frames, "no results table"
    return frames[-1].set_index("model")


def status_table(at: AppTest):
    return next(df.value for df in at.dataframe if "cached for this dataset" in df.value.columns)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_digits_with_pixels_then_cached():
    at = open_page("demo:digits", ["baseline:pixels"])
    assert status_table(at).set_index("model").loc[
        "baseline:pixels", "cached for this dataset"
    ] == ("no")
    embed(at)
    assert not errors(at), errors(at)
    row = results(at).loc["baseline:pixels"]
    assert row["modality"] == "image"
    assert row["n"] == 1797
    assert row["dim"] > 0
    assert not row["cached"]
    # The status table now knows, and a second run comes from the cache.
    status = status_table(at).set_index("model")
    assert status.loc["baseline:pixels", "cached for this dataset"].startswith("image 1797x")
    embed(at)
    assert bool(results(at).loc["baseline:pixels", "cached"])
    # The selection is shared with the other pages.
    assert at.session_state["model_specs"] == ["baseline:pixels"]


def test_sentences_with_text_models():
    from engine.models import known_models

    models = ["baseline:text"]
    info = {m["spec"]: m for m in known_models()}
    if info.get("st:all-MiniLM-L6-v2", {}).get("available_offline"):
        models.append("st:all-MiniLM-L6-v2")
    at = open_page("demo:sentences", models)
    embed(at)
    assert not errors(at), errors(at)
    table = results(at)
    for spec in models:
        assert table.loc[spec, "modality"] == "text"
        assert table.loc[spec, "n"] > 100
    if "st:all-MiniLM-L6-v2" in models:
        assert table.loc["st:all-MiniLM-L6-v2", "dim"] == 384


def test_a_failing_model_does_not_stop_the_others():
    at = open_page("demo:digits", [OFFLINE_FAILS, "baseline:pixels"])
    embed(at)
    errs = errors(at)
    assert len(errs) == 1 and OFFLINE_FAILS in errs[0], errs
    assert "Traceback" not in errs[0]
    table = results(at)
    assert list(table.index) == ["baseline:pixels"]
    assert table.loc["baseline:pixels", "n"] == 1797


def test_typed_spec_and_incompatible_model():
    # baseline:text cannot embed an image-only dataset: refused with one line, not added.
    at = open_page("demo:digits", ["baseline:pixels"])
    form_input = next(t for t in at.text_input if t.label == "Any other model spec")
    form_input.set_value("baseline:text")
    next(b for b in at.button if b.label == "Add").click().run()
    assert not at.exception, at.exception
    (err,) = errors(at)
    assert err.startswith("baseline:text is not for this data: embeds texts only")
    assert at.session_state["model_specs"] == ["baseline:pixels"]
    embed(at)
    assert not errors(at)
    assert list(results(at).index) == ["baseline:pixels"]
