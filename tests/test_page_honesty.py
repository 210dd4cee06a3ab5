"""Pages say when a model cannot answer: Compare's warning banner and each model's domain."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

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


def predictions_page(labels: str) -> AppTest:
    at = AppTest.from_file(COMPARE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = "demo:digits"
    at.session_state["model_specs"] = ["baseline:pixels"]
    at.session_state["compare_tab"] = "Predictions on uploads"
    at.session_state["cmp_models"] = [SHAPES_CLIP]
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


def test_compare_shows_no_warning_for_labels_the_model_knows() -> None:
    at = predictions_page("circle, square, star")
    assert [w.value for w in at.warning] == []
