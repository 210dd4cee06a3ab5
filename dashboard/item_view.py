"""One item in detail: the full image or text, its label and metadata, and its nearest
neighbours under every embedded model side by side, with how much the models agree.

The neighbours and their overlap are the workspace's (``Workspace.item_neighbours``); this module
draws them. The Map page opens it for a one-item selection (or an item picked from a larger
one), the Compare page for one picked row of its disagreement table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import projections, resources, ui

COLUMNS_PER_ROW = 4  # model columns side by side before wrapping
SHARED = "●"  # marks a neighbour every model agrees on


def item_caption(ds: Any, row: int, markdown: bool = True) -> str:
    """``id · label`` of one item; escaped for Markdown (an image caption is Markdown, the
    data is not), as is for an option of a menu (plain text)."""
    label = ds.labels[row]
    text = f"{ds.ids[row]}" + ("" if label is None else f" · {label}")
    return ui.plain(text) if markdown else text


def _details(ds: Any, row: int) -> None:
    """The item itself (full size), its label and metadata."""
    left, right = st.columns([2, 3])
    with left:
        if ds.has_images:
            with ui.guard(f"Loading item {ds.ids[row]}"):
                st.image(ds.load_image(row), caption=item_caption(ds, row), width="stretch")
        if ds.texts is not None:
            st.markdown(f"> {ui.plain(ds.texts[row])}")
    with right:
        fields: dict[str, Any] = {"id": ds.ids[row], "row": row, "label": ds.labels[row]}
        meta = ds.metadata()
        if len(meta.columns):
            fields.update({str(c): meta.iloc[row][c] for c in meta.columns})
        table = pd.DataFrame({"field": list(fields), "value": [str(v) for v in fields.values()]})
        st.dataframe(table, hide_index=True, width="stretch", key=f"item_fields_{row}")


def _neighbour_column(ds: Any, result: Any, index: int, key: str) -> None:
    m = result.models[index]
    shared = set(result.shared_by_all)
    st.markdown(f"**{ui.plain(m.model)}**")
    rows = np.asarray(m.rows, dtype=np.int64)
    if ds.has_images:
        images = resources.workspace().thumbnails(ds, rows.tolist())
        cols = st.columns(2)
        for slot, (r, image) in enumerate(zip(rows, images, strict=True)):
            mark = f" {SHARED}" if int(r) in shared else ""
            caption = f"{item_caption(ds, int(r))} · {m.cosines[slot]:.3f}{mark}"
            cols[slot % 2].image(image, caption=caption, width="stretch")
        return
    frame = pd.DataFrame(
        {
            "text": [(ds.texts or [None] * len(ds))[int(r)] for r in rows],
            "label": [ds.labels[int(r)] for r in rows],
            "cosine": m.cosines,
            "all models": [int(r) in shared for r in rows],
        }
    )
    st.dataframe(frame, hide_index=True, width="stretch", key=f"{key}_nn_{index}")


def show_item(ds: Any, row: int, entries: Mapping[str, Any], key: str = "item") -> None:
    """The detail of ``row``; ``entries`` maps a model's name to its vectors entry (``load()``
    gives the N x D vectors of this dataset)."""
    row = int(row)
    st.markdown(f"#### Item {ui.plain(ds.ids[row])}")
    _details(ds, row)
    ws = resources.workspace()
    default_k, max_k = ws.neighbour_k
    k = int(st.number_input("Neighbours per model", 1, max_k, default_k, key=f"{key}_k"))
    result = None
    with ui.guard(f"Finding the neighbours of {ds.ids[row]}"):
        result = ws.item_neighbours({name: e.load() for name, e in entries.items()}, row, k)
    if result is None:
        return
    st.caption(
        f"The {result.k} nearest items under each model (cosine); {SHARED} marks the "
        f"{len(result.shared_by_all)} item(s) every model puts among them."
    )
    for start in range(0, len(result.models), COLUMNS_PER_ROW):
        cols = st.columns(COLUMNS_PER_ROW)
        for j in range(start, min(start + COLUMNS_PER_ROW, len(result.models))):
            with cols[j - start]:
                _neighbour_column(ds, result, j, key)
    if len(result.models) > 1:
        names, matrix = result.overlap_matrix()
        st.markdown(f"**Shared neighbours** (of {result.k})")
        st.dataframe(
            pd.DataFrame(matrix, index=names, columns=names),
            width="stretch",
            key=f"{key}_overlap",
        )


def pick_item(ds: Any, rows: np.ndarray, key: str) -> int | None:
    """A menu to open one item of a larger selection (None until one is picked)."""
    options = [None, *(int(r) for r in rows)]
    return st.selectbox(
        "Open one item in detail",
        options,
        key=key,
        format_func=lambda r: "—" if r is None else item_caption(ds, r, markdown=False),
    )


def report_entries(report: Any, ds: Any) -> dict[str, Any]:
    """The vectors entry each model of a comparison report used, by model name."""
    by_key = {e.key: e for mods in projections.embedded_models(ds).values() for e in mods.values()}
    return {
        m["model"]: by_key[m["vectors_key"]]
        for m in report.models
        if not m.get("error") and m.get("vectors_key") in by_key
    }
