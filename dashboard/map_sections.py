"""The Map page's sections under the maps: the selection, model agreement and text search.

Each takes what the page already has (the dataset, its map sources, the drawn maps) and draws
one section; the work is the workspace's (neighbour overlap, text search, the export) or
``dashboard.maps``' (tables).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import honesty, item_view, keys, maps, resources, state, ui, viewonly
from dashboard.map_view import (
    AGREEMENT,
    AGREEMENT_AUTO_LIMIT,
    SEARCH,
    DrawnMap,
    MapSource,
    agreement,
    clear_selection,
    model_modalities,
)

GALLERY_CAP = 60
GALLERY_COLUMNS = 10
AGREEMENT_TABLE_ROWS = 2_000


def gallery(ds: Any, rows: np.ndarray, captions: list[str] | None = None) -> None:
    """Thumbnails (images) or a table (texts) of ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return
    if not ds.has_images:
        frame = pd.DataFrame(
            {
                "id": [ds.ids[i] for i in rows],
                "label": [ds.labels[i] for i in rows],
                "text": [(ds.texts or [None] * len(ds))[i] for i in rows],
            }
        )
        if captions is not None:
            frame.insert(0, "score", captions)
        st.dataframe(frame, hide_index=True, width="stretch")
        return
    with ui.guard("Loading thumbnails"):
        images = resources.workspace().thumbnails(ds, rows.tolist())
        cols = st.columns(GALLERY_COLUMNS)
        for slot, (i, image) in enumerate(zip(rows, images, strict=True)):
            label = ds.labels[i]
            caption = str(ds.ids[i]) if label is None else f"{label}"
            if captions is not None:
                caption = f"{caption} · {captions[slot]}"
            cols[slot % GALLERY_COLUMNS].image(image, caption=ui.plain(caption), width="stretch")


# -- selection ----------------------------------------------------------------------------------
def selection_section(
    ds: Any, rows: np.ndarray, drawn: list[DrawnMap], by_label: dict[str, MapSource]
) -> None:
    """The selected items, their export, and (for one item) its nearest neighbours."""
    st.subheader("Selection")
    if len(rows) == 0:
        st.caption("Nothing selected yet.")
        return
    head = st.columns([4, 1])
    shown = min(len(rows), GALLERY_CAP)
    head[0].markdown(
        f"**{len(rows):,} item(s) selected**"
        + (f" · showing the first {shown}" if len(rows) > shown else "")
    )
    head[1].button("Clear selection", on_click=clear_selection, icon=":material/close:")
    gallery(ds, rows[:GALLERY_CAP])

    def export_frame() -> pd.DataFrame:
        stems = resources.workspace().export_columns([d.source.label for d in drawn])
        return maps.selection_frame(
            rows,
            ids=ds.ids,
            labels=ds.labels,
            metadata=ds.metadata(),
            coords={stem: d.coords for stem, d in zip(stems, drawn, strict=True)},
            texts=ds.texts,
        )

    formats = (
        ("CSV", maps.to_csv_bytes, "csv", "text/csv"),
        ("Parquet", maps.to_parquet_bytes, "parquet", "application/vnd.apache.parquet"),
    )
    places = st.columns([1, 1, 3])[:2]
    for place, (name, encode, suffix, mime) in zip(places, formats, strict=True):
        place.download_button(
            f"Download {name}",
            data=lambda encode=encode: encode(export_frame()),  # built only when clicked
            file_name=f"parallax-selection.{suffix}",
            mime=mime,
            icon=":material/download:",
        )
    # one item: its detail and its neighbours under every embedded model
    # (engine.analysis.item_neighbours)
    one = len(rows) == 1
    row = int(rows[0]) if one else item_view.pick_item(ds, rows[:GALLERY_CAP], "map_pick")
    if row is not None:
        entries = {label: s.entry for label, s in by_label.items()}
        item_view.show_item(ds, row, entries, key="map_item")


# -- export -------------------------------------------------------------------------------------
def export_maps_button(ds: Any, drawn: list[DrawnMap]) -> None:
    """Every drawn map in one Parquet file (``Workspace.export_bytes``): one row per item with
    its id, label, metadata and an x/y pair per model, for Embedding Atlas, pandas, Polars or
    DuckDB."""
    ws = resources.workspace()
    maps_out = [
        {
            "name": d.source.label,
            "coords": d.coords,
            "vectors": d.source.entry,
            "modality": d.source.modality,
            "info": {
                "vectors_key": d.source.entry.key,
                "map_key": d.projection_key,
                "method": d.method,
            },
        }
        for d in drawn
    ]
    slugs = ws.export_columns([m["name"] for m in maps_out])
    st.download_button(
        "Download these maps (Parquet)",
        data=lambda: ws.export_bytes(ds, maps_out),
        file_name="parallax-maps.parquet",
        mime="application/vnd.apache.parquet",
        icon=":material/download:",
        key="map_export_all",
        help="One row per item: id, label, metadata and an x/y pair per model "
        f"({', '.join(f'{s}_x/{s}_y' for s in slugs)}). Embedding Atlas opens it with "
        f"`embedding-atlas parallax-maps.parquet --x {slugs[0]}_x --y {slugs[0]}_y`.",
    )


# -- agreement ----------------------------------------------------------------------------------
def agreement_section(ds: Any, sources: list[MapSource], pair: tuple[str, str], k: int) -> None:
    """Per-item neighbourhood agreement of two models, lowest first."""
    st.subheader("Where do these models disagree about what is similar?")
    if len(sources) < 2:
        st.caption(
            "Neighbourhood agreement needs two embedded models: embed this dataset with another "
            "model on the Embed page."
        )
        return
    by_label = {s.label: s for s in sources}
    labels = list(by_label)
    n_items = len(ds)
    a1, a2, a3 = st.columns([2, 2, 1])
    if st.session_state.get(keys.MAP_AGREE_A) not in by_label:
        st.session_state[keys.MAP_AGREE_A] = pair[0] if pair[0] in by_label else labels[0]
    if st.session_state.get(keys.MAP_AGREE_B) not in by_label:
        st.session_state[keys.MAP_AGREE_B] = pair[1] if pair[1] in by_label else labels[1]
    a_label = a1.selectbox("Model A", labels, key=keys.MAP_AGREE_A)
    b_label = a2.selectbox("Model B", labels, key=keys.MAP_AGREE_B)
    k = int(a3.number_input("k", 1, 100, value=k, step=1, key=keys.MAP_AGREE_K))
    if a_label == b_label:
        st.caption("Pick two different models.")
        return
    a, b = by_label[a_label], by_label[b_label]
    overlap = None
    with ui.guard("Comparing neighbourhoods"):
        overlap = agreement(a, b, k, n_items)
    if overlap is None and n_items > AGREEMENT_AUTO_LIMIT:
        st.caption(
            f"{n_items:,} items: comparing every point's {k} nearest neighbours in both "
            "spaces takes a while."
        )
        if st.button("Compute the agreement", icon=":material/play_arrow:"):
            st.session_state[keys.agreement_go(a.entry.key, b.entry.key, k)] = True
            st.rerun()
    if overlap is None:
        return
    st.markdown(
        f"Mean overlap of the {k} nearest neighbours: **{float(overlap.mean()):.3f}** "
        f"(1 = both models agree on every neighbour). Lowest first; colour the maps by "
        f"*{AGREEMENT}* to see where."
    )
    table = maps.agreement_frame(overlap, ds.ids, ds.labels)
    if len(table) > AGREEMENT_TABLE_ROWS:
        st.caption(f"The {AGREEMENT_TABLE_ROWS:,} least agreeing of {len(table):,}.")
        table = table.head(AGREEMENT_TABLE_ROWS)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=300,
        column_config={
            "overlap": st.column_config.ProgressColumn(
                "overlap", min_value=0.0, max_value=1.0, format="%.2f"
            )
        },
        key="map_agreement_table",
    )


# -- text search --------------------------------------------------------------------------------
def search_section(ds: Any, sources: list[MapSource], search: dict[str, Any] | None) -> None:
    """Embed a text with a model's text tower and score every item of that model's vectors."""
    st.subheader("Text search")
    by_label = {s.label: s for s in sources}
    q1, q2 = st.columns([2, 3])
    query_label = q1.selectbox("Query model", list(by_label), key="map_query_model")
    source = by_label[query_label]
    mods = model_modalities(source.model)
    if not viewonly.model_loadable(source.model):
        st.info(
            f"Text search embeds the query with **{ui.plain(source.model)}**, which cannot be "
            "loaded "
            f"here. {viewonly.sentence()}.",
            icon=":material/visibility:",
        )
        return
    if mods is not None and "text" not in mods:
        st.info(
            f"**{ui.plain(source.model)}** has no text tower, so it cannot embed a text query. "
            "Text "
            "search needs a CLIP-like model that puts images and texts in one space (e.g. an "
            "open_clip model), or a text model for a text dataset.",
            icon=":material/info:",
        )
        return
    with q2.form("map_search_form", border=False):
        query = st.text_input("Find items matching a text", key="map_query")
        submitted = st.form_submit_button("Search", icon=":material/search:")
    if submitted and query.strip():
        with ui.guard(f"Searching with {source.model}"):
            state.get_model(source.model)  # view-only and the visitor's policy decide first
            found = state.workspace().search(ds, source.model, query.strip(), all_scores=True)
            st.session_state[keys.MAP_SEARCH] = {
                "query": query.strip(),
                "model": found.model,
                "scores": found.scores,
                "rows": [h.row for h in found.hits],
                "hits": [h.score for h in found.hits],
                "warnings": found.warnings,
            }
        if st.session_state.get(keys.MAP_SEARCH) is not search:
            st.rerun()  # the colour control above now offers the search score
    honesty.domain_captions([source.model])
    if search is not None:
        honesty.warnings_banner(search.get("warnings") or [])
        st.markdown(
            f"Best matches for **{ui.plain(search['query'])}** under {ui.plain(search['model'])} "
            f"(cosine); colour the maps by *{SEARCH}* to see them on any model's map."
        )
        gallery(ds, np.asarray(search["rows"]), [f"{s:.3f}" for s in search["hits"]])
