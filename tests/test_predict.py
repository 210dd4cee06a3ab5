"""engine.analysis.predict: every model's answer on uploads, one failing model never hiding the
others."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.analysis.predict import (
    decode_images,
    fusion_prediction,
    head_topk,
    one_line,
    predict_each,
    score_rule,
)
from engine.errors import ModelUnavailable, ParallaxError
from engine.params import PredictParams
from tests.fakes import MeanColourModel


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_head_topk_orders_by_probability() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]])
    out = head_topk(probs, ["a", "b", "c"], 2)
    assert out == [[("b", 0.7, 1), ("c", 0.2, 2)], [("a", 0.5, 1), ("b", 0.25, 2)]]


def test_decode_images_keeps_good_files_and_names_bad_ones() -> None:
    images, names, errors = decode_images([("red.png", _png((250, 0, 0))), ("x.png", b"nope")])
    assert names == ["red.png"] and images[0].size == (16, 16)
    assert len(errors) == 1 and errors[0].startswith("x.png: ") and "\n" not in errors[0]


def test_predict_each_reports_a_broken_model_and_answers_with_the_others() -> None:
    model = MeanColourModel(dim=16)

    def load(spec: str):
        if spec == "broken":
            raise ModelUnavailable("no such folder")
        return model

    steps: list[tuple[str, str]] = []
    run = predict_each(
        ["broken", model.spec],
        [Image.new("RGB", (8, 8), (250, 0, 0))],
        ["a red thing"],
        ["red", "green"],
        params=PredictParams(top_k=2),
        load=load,
        on_step=lambda i, spec, stage, pred: steps.append((spec, stage)),
    )
    broken, ok = run.preds
    assert broken.error == "cannot load: no such folder" and broken.images is None
    assert ok.error is None and ok.load_ms is not None and ok.latency_ms is not None
    assert [r for _, _, r in ok.images[0]] == [1, 2] and len(ok.texts) == 1
    assert run.scales[ok.model].startswith("softmax(")
    assert steps == [
        ("broken", "loading"),
        ("broken", "done"),
        (model.spec, "loading"),
        (model.spec, "predicting"),
        (model.spec, "done"),
    ]


def test_predict_each_checks_labels_before_loading_anything() -> None:
    def load(spec: str):
        raise AssertionError("no model may load for bad labels")

    with pytest.raises(ParallaxError, match="duplicate label"):
        predict_each(["m"], [], ["t"], ["a", "a"], load=load)


def test_an_unexpected_error_is_one_line_naming_its_type() -> None:
    assert one_line(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert one_line(ParallaxError("plain")) == "plain"


def test_score_rule_names_the_engine_rule() -> None:
    class Sig:
        logit_scale, logit_bias = 10.0, -5.0

    assert score_rule(Sig()) == "sigmoid(10·cos -5), normalised"
    assert score_rule(object()) == "softmax(100·cos) (default scale)"


def test_fusion_prediction_without_a_head_says_which() -> None:
    pred = fusion_prediction(
        {}, "fusion heads · x", "a", "b", [], ["a text"], load=lambda spec: None
    )
    assert pred.model == "fusion heads · x"
    assert pred.error == "no text head trained" and pred.texts is None


def test_check_request_refuses_what_cannot_be_answered() -> None:
    from engine.analysis.predict import MAX_INPUTS, check_request

    check_request(1, ["m"], False, ["a"])  # a plain request passes
    check_request(1, [], True, [])  # heads alone need no labels
    for args, words in [
        ((0, ["m"], False, ["a"]), "at least one image or type a text"),
        ((MAX_INPUTS + 1, ["m"], False, ["a"]), f"at most {MAX_INPUTS}"),
        ((1, [], False, ["a"]), "pick at least one model"),
        ((1, ["m"], False, []), "at least one candidate label"),
    ]:
        with pytest.raises(ParallaxError, match=words):
            check_request(*args)


def test_the_images_of_one_request_share_one_pixel_budget(monkeypatch) -> None:
    """Each image is under the per-image limit, together they are over the request's."""
    import io

    from PIL import Image

    from engine import settings
    from engine.analysis.predict import decode_images
    from engine.errors import BudgetError

    def png(side: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (side, side), (10, 20, 30)).save(buf, format="PNG")
        return buf.getvalue()

    monkeypatch.setattr(settings, "REQUEST_PIXELS", 3 * 100 * 100)
    images, names, errors = decode_images([(f"{i}.png", png(100)) for i in range(3)])
    assert names == ["0.png", "1.png", "2.png"]
    assert len(images) == 3 and not errors
    with pytest.raises(BudgetError, match="PARALLAX_REQUEST_PIXELS"):
        decode_images([(f"{i}.png", png(100)) for i in range(4)])
