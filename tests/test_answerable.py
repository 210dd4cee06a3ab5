"""engine.analysis.answerable: labels and queries a model cannot tell apart are named before
scoring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.analysis.answerable import (
    collapse_warnings,
    comparison_warnings,
    indistinguishable_groups,
    label_warnings,
    query_warnings,
    score_warnings,
)
from engine.analysis.zeroshot import predict_model, zero_shot_accuracy
from engine.models.vocab import unknown_words, words_of
from tests.test_zeroshot import OneHotClip

REPO = Path(__file__).resolve().parent.parent
SHAPES_TOKENIZER = REPO / "models" / "shapes-clip" / "tokenizer.json"


class VocabClip(OneHotClip):
    """OneHotClip whose tokenizer knows only its four words (and a few function words)."""

    KNOWN = frozenset({"cat", "dog", "bird", "photo", "a", "of", "the"})

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words_of(text) if w.lower() not in self.KNOWN]


def solid(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), rgb)


def test_identical_class_vectors_form_one_group_and_distinct_ones_none() -> None:
    c = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0.001]], dtype=np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    assert indistinguishable_groups(c, logit_scale=100.0) == [[0, 1], [2, 3]]
    # The gap scales with the temperature: at scale 1 orthogonal vectors (gap 1.41) still part.
    assert indistinguishable_groups(c, logit_scale=1.0) == [[0, 1], [2, 3]]
    assert indistinguishable_groups(c[[0, 2]], logit_scale=100.0) == []


def test_unknown_labels_are_named_before_scoring_and_flat_scores_after() -> None:
    model = VocabClip()
    images = [solid((250, 0, 0)), solid((240, 5, 0))]  # both plainly "cat" to this model
    pred = predict_model(model, images, None, ["astronaut", "cat", "coffee"], ["{}"])
    text = " | ".join(pred.warnings)
    assert "'astronaut', 'coffee': words outside fake:onehot-clip's vocabulary" in text
    # astronaut and coffee embed to the same (zero) vector: one group; cat stands apart.
    assert any(
        w.startswith("'astronaut', 'coffee': fake:onehot-clip embeds") for w in pred.warnings
    )
    assert len(pred.warnings) == 2 and not any("'cat'" in w for w in pred.warnings)
    assert pred.to_json()["warnings"] == pred.warnings


def test_known_distinct_labels_give_no_warnings() -> None:
    pred = predict_model(VocabClip(), [solid((250, 0, 0))], ["a dog"], ["cat", "dog"], ["{}"])
    assert pred.ok and pred.warnings == []


def test_near_chance_scores_are_reported_with_their_share() -> None:
    flat = np.full((4, 3), 1 / 3)
    sharp = np.array([[0.9, 0.05, 0.05]])
    (line,) = score_warnings(["a", "b", "c"], flat, "image")
    assert "every image scored near chance (33.3 % each)" in line and "'a', 'b', 'c'" in line
    (line,) = score_warnings(["a", "b", "c"], np.vstack([flat, sharp]), "image")
    assert "4 of 5 images" in line
    assert score_warnings(["a", "b", "c"], np.vstack([sharp, sharp, flat[:1]])) == []


def test_collapse_onto_one_label_is_named() -> None:
    truth = ["cat", "dog", "bird"] * 10
    (line,) = collapse_warnings(["cat"] * 30, truth)
    assert line.startswith("'cat': predicted for 100.0 % of the items") and "3 labels" in line
    assert collapse_warnings(truth, truth) == []
    assert collapse_warnings(["cat"] * 30, ["cat"] * 30) == []  # one true label: no collapse


def test_zero_shot_accuracy_carries_warnings_and_reports_read_them() -> None:
    model = VocabClip()
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 2, 0, 1, 2] * 2]
    truth = ["astronaut", "coffee", "tea"] * 4
    out = zero_shot_accuracy(vectors, truth, model, ["astronaut", "coffee", "tea"], ["{}"], False)
    assert any("cannot tell them apart" in w for w in out["warnings"])
    models = [{"model": "m", "zero_shot": {"warnings": []}}, {"model": "knn-only"}]
    lines = comparison_warnings(models, {"m": {"zero_shot": ["tea"] * 12}}, [*truth, None])
    assert lines == [
        "m: zero-shot: 'tea': predicted for 100.0 % of the items although the dataset has "
        "3 labels: the model is not telling them apart"
    ]


def test_query_warnings_name_unknown_words() -> None:
    model = VocabClip()
    assert query_warnings(model, "a photo of a cat") == []
    (line,) = query_warnings(model, "a photo of a tabby cat")
    assert "does not know 'tabby'" in line and "'a photo of a cat'" in line
    (line,) = query_warnings(model, "astronaut")
    assert "knows none of the words" in line
    assert query_warnings(OneHotClip(), "astronaut") == []  # no vocabulary to ask: say nothing


def test_label_warnings_without_a_vocabulary_still_check_vectors() -> None:
    c = np.array([[1, 0], [1, 0]], dtype=np.float32)
    (line,) = label_warnings(OneHotClip(), ["x", "y"], c)
    assert line.startswith("'x', 'y': fake:onehot-clip embeds these labels' prompts alike")


def test_unknown_words_of_a_word_level_hf_tokenizer() -> None:
    transformers = pytest.importorskip("transformers")
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(SHAPES_TOKENIZER), unk_token="[UNK]"
    )
    assert unknown_words(tok, "a photo of a red circle.") == []
    assert unknown_words(tok, "a photo of a cat, a cat and coffee") == ["cat", "coffee"]
    assert unknown_words(object(), "cat") is None  # no unknown token: nothing can be said


@pytest.mark.skipif(not SHAPES_TOKENIZER.is_file(), reason="models/shapes-clip not shipped")
def test_cli_predict_with_shapes_clip_warns_on_labels_outside_its_domain(tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    solid((200, 30, 30)).resize((64, 64)).save(image)
    argv = [sys.executable, "-m", "engine", "predict", "--model", "demo:shapes-clip"]
    argv += ["--labels", "astronaut,cat,coffee", str(image), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(done.stdout)
    warnings = payload["warnings"]
    assert warnings and payload["models"][0]["warnings"]
    assert any(
        "'astronaut', 'cat', 'coffee'" in w and "cannot tell them apart" in w for w in warnings
    )
    assert any("demo:shapes-clip's vocabulary (astronaut, cat, coffee)" in w for w in warnings)
