"""Pages say when a model cannot answer: Compare's warning banner and each model's domain."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.models import known_models
from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
COMPARE = str(REPO / "pages" / "compare.py")
SHAPES_CLIP = "demo:shapes-clip"
TIMEOUT = 240

pytestmark = pytest.mark.skipif(
    not (REPO / "models" / "shapes-clip" / "MODEL_CARD.md").is_file(),
    reason="models/shapes-clip not shipped",
)


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


def predictions_page(labels: str, models: tuple[str, ...] = (SHAPES_CLIP,)) -> AppTest:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = "demo:digits"
    at.session_state["model_specs"] = ["baseline:pixels"]
    at.session_state["compare_tab"] = "Predictions on uploads"
    at.session_state["cmp_models"] = list(models)
    at.run()
    assert not at.exception, at.exception
    at.file_uploader(key="cmp_files").set_value(("red.png", png_bytes((220, 20, 20)), "image/png"))
    at.text_input(key="cmp_labels").set_value(labels)
    at.button(key="cmp_predict").click().run()
    assert not at.exception, at.exception
    return at


def test_compare_warns_when_the_labels_are_outside_the_models_vocabulary() -> None:
    at = predictions_page("astronaut, cat, coffee")
    banners = [w.value for w in at.warning]
    assert len(banners) == 1, banners
    (banner,) = banners
    assert "'astronaut', 'cat', 'coffee'" in banner
    assert "cannot tell them apart" in banner and "vocabulary (astronaut, cat, coffee)" in banner
    # where the model is chosen: what it was trained on
    domain = [c.value for c in at.caption if "trained on generated shapes only" in c.value]
    assert domain and "circle, square" in domain[0] and SHAPES_CLIP in domain[0]


def test_compare_says_one_cause_once_for_every_model() -> None:
    """Both shipped CLIPs, three unknown labels: one line for the one cause (unknown words,
    which is why the labels embed alike and score near chance), naming every model; not
    three lines per model."""
    at = predictions_page("astronaut, cat, coffee", (SHAPES_CLIP, "demo:shapes-clip-small"))
    (banner,) = [w.value for w in at.warning]
    lines = [ln for ln in banner.splitlines() if ln.startswith("- ")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("- every model:") and "vocabulary" in lines[0]
    assert "near chance" not in banner


def test_compare_shows_no_warning_for_labels_the_model_knows() -> None:
    at = predictions_page("circle, square, star")
    assert [w.value for w in at.warning] == []


# -- Embed: models that fit the data, fresh choices per dataset, failures out of the sidebar ----
EMBED = str(REPO / "pages" / "embed.py")
OFFLINE_FAILS = "hf:openai/clip-vit-base-patch32"  # weights not on disk, no network


def embed_page(dataset: str, models: list[str]) -> AppTest:
    at = AppTest.from_file(EMBED, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = dataset
    at.session_state["model_specs"] = models
    at.run()
    assert not at.exception, at.exception
    return at


def test_embed_offers_only_models_for_the_data_and_says_why_of_the_others() -> None:
    at = embed_page("demo:digits", ["baseline:pixels", "baseline:text"])
    (widget,) = [m for m in at.multiselect if m.label == "Models"]
    assert "baseline:pixels" in widget.options[0] and not any(
        o.startswith("baseline:text") for o in widget.options
    )
    assert at.session_state["model_specs"] == ["baseline:pixels"]  # the stale text model left
    unfit = next(d.value for d in at.dataframe if "why" in d.value.columns).set_index("model")
    assert unfit.loc["baseline:text", "why"] == "embeds texts only; this dataset has images"
    assert "st:all-MiniLM-L6-v2" in unfit.index


def test_embed_resets_choices_when_the_dataset_changes() -> None:
    at = embed_page("demo:digits", ["baseline:pixels"])
    at.session_state["dataset_spec"] = "demo:sentences"
    at.run()
    assert not at.exception, at.exception
    chosen = at.session_state["model_specs"]  # pixels cannot embed sentences: the text defaults
    assert "baseline:pixels" not in chosen and chosen, chosen
    offline = {m["spec"] for m in known_models() if m["available_offline"]}
    if "st:all-MiniLM-L6-v2" in offline:
        assert chosen[0] == "st:all-MiniLM-L6-v2"  # the text model first
    # never two models reading texts with one tower (the shipped CLIPs share theirs)
    assert not {SHAPES_CLIP, "demo:shapes-clip-small"} <= set(chosen)
    sidebar = [c.value for c in at.sidebar.code]
    assert sidebar == ["demo:sentences", *chosen]  # the sidebar names no image model


def test_a_model_that_failed_leaves_the_session_models() -> None:
    at = embed_page("demo:digits", [OFFLINE_FAILS, "baseline:pixels"])
    next(b for b in at.button if b.label == "Embed").click().run()
    assert not at.exception, at.exception
    assert any(OFFLINE_FAILS in e.value for e in at.error)  # the reason is still shown
    assert at.session_state["model_specs"] == ["baseline:pixels"]  # the sidebar lists these


def test_compare_opens_with_two_different_models() -> None:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = "demo:digits"
    at.session_state["model_specs"] = ["baseline:pixels", SHAPES_CLIP]
    at.session_state["compare_tab"] = "Predictions on uploads"
    at.run()
    assert not at.exception, at.exception
    chosen = at.session_state["cmp_models"]
    assert len(chosen) == 2 and len(set(chosen)) == 2, chosen
    assert chosen == [SHAPES_CLIP, "demo:shapes-clip-small"]
