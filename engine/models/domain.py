"""What a model was trained on, in one line, read from its model card (no model is loaded).

Shown where a model is chosen, so a user sees before asking it about cats that the shipped
CLIPs only ever saw generated shapes. Read from ``MODEL_CARD.md`` beside the weights (its
``Training:`` line names the dataset, its first paragraph's last sentence what the model knows)
and, for the shapes demo, the generator's own shape list.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from engine.errors import ParallaxError

CARD = "MODEL_CARD.md"
_TRAINING = re.compile(r"^Training:\s*`([^`]+)`", re.MULTILINE)


def _folder(spec: str) -> Path | None:
    from engine.models.spec import parse_spec

    try:
        parsed = parse_spec(spec)
    except ParallaxError:
        return None
    path = Path(parsed.path) if parsed.path else None
    return path if path is not None and path.is_dir() else None


def _first_paragraph(card: str) -> str:
    lines = [ln.strip() for ln in card.splitlines()]
    body: list[str] = []
    for ln in lines[1:] if lines and lines[0].startswith("#") else lines:
        if not ln and body:
            break
        if ln and not ln.startswith("#"):
            body.append(ln)
    return " ".join(body)


def _dataset_phrase(dataset: str) -> str:
    if dataset.startswith("demo:shapes"):
        from engine.data.shapes import COLOURS, SHAPES

        return (
            f"trained on generated shapes only: {', '.join(SHAPES)} "
            f"({len(COLOURS)} colours, {dataset})"
        )
    return f"trained on {dataset}"


def domain_from_card(card: str) -> str | None:
    """The domain line of a model card's text (None when the card names no training data)."""
    found = _TRAINING.search(card)
    if found is None:
        return None
    line = _dataset_phrase(found.group(1).strip())
    sentences = re.split(r"(?<=[.!?])\s+", _first_paragraph(card))
    knows = next((s for s in reversed(sentences) if " knows " in f" {s} "), "")
    return f"{line}. {knows}".strip() if knows else f"{line}."


@functools.lru_cache(maxsize=64)
def model_domain(spec: str) -> str | None:
    """One line saying what ``spec`` was trained on, from the card beside its weights; None
    for models without a local card (hub models, baselines, a dataset's own vectors)."""
    folder = _folder(spec)
    if folder is None or not (folder / CARD).is_file():
        return None
    try:
        return domain_from_card((folder / CARD).read_text(encoding="utf-8"))
    except OSError:
        return None
