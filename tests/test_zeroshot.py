"""Zero-shot classification on fake models whose embeddings are built by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.analysis.predict import predict_each
from engine.analysis.zeroshot import (
    DEFAULT_TEMPLATES,
    NOT_CLIP_LIKE,
    build_prompts,
    class_text_embeddings,
    predict_model,
    zero_shot_accuracy,
    zero_shot_scores,
)
from engine.errors import ModelUnavailable, ParallaxError
from engine.params import PredictParams

WORDS = ("cat", "dog", "bird", "photo")


class OneHotClip:
    """A 'CLIP' over 4 dims: a text is the sum of one-hots of the words it contains (cat, dog,
    bird, photo); an image is its mean colour (red, green, blue) as the first three dims."""

    def __init__(self, logit_scale: float = 10.0, logit_bias: float | None = None) -> None:
        self.spec = "fake:onehot-clip"
        self.modalities = frozenset({"image", "text"})
        self.dim = 4
        self.identity = "onehot-clip"
        self.device = "cpu"
        self.default_batch_size = 8
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.text_calls: list[list[str]] = []

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
        return np.append(rgb, 0.0)

    def embed_preprocessed(self, batch: list[np.ndarray]) -> np.ndarray:
        v = np.stack(batch)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_preprocessed([self.preprocess_image(im) for im in images])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.text_calls.append(list(texts))
        out = np.zeros((len(texts), 4), np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(WORDS):
                if w in t:
                    out[i, j] = 1.0
        norms = np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out / norms


class TextOnly(OneHotClip):
    def __init__(self) -> None:
        super().__init__()
        self.spec = "fake:text-only"
        self.modalities = frozenset({"text"})
        self.logit_scale = None


class ImageOnly(OneHotClip):
    def __init__(self) -> None:
        super().__init__()
        self.spec = "fake:image-only"
        self.modalities = frozenset({"image"})


class Exploding(OneHotClip):
    def __init__(self) -> None:
        super().__init__()
        self.spec = "fake:exploding"

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        raise RuntimeError("CUDA out of memory\nsecond line of a long traceback message")


def solid(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), colour)


def test_build_prompts_and_template_checks() -> None:
    assert build_prompts(["cat", "dog"], ["a photo of a {}.", "{}"]) == [
        ["a photo of a cat.", "cat"],
        ["a photo of a dog.", "dog"],
    ]
    # Braces elsewhere are literal (str.format would choke on them).
    assert build_prompts(["x{y}"], ["{} {{literal}}"]) == [["x{y} {{literal}}"]]
    assert 5 <= len(DEFAULT_TEMPLATES) <= 8
    with pytest.raises(ParallaxError):
        build_prompts(["cat"], ["no placeholder"])
    with pytest.raises(ParallaxError):
        build_prompts(["cat"], [])


def test_class_text_embeddings_single_and_ensemble() -> None:
    model = OneHotClip()
    templates = ["a photo of a {}", "{}"]
    single = class_text_embeddings(model, ["cat", "dog"], templates, ensemble=False)
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(single, [[r, 0, 0, r], [0, r, 0, r]], atol=1e-6)
    ens = class_text_embeddings(model, ["cat"], templates, ensemble=True)
    # mean of (r,0,0,r) and (1,0,0,0) = ((r+1)/2, 0, 0, r/2), renormalised.
    expected = np.array([r + 1, 0, 0, r]) / math.hypot(r + 1, r)
    np.testing.assert_allclose(ens[0], expected, atol=1e-6)
    assert model.text_calls[-1] == ["a photo of a cat", "cat"]  # one batched call


def test_softmax_scores_checked_by_hand() -> None:
    classes = np.eye(4, dtype=np.float32)[:3]  # cat, dog, bird
    images = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], np.float32)  # red; yellow (cat = dog)
    s = zero_shot_scores(images, classes, logit_scale=10.0)
    e10 = math.exp(10)
    np.testing.assert_allclose(s.probs[0], [e10 / (e10 + 2), 1 / (e10 + 2), 1 / (e10 + 2)])
    # Yellow: cos = (r, r, 0) -> logits (10r, 10r, 0).
    a = math.exp(10 / math.sqrt(2))
    np.testing.assert_allclose(
        s.probs[1], [a / (2 * a + 1), a / (2 * a + 1), 1 / (2 * a + 1)], rtol=1e-6
    )
    np.testing.assert_allclose(s.probs.sum(axis=1), 1.0)
    assert s.raw is None
    assert s.ranks[0].tolist() == [1, 2, 3]  # equal dog/bird scores keep class order
    assert s.ranks[1].tolist() == [1, 2, 3]
    assert s.predicted().tolist() == [0, 0]
    top = s.top_k(0, ["cat", "dog", "bird"], k=2)
    assert [(lab, rank) for lab, _, rank in top] == [("cat", 1), ("dog", 2)]
    assert top[0][1] == pytest.approx(e10 / (e10 + 2))


def test_sigmoid_scores_for_siglip_style_models() -> None:
    classes = np.eye(3, dtype=np.float32)
    s = zero_shot_scores(np.array([[1, 0, 0]], np.float32), classes, 10.0, logit_bias=-10.0)
    # logits = 10*cos - 10 = (0, -10, -10) -> sigmoid (0.5, q, q) with q = 1/(1+e^10)
    q = 1 / (1 + math.exp(10))
    np.testing.assert_allclose(s.raw[0], [0.5, q, q])
    np.testing.assert_allclose(
        s.probs[0], [0.5 / (0.5 + 2 * q), q / (0.5 + 2 * q), q / (0.5 + 2 * q)]
    )
    np.testing.assert_allclose(s.logits[0], [0, -10, -10])


def test_scores_reject_mismatched_dims() -> None:
    with pytest.raises(ParallaxError):
        zero_shot_scores(np.ones((2, 3)), np.ones((2, 4)), 100.0)


def predict(models, images, texts, labels, templates=DEFAULT_TEMPLATES, ensemble=False, top_k=5):
    """``models`` (objects or specs) through the engine's one loop, ``predict_each``: objects
    are handed to it by its loader, specs load as the engine loads them."""
    objects = {m.spec: m for m in models if not isinstance(m, str)}

    def load(spec: str):
        if spec in objects:
            return objects[spec]
        from engine.models import load_model

        return load_model(spec)

    specs = [m if isinstance(m, str) else m.spec for m in models]
    params = PredictParams(templates=tuple(templates), ensemble=ensemble, top_k=top_k)
    run = predict_each(
        specs, list(images or []), list(texts or []), labels, params=params, load=load
    )
    return run.preds


def test_predict_exact_predictions_on_images_and_texts() -> None:
    labels = ["cat", "dog", "bird"]
    images = [solid((255, 0, 0)), solid((0, 0, 255)), solid((0, 200, 0))]
    (pred,) = predict([OneHotClip()], images, ["a dog barking", "birdsong"], labels, ["{}"])
    assert pred.ok and pred.model == "fake:onehot-clip"
    assert [top[0][0] for top in pred.images] == ["cat", "bird", "dog"]
    assert [top[0][0] for top in pred.texts] == ["dog", "bird"]
    e10 = math.exp(10)
    assert pred.images[0][0][1] == pytest.approx(e10 / (e10 + 2))
    assert [r for _, _, r in pred.images[0]] == [1, 2, 3]
    assert pred.load_ms is not None and pred.load_ms >= 0
    assert pred.latency_ms is not None and pred.latency_ms >= 0
    assert pred.probabilities["image"].shape == (3, 3)
    payload = pred.to_json()
    assert payload["images"][1][0] == {
        "label": "bird",
        "prob": pytest.approx(0.99991, abs=1e-4),
        "rank": 1,
    }
    # top_k limits the lists.
    (short,) = predict([OneHotClip()], images[:1], None, labels, ["{}"], top_k=1)
    assert len(short.images[0]) == 1


def test_predict_model_is_the_per_model_step_of_the_loop() -> None:
    """The loop adds only the loading: one model's answer is ``predict_model``'s."""
    images = [solid((255, 0, 0)), solid((0, 0, 255))]
    direct = predict_model(OneHotClip(), images, ["a dog"], ["cat", "dog", "bird"], ["{}"])
    (looped,) = predict([OneHotClip()], images, ["a dog"], ["cat", "dog", "bird"], ["{}"])
    assert direct.images == looped.images and direct.texts == looped.texts
    assert direct.load_ms is None  # loading is the loop's to time


def test_predict_keeps_going_when_models_fail() -> None:
    labels = ["cat", "dog"]
    images = [solid((255, 0, 0))]
    preds = predict(
        [Exploding(), ImageOnly(), TextOnly(), "nosuchkind:model", OneHotClip()],
        images,
        ["the cat sat"],
        labels,
        ["{}"],
    )
    exploding, image_only, text_only, missing, good = preds
    assert exploding.error == "RuntimeError: CUDA out of memory"  # one line
    assert image_only.error == NOT_CLIP_LIKE and image_only.images is None
    # A text encoder still classifies the texts, and says why the images were left out.
    assert text_only.error == NOT_CLIP_LIKE
    assert text_only.images is None and text_only.texts[0][0][0] == "cat"
    assert missing.error and "\n" not in missing.error and missing.model == "nosuchkind:model"
    assert missing.error.startswith("cannot load: ")
    assert good.ok and good.images[0][0][0] == "cat" and good.texts[0][0][0] == "cat"


def test_predict_reports_model_unavailable_from_loader() -> None:
    def load(spec: str):
        if spec == "good":
            return OneHotClip()
        raise ModelUnavailable(f"{spec}: weights not found offline")

    params = PredictParams(templates=("{}",))
    run = predict_each(
        ["missing", "good"], [solid((255, 0, 0))], [], ["cat", "dog"], params=params, load=load
    )
    bad, good = run.preds
    assert bad.error == "cannot load: missing: weights not found offline"
    assert good.ok and good.load_ms is not None and good.images[0][0][0] == "cat"


def test_predict_input_validation(tmp_path: Path) -> None:
    from engine.workspace import Workspace

    ws = Workspace(tmp_path)
    with pytest.raises(ParallaxError, match="at least one image or type a text"):
        ws.predict(["fake:x"], ["cat"])
    with pytest.raises(ParallaxError, match="duplicate label"):
        ws.predict(["fake:x"], ["cat", "cat"], texts=["x"])
    with pytest.raises(ParallaxError, match="non-empty"):
        ws.predict(["fake:x"], ["cat", " "], texts=["x"])


def test_workspace_predict_is_the_one_loop_and_holds_label_prompts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import engine.analysis.predict as predict_module
    import engine.models as models
    from engine.workspace import Workspace

    model = OneHotClip()
    monkeypatch.setattr(models, "load_model", lambda spec, device=None: model)
    calls: list[list[str]] = []
    real = predict_module.predict_each

    def spy(specs, *args, **kwargs):
        calls.append(list(specs))
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_each", spy)
    ws = Workspace(tmp_path)
    params = PredictParams(templates=("{}",))
    first = ws.predict(["fake:onehot"], ["cat", "dog"], texts=["a dog"], params=params)
    second = ws.predict(["fake:onehot"], ["cat", "dog"], texts=["the cat"], params=params)
    assert calls == [["fake:onehot"], ["fake:onehot"]]
    assert first.preds[0].texts[0][0][0] == "dog" and second.preds[0].texts[0][0][0] == "cat"
    # The label prompts were embedded once; the second request only embedded its input.
    assert model.text_calls == [["cat", "dog"], ["a dog"], ["the cat"]]


def test_zero_shot_accuracy_on_vectors() -> None:
    model = OneHotClip()
    vectors = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0.1, 0, 0]], np.float32)
    truth = ["cat", "dog", "dog", "cat"]
    out = zero_shot_accuracy(vectors, truth, model, ["cat", "dog", "bird"], ["{}"], ensemble=False)
    assert out["predictions"] == ["cat", "dog", "bird", "cat"]
    assert out["accuracy"] == 0.75
    assert out["confusion"] == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert out["per_class"] == {"cat": 1.0, "dog": 0.5, "bird": None}
    with pytest.raises(ParallaxError):
        zero_shot_accuracy(vectors, truth, TextOnly(), ["cat", "dog"], ["{}"], ensemble=False)


# -- through real pieces, when the other engineers' parts are present ------------------------
SHAPES_CLIP = Path(__file__).resolve().parent.parent / "models" / "shapes-clip"


def _load_real(spec: str):
    models = pytest.importorskip("engine.models")
    if not hasattr(models, "load_model"):
        pytest.skip("engine.models.load_model not available yet")
    try:
        return models.load_model(spec, device="cpu")
    except ParallaxError as exc:
        pytest.skip(f"{spec} unavailable: {exc}")


def test_zero_shot_with_shipped_shapes_clip() -> None:
    if not (SHAPES_CLIP / "open_clip_config.json").is_file():
        pytest.skip("models/shapes-clip not shipped yet")
    model = _load_real(f"open_clip:local-dir:{SHAPES_CLIP}")
    from engine.data.shapes import SHAPES, open_shapes

    ds = open_shapes(n=200, seed=123)
    images = [ds.load_image(i) for i in range(40)]
    preds = predict([model], images, None, list(SHAPES), ["{}", "a {} shape"], ensemble=True)
    assert preds[0].ok, preds[0].error
    hits = [top[0][0] == ds.labels[i] for i, top in enumerate(preds[0].images)]
    # A trained shapes CLIP is far above the 1/8 chance level.
    assert sum(hits) / len(hits) > 0.5


def _build_or_skip(builder: str, folder: Path) -> Path:
    fixtures = pytest.importorskip("tests.model_fixtures")
    if not hasattr(fixtures, builder):
        pytest.skip(f"tests.model_fixtures has no {builder}")
    try:
        return getattr(fixtures, builder)(folder)
    except Exception as exc:  # another engineer's fixture, possibly mid-change
        pytest.skip(f"{builder} failed: {type(exc).__name__}: {str(exc)[:80]}")


def _check_topk_lists(pred, n_labels: int) -> None:
    assert pred.ok, pred.error
    for tops in (pred.images, pred.texts):
        for top in tops:
            probs = [p for _, p, _ in top]
            assert sum(probs) == pytest.approx(1.0, abs=1e-5)
            assert [r for _, _, r in top] == list(range(1, n_labels + 1))
            assert probs == sorted(probs, reverse=True)


def test_predict_through_real_tiny_open_clip(tmp_path: Path) -> None:
    folder = _build_or_skip("build_open_clip_dir", tmp_path / "oc")
    clip = _load_real(f"open_clip:local-dir:{folder}")
    pixels = _load_real("baseline:pixels")
    images = [solid((255, 0, 0)), solid((0, 0, 255))]
    labels, templates = ["red", "blue", "green"], ["a {} image", "{}"]
    preds = predict([clip, pixels], images, ["red"], labels, templates, ensemble=True)
    _check_topk_lists(preds[0], 3)
    # predict() is exactly zero_shot_scores in the model's own space.
    cls = class_text_embeddings(clip, labels, templates, ensemble=True)
    direct = zero_shot_scores(clip.embed_images(images), cls, clip.logit_scale)
    np.testing.assert_allclose(preds[0].probabilities["image"], direct.probs, atol=1e-5)
    assert preds[1].error == NOT_CLIP_LIKE


def test_predict_through_real_tiny_siglip(tmp_path: Path) -> None:
    folder = _build_or_skip("build_hf_siglip_dir", tmp_path / "siglip")
    siglip = _load_real(f"hf:{folder}")
    bias = getattr(siglip, "logit_bias", None)
    assert bias is not None  # the sigmoid path is the one exercised
    images = [solid((255, 0, 0)), solid((0, 0, 255))]
    (pred,) = predict([siglip], images, ["red"], ["red", "blue"], ["a {} image"])
    _check_topk_lists(pred, 2)
    cls = class_text_embeddings(siglip, ["red", "blue"], ["a {} image"])
    direct = zero_shot_scores(siglip.embed_images(images), cls, siglip.logit_scale, bias)
    assert direct.raw is not None
    np.testing.assert_allclose(pred.probabilities["image"], direct.probs, atol=1e-5)


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_predict_prints_one_json_object(
    monkeypatch: pytest.MonkeyPatch, make_image, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import engine.models as models
    from engine.cli import main

    def load_model(spec: str, device: str | None = None):
        if spec == "fake:onehot":
            return OneHotClip()
        raise ModelUnavailable(f"{spec}: not available offline")

    monkeypatch.setattr(models, "load_model", load_model)
    red = make_image(tmp_path / "red.png", colour=(250, 0, 0))
    blue = make_image(tmp_path / "blue.jpg", colour=(0, 0, 250))
    argv = ["predict", "--model", "fake:onehot", "--model", "fake:missing"]
    argv += ["--labels", "cat, dog,bird", "--template", "{}", "--top-k", "2"]
    argv += ["--text", "a dog", str(red), str(blue), "--json", "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["labels"] == ["cat", "dog", "bird"]
    assert [i["kind"] for i in payload["inputs"]] == ["image", "image", "text"]
    good, missing = payload["models"]
    assert [top[0]["label"] for top in good["images"]] == ["cat", "bird"]
    assert good["texts"][0][0]["label"] == "dog" and len(good["texts"][0]) == 2
    assert missing["error"] == "cannot load: fake:missing: not available offline"
    assert "error" not in payload  # one model answered: a result, not an error


def test_cli_predict_where_no_model_answers_is_an_error(
    monkeypatch: pytest.MonkeyPatch, make_image, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import engine.models as models
    from engine.cli import main

    def load_model(spec: str, device: str | None = None):
        raise ModelUnavailable(f"{spec}: not available offline")

    monkeypatch.setattr(models, "load_model", load_model)
    red = make_image(tmp_path / "red.png", colour=(250, 0, 0))
    argv = ["predict", "--model", "fake:missing", "--labels", "cat,dog", str(red), "--json"]
    assert main([*argv, "--cache-dir", str(tmp_path / "c")]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["error"]["code"] == "model_unavailable"
    assert "fake:missing: not available offline" in payload["error"]["message"]
    assert payload["models"][0]["error"].startswith("cannot load: ")


def test_cli_predict_bad_file_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    bogus = tmp_path / "not-an-image.png"
    bogus.write_text("hello")
    argv = ["predict", "--model", "baseline:pixels", "--labels", "a,b", str(bogus)]
    rc = main([*argv, "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "not-an-image.png" in err and err.count("\n") == 1
    # --json: the same exit status, and the error as one JSON object on stdout
    rc = main([*argv, "--cache-dir", str(tmp_path / "c"), "--json"])
    out = capsys.readouterr()
    assert rc == 2 and out.err == ""
    error = json.loads(out.out)["error"]
    assert error["code"] == "bad_input" and "not-an-image.png" in error["message"]
