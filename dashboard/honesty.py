"""What a model cannot answer, said on the page: warning banners and each model's domain.

The checks are the engine's (the workspace's results carry ``warnings``: labels and queries a
model cannot tell apart; ``Workspace.model_domain`` reads what a model was trained on); this
module only draws them, beside the controls where a model is chosen and above the results it
produced. Warnings name labels and queries (visitor input): they are shown escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import streamlit as st

from dashboard import resources, ui

# The engine's lines (``engine.analysis.answerable``) that follow from another one: labels read
# as unknown words are embedded alike, and labels embedded alike score near chance.
UNKNOWN = "vocabulary"
ALIKE = "embeds these labels' prompts alike"
CHANCE = "scored near chance"


def _root_causes(warnings: Sequence[str]) -> list[str]:
    """A model's warnings without the lines that only restate a cause it already gave."""
    lines = list(dict.fromkeys(str(x) for x in warnings if x))
    if any(UNKNOWN in w for w in lines):
        follows = [w for w in lines if ALIKE in w or CHANCE in w]
        tail = "; so the model cannot tell them apart" if follows else ""
        return [w + (tail if UNKNOWN in w else "") for w in lines if w not in follows]
    if any(ALIKE in w for w in lines):
        return [w for w in lines if CHANCE not in w]
    return lines


def by_cause(warnings: Mapping[str, Sequence[str]]) -> list[str]:
    """One line per cause across models (``{model: its warnings}``): a model's lines that
    follow from another of its lines are left out (unknown words make labels embed alike,
    which makes them score near chance), and the same cause given by several models is one
    line naming them. Three models and three lines each for one unknown word: one line."""
    models_of: dict[str, list[str]] = {}
    for model, lines in warnings.items():
        for line in _root_causes(lines):
            name = re.compile(rf"(?<![\w:/.-]){re.escape(str(model))}(?![\w:/.-])")
            cause = name.sub("the model", line)
            models_of.setdefault(cause, []).append(str(model))
    out = []
    for cause, models in models_of.items():
        who = "every model" if len(warnings) > 1 and len(models) == len(warnings) else None
        out.append(f"{who or ', '.join(models)}: {cause}")
    return out


def warnings_banner(lines: Iterable[str]) -> None:
    """One warning box listing every line (nothing when there are none)."""
    shown = list(dict.fromkeys(str(x) for x in lines if x))
    if not shown:
        return
    head = "These results cannot be trusted as they stand:"
    body = "\n".join(f"- {ui.plain(line)}" for line in shown)
    st.warning(head + "\n" + body, icon=":material/warning:")


def domain_captions(specs: Iterable[str]) -> None:
    """A caption per chosen model that has a model card: what it was trained on."""
    ws = resources.workspace()
    for spec in dict.fromkeys(specs):
        line = ws.model_domain(str(spec))
        if line:
            st.caption(f":material/school: **{ui.plain(spec)}**: {ui.plain(line)}")
