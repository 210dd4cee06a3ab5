"""Map: 2-D maps of the current dataset under up to four models, side by side, linked.

* PCA is drawn at once; UMAP is computed in a background job and replaces it when ready.
* Colour by label, any metadata column, neighbourhood agreement, or a text-search score.
* Hovering a point shows the item (thumbnail or text) in a floating card (``dashboard.hover``).
* Lasso / box / click selections fill a gallery, export as CSV / Parquet, and highlight the same
  rows in every map.
* Neighbourhood agreement between two models, text search with a CLIP-like model, and the
  nearest neighbours of a single selected item.

The parts are ``dashboard.map_view`` (sources, selection, one drawn map) and
``dashboard.map_sections`` (the sections under the maps).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import filter_panel, hover, keys, links, maps, state, ui, urlstate
from dashboard import map_sections as sections
from dashboard import map_view as mv
from engine.params import COMPARE

MAX_MAPS = 4

links.start_page("Map")

spec = state.dataset_spec()
ds = state.page_dataset()

sources: list[mv.MapSource] = []
with ui.guard("Reading the cache"):
    sources = mv.embedded_sources(ds, state.model_specs())
if not sources:
    state.sidebar(spec, ds, [], what="Maps")
    links.sync_url(urlstate.View(dataset=spec, models=state.model_specs()))
    if state.view_only():
        state.view_only_notice(f"Nothing is embedded for {ui.plain(spec)}")
        ui.page_link("data.py", "Open a bundle (.parallax.zip)", ":material/dataset:")
        st.stop()
    st.info(
        f"Nothing is embedded yet for **{ui.plain(spec)}**. Embed it with one or more models "
        "first; its maps appear here as soon as the vectors are in the cache.",
        icon=":material/scatter_plot:",
    )
    ui.page_link("embed.py", "Go to the Embed page", ":material/memory:")
    st.stop()

fingerprint = ds.fingerprint()
n_items = len(ds)
mv.sync_selection(fingerprint, n_items)
filter_panel.apply_subset_link(ds)  # ?subset=NAME: before the URL is rewritten below
by_label = {s.label: s for s in sources}
labels = list(by_label)

# -- controls -------------------------------------------------------------------------------------
if keys.MAP_MODELS in st.session_state:  # drop choices whose vectors are gone
    st.session_state[keys.MAP_MODELS] = [
        m for m in st.session_state[keys.MAP_MODELS] if m in by_label
    ]
if not st.session_state.get(keys.MAP_MODELS):
    st.session_state[keys.MAP_MODELS] = mv.default_maps(sources)
if st.session_state.get(keys.MAP_METHOD) not in ("UMAP", "PCA"):
    st.session_state[keys.MAP_METHOD] = "UMAP"

search = st.session_state.get(keys.MAP_SEARCH)
colour_options = [mv.LABEL, *[str(c) for c in ds.metadata().columns]]
if len(sources) >= 2:
    colour_options.append(mv.AGREEMENT)
if search is not None:
    colour_options.append(mv.SEARCH)
if st.session_state.get(keys.MAP_COLOUR) not in colour_options:
    st.session_state[keys.MAP_COLOUR] = mv.LABEL

c1, c2, c3 = st.columns([3, 1, 1.4])
chosen = c1.multiselect(
    f"Models (up to {MAX_MAPS}, side by side)",
    labels,
    key=keys.MAP_MODELS,
    max_selections=MAX_MAPS,
)
method = c2.segmented_control("Projection", ["UMAP", "PCA"], key=keys.MAP_METHOD) or "UMAP"
colour_by = c3.selectbox("Colour by", colour_options, key=keys.MAP_COLOUR)
rows_selected = mv.selected_rows()
state.sidebar(spec, ds, list(chosen), what="Maps")  # every map drawn, by its model

links.sync_url(
    urlstate.View(
        dataset=spec,
        models=list(chosen),
        colour=colour_by if colour_by != mv.SEARCH else None,
        method=method,
        selection=rows_selected,
    )
)
if not chosen:
    st.info("Pick at least one model above to draw its map.")
    st.stop()

# -- colours: the agreement pair is shared with the agreement section ---------------------------
pair_default = [*chosen, *labels]
agree_a = st.session_state.get(keys.MAP_AGREE_A, pair_default[0])
agree_b = st.session_state.get(
    keys.MAP_AGREE_B, next((x for x in pair_default if x != agree_a), agree_a)
)
agree_k = int(st.session_state.get(keys.MAP_AGREE_K, COMPARE.k))

colouring = maps.Colouring.none()
with ui.guard("Preparing the colours"):
    if colour_by == mv.AGREEMENT:
        overlap = None
        if agree_a in by_label and agree_b in by_label:
            overlap = mv.agreement(by_label[agree_a], by_label[agree_b], agree_k, n_items)
        if overlap is None:
            st.caption("Compute the agreement below to colour by it.")
        else:
            colouring = maps.numeric(
                overlap, f"{agree_k}-NN overlap", colorscale="RdYlBu", reverse=False
            )
    elif colour_by == mv.SEARCH and search is not None:
        colouring = maps.numeric(search["scores"], f"score: {search['query'][:24]}")
    else:
        colouring = mv.colouring_cached(spec, fingerprint, colour_by)

filter_mask = filter_panel.filter_controls(ds)  # items outside it are greyed on every map
colouring = filter_panel.dim_outside(colouring, filter_mask)

# -- the maps -------------------------------------------------------------------------------------
v1, v2, v3 = st.columns(3)
aligned = v1.toggle(
    "Align maps onto the first",
    value=True,
    key=keys.MAP_ALIGNED,
    help="Rotate, scale and shift each map onto the first (Procrustes on the shared items), "
    "so the same items sit in the same region of every map.",
    disabled=len(chosen) < 2,
)
displacement = v2.toggle(
    "Show displacement",
    key=keys.MAP_DISPLACEMENT,
    help="Colour each item by how far it moves between the first two maps (aligned): bright "
    "items are placed differently by the two models.",
    disabled=len(chosen) < 2,
)
link_zoom = v3.toggle("Link zoom", key=keys.MAP_LINK_ZOOM, disabled=len(chosen) < 2)
drawn: list[mv.DrawnMap] = []
pending_jobs: list[Any] = []
with ui.guard("Drawing the maps"):
    drawn, pending_jobs = mv.draw_maps(
        [by_label[label] for label in chosen],
        method,
        colouring,
        n_items=n_items,
        height=560 if len(chosen) <= 2 else 440,
        aligned=aligned,
        displacement=displacement and len(chosen) >= 2,
        link_zoom=link_zoom,
    )
mv.umap_progress(pending_jobs)

st.caption(
    "Every point is drawn. Hover a point to preview the item; click one, or pick **Lasso** or "
    "**Box** above a map and drag, to select items and list them below: the same items are "
    "highlighted in every map. Click a legend entry to hide or show that class."
)
hover.hover_preview(spec)
if drawn:
    sections.export_maps_button(ds, drawn)

sections.selection_section(ds, rows_selected, drawn, by_label)
filter_panel.subsets_section(ds, rows_selected)
sections.agreement_section(ds, sources, (agree_a, agree_b), agree_k)
sections.search_section(ds, sources, search)
