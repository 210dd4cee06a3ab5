"""What a model cannot answer, said on the page: warning banners and each model's domain.

The checks are the engine's (``engine.analysis.answerable`` finds labels and queries a model
cannot tell
apart, ``engine.models.domain`` reads what a model was trained on); this module only draws them,
beside the controls where a model is chosen and above the results it produced.
"""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from engine.models.domain import model_domain


def warnings_banner(lines: Iterable[str]) -> None:
    """One warning box listing every line (nothing when there are none)."""
    shown = list(dict.fromkeys(str(x) for x in lines if x))
    if not shown:
        return
    head = "These results cannot be trusted as they stand:"
    st.warning(head + "\n" + "\n".join(f"- {line}" for line in shown), icon=":material/warning:")


def domain_captions(specs: Iterable[str]) -> None:
    """A caption per chosen model that has a model card: what it was trained on."""
    for spec in dict.fromkeys(specs):
        line = model_domain(str(spec))
        if line:
            st.caption(f":material/school: **{spec}**: {line}")
