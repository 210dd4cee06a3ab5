"""Map: 2-D maps of the current dataset under up to four models, side by side, linked.

* PCA is drawn at once; UMAP is computed in a background job and replaces it when ready.
* Colour by label, any metadata column, neighbourhood agreement, or a text-search score.
* Hovering a point shows the item (thumbnail or text) in a floating card (``dashboard.hover``).
* Lasso / box / click selections fill a gallery, export as CSV / Parquet, and highlight the same
  rows in every map.
* Neighbourhood agreement between two models, text search with a CLIP-like model, and the
  nearest neighbours of a single selected item.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import wait
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import hover, maps, state, ui, urlstate, viewonly
from engine.cache import Entry
from engine.errors import ParallaxError

POLL_S = 1.0
MAX_MAPS = 4
GALLERY_CAP = 60
GALLERY_COLUMNS = 10
NEIGHBOURS = 12
SEARCH_RESULTS = 12
AGREEMENT_AUTO_LIMIT = 20_000  # above this many items agreement is computed on request only
AGREEMENT_TABLE_ROWS = 2_000

LABEL = "label"
AGREEMENT = "neighbourhood agreement"
SEARCH = "text search score"

K_ROWS = "map_selected_rows"
K_SOURCE = "map_selection_source"
K_SEL_DATASET = "map_selection_dataset"
K_RENDER = "_map_render"
K_SEARCH = "map_search"


@dataclass(frozen=True)
class MapSource:
    """One embedded (model, modality) of the current dataset: what a map is made from."""

    label: str
    model: str
    modality: str
    entry: Entry


@dataclass
class DrawnMap:
    source: MapSource
    coords: np.ndarray
    method: str
    projection_key: str
    chart_key: str


# -- discovery ----------------------------------------------------------------------------------
def embedded_sources(ds: Any) -> list[MapSource]:
    """Every finished vectors entry of this dataset, newest per (model, modality)."""
    fp = ds.fingerprint()
    found: dict[tuple[str, str], Entry] = {}
    for e in state.engine_cache().entries("vectors"):  # newest first
        if e.manifest.get("dataset_fingerprint") != fp or int(e.manifest.get("n", -1)) != len(ds):
            continue
        pair = (str(e.manifest.get("model")), str(e.manifest.get("modality")))
        found.setdefault(pair, e)
    per_model: dict[str, int] = {}
    for model, _ in found:
        per_model[model] = per_model.get(model, 0) + 1
    out = []
    for (model, modality), entry in found.items():
        label = f"{model} · {modality}" if per_model[model] > 1 else model
        out.append(MapSource(label, model, modality, entry))
    preferred = state.model_specs()
    out.sort(
        key=lambda s: (
            s.model not in preferred,
            preferred.index(s.model) if s.model in preferred else 0,
            s.label,
        )
    )
    return out


def model_modalities(spec: str) -> frozenset[str] | None:
    """A model's modalities from the registry (no weights loaded); None if unknown."""
    try:
        for m in state.known_models():
            if m.get("spec") == spec:
                return frozenset(m.get("modalities") or ())
    except Exception:  # the registry is optional here: an unknown model is simply "unknown"
        return None
    return None


def chart_key(label: str) -> str:
    return "map_chart_" + hashlib.sha1(label.encode()).hexdigest()[:12]


# -- cached derived data ------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def map_quality_cached(
    projection_key: str, vectors_path: str, coords_path: str
) -> dict[str, float]:
    """Trustworthiness and kNN recall of a map (keyed by the projection's cache key)."""
    from engine.project import map_quality

    vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
    coords = np.load(coords_path, allow_pickle=False)
    return map_quality(vectors, coords)


@st.cache_data(show_spinner=False, max_entries=16)
def agreement_cached(key_a: str, path_a: str, key_b: str, path_b: str, k: int) -> np.ndarray:
    """Per-point k-NN overlap of two vector sets (keyed by their cache keys)."""
    x = np.load(path_a, mmap_mode="r", allow_pickle=False)
    y = np.load(path_b, mmap_mode="r", allow_pickle=False)
    try:
        from engine.metrics import knn_overlap  # type: ignore[import-not-found]
    except ImportError:
        return maps.knn_overlap_exact(np.asarray(x), np.asarray(y), k)
    return np.asarray(knn_overlap(np.asarray(x), np.asarray(y), k), dtype=np.float32)


@st.cache_data(show_spinner=False, max_entries=16)
def colouring_cached(spec: str, fingerprint: str, column: str) -> maps.Colouring:
    ds = state.get_dataset(spec)
    if column == LABEL:
        return maps.categorical(ds.labels, LABEL)
    return maps.colouring_for_column(ds.metadata()[column], column)


# -- projections --------------------------------------------------------------------------------
def coords_for(source: MapSource, method: str) -> tuple[np.ndarray, str, str, Any]:
    """(coords, method drawn, projection key, pending UMAP job or None)."""
    from engine.project import project

    pending = None
    if method == "UMAP" and not state.umap_allowed(source.entry):
        st.caption(f"No UMAP map of {source.label} in the cache, so PCA; {viewonly.MESSAGE}")
    elif method == "UMAP":
        job = state.projection_job(source.entry, "umap")
        wait([job.future], timeout=0.2)  # a map already in the cache comes back at once
        if job.future.done():
            exc = job.future.exception()
            if exc is None:
                result = job.future.result()
                return state.load_coords(result.key, str(result.path)), "UMAP", result.key, None
            ui.show_error(exc, f"Computing the UMAP map of {source.label}")
            if st.button("Retry", key=f"retry_{chart_key(source.label)}"):
                state.job_runner().forget(job.key)
                st.rerun()
        pending = job if not job.future.done() else None
    result = project(source.entry, "pca", cache=state.engine_cache())
    return state.load_coords(result.key, str(result.path)), "PCA", result.key, pending


# -- selection ----------------------------------------------------------------------------------
def selected_rows() -> np.ndarray:
    return np.asarray(st.session_state.get(K_ROWS, np.zeros(0, np.int64)), dtype=np.int64)


def set_selection(rows: np.ndarray, source: str | None) -> None:
    st.session_state[K_ROWS] = np.asarray(rows, dtype=np.int64)
    st.session_state[K_SOURCE] = source


def on_select(key: str) -> None:
    """Callback of every map: turn its plotly selection into dataset rows, shared by all maps."""
    info = st.session_state.get(K_RENDER, {}).get(key)
    event = st.session_state.get(key)
    if info is None or event is None:
        return
    selection = event.get("selection") if hasattr(event, "get") else None
    coords = None
    if info["aggregated"]:
        coords = state.load_coords(info["projection_key"], info["coords_path"])
    rows = maps.selection_rows(selection, info["n"], trace_rows=info["trace_rows"], coords=coords)
    set_selection(rows, key)


def clear_selection() -> None:
    set_selection(np.zeros(0, np.int64), None)


# -- galleries ----------------------------------------------------------------------------------
def gallery(ds: Any, rows: np.ndarray, captions: list[str] | None = None) -> None:
    """Thumbnails (images) or a table (texts) of ``rows``."""
    from engine.thumbnails import thumbnails

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
        images = thumbnails(ds, rows.tolist(), state.engine_cache(), build_missing=False)
        cols = st.columns(GALLERY_COLUMNS)
        for slot, (i, image) in enumerate(zip(rows, images, strict=True)):
            label = ds.labels[i]
            caption = str(ds.ids[i]) if label is None else f"{label}"
            if captions is not None:
                caption = f"{caption} · {captions[slot]}"
            cols[slot % GALLERY_COLUMNS].image(image, caption=caption, width="stretch")


# ================================================================================ the page
st.title("Map")
state.restore_from_url()
if (link_error := state.url_error()) is not None:
    st.warning(link_error, icon=":material/link_off:")

spec = state.dataset_spec()
ds = None
with ui.guard(f"Opening {spec}"):
    ds = state.get_dataset(spec)
if ds is None:
    ui.page_link("data.py", "Choose another dataset", ":material/dataset:")
    st.stop()

sources: list[MapSource] = []
with ui.guard("Reading the cache"):
    sources = embedded_sources(ds)
if not sources:
    if state.view_only():
        state.view_only_notice(f"Nothing is embedded for {spec}")
        ui.page_link("data.py", "Open a bundle (.parallax.zip)", ":material/dataset:")
        st.stop()
    st.info(
        f"Nothing is embedded yet for **{spec}**. Embed it with one or more models first; "
        "its maps appear here as soon as the vectors are in the cache.",
        icon=":material/scatter_plot:",
    )
    ui.page_link("embed.py", "Go to the Embed page", ":material/memory:")
    st.stop()

fingerprint = ds.fingerprint()
n_items = len(ds)
if st.session_state.get(K_SEL_DATASET, fingerprint) != fingerprint:  # the dataset changed
    clear_selection()
    st.session_state.pop(K_SEARCH, None)
st.session_state[K_SEL_DATASET] = fingerprint
if state.URL_SELECTION in st.session_state:  # rows from a shared link, now that N is known
    url_rows = np.asarray(st.session_state.pop(state.URL_SELECTION), dtype=np.int64)
    set_selection(url_rows[(url_rows >= 0) & (url_rows < len(ds))], "link")

by_label = {s.label: s for s in sources}
labels = list(by_label)

# -- controls -------------------------------------------------------------------------------------
if "map_models" in st.session_state:  # drop choices whose vectors are gone
    st.session_state["map_models"] = [m for m in st.session_state["map_models"] if m in by_label]
if not st.session_state.get("map_models"):
    st.session_state["map_models"] = labels[: min(2, len(labels))]
if st.session_state.get("map_method") not in ("UMAP", "PCA"):
    st.session_state["map_method"] = "UMAP"

meta_frame = ds.metadata()
search = st.session_state.get(K_SEARCH)
colour_options = [LABEL, *[str(c) for c in meta_frame.columns]]
if len(sources) >= 2:
    colour_options.append(AGREEMENT)
if search is not None:
    colour_options.append(SEARCH)
if st.session_state.get("map_colour") not in colour_options:
    st.session_state["map_colour"] = LABEL

c1, c2, c3 = st.columns([3, 1, 1.4])
chosen = c1.multiselect(
    f"Models (up to {MAX_MAPS}, side by side)",
    labels,
    key="map_models",
    max_selections=MAX_MAPS,
)
method = c2.segmented_control("Projection", ["UMAP", "PCA"], key="map_method") or "UMAP"
colour_by = c3.selectbox("Colour by", colour_options, key="map_colour")

state.sync_url(
    urlstate.View(
        dataset=spec,
        models=list(chosen),
        colour=colour_by if colour_by != SEARCH else None,
        method=method,
        selection=selected_rows(),
    )
)

if not chosen:
    st.info("Pick at least one model above to draw its map.")
    st.stop()

# -- agreement pair (used by the colouring and by the agreement section) -----------------------
pair_default = [*chosen, *labels]
agree_a = st.session_state.get("map_agree_a", pair_default[0])
agree_b = st.session_state.get(
    "map_agree_b", next((x for x in pair_default if x != agree_a), agree_a)
)
agree_k = int(st.session_state.get("map_agree_k", 10))


def agreement_for(a: str, b: str, k: int, compute: bool) -> np.ndarray | None:
    if a not in by_label or b not in by_label or a == b:
        return None
    ea, eb = by_label[a].entry, by_label[b].entry
    args = (ea.key, str(ea.array_path), eb.key, str(eb.array_path), k)
    if (
        not compute
        and n_items > AGREEMENT_AUTO_LIMIT
        and not st.session_state.get(f"agree_go_{ea.key}_{eb.key}_{k}")
    ):
        return None
    with st.spinner(f"Comparing {k}-nearest neighbours of {a} and {b}…"):
        return agreement_cached(*args)


colouring = maps.Colouring.none()
with ui.guard("Preparing the colours"):
    if colour_by == AGREEMENT:
        overlap = agreement_for(agree_a, agree_b, agree_k, compute=False)
        if overlap is None:
            st.caption("Compute the agreement below to colour by it.")
        else:
            colouring = maps.numeric(
                overlap, f"{agree_k}-NN overlap", colorscale="RdYlBu", reverse=False
            )
    elif colour_by == SEARCH and search is not None:
        colouring = maps.numeric(search["scores"], f"score: {search['query'][:24]}")
    else:
        colouring = colouring_cached(spec, fingerprint, colour_by)

# -- the maps -------------------------------------------------------------------------------------
plan = maps.display_plan(n_items)
if plan.aggregated:
    st.caption(plan.note())
rows_selected = selected_rows()
highlight = rows_selected if len(rows_selected) else None
render_info: dict[str, Any] = {}
drawn: list[DrawnMap] = []
pending_jobs: list[Any] = []
columns = st.columns(len(chosen))
for col, label in zip(columns, chosen, strict=True):
    source = by_label[label]
    key = chart_key(label)
    with col, ui.guard(f"Drawing the map of {label}"):
        coords, used, proj_key, pending = coords_for(source, method)
        if pending is not None:
            pending_jobs.append(pending)
        fig = maps.build_map_figure(
            coords,
            colouring,
            title=f"{label} · {used}",
            highlight=highlight,
            plan=plan,
            height=560 if len(chosen) <= 2 else 440,
            point_size=5.0 if n_items < 20_000 else 3.0,
            dataset_key=fingerprint,
        )
        coords_path = str(state.engine_cache().entry_dir("projections", proj_key) / "coords.npy")
        render_info[key] = {
            "n": n_items,
            "trace_rows": maps.trace_rows_of(fig),
            "aggregated": plan.aggregated,
            "projection_key": proj_key,
            "coords_path": coords_path,
        }
        st.plotly_chart(
            fig,
            key=key,
            on_select=partial(on_select, key),
            selection_mode=("points", "box", "lasso"),
            config={"scrollZoom": True, "displaylogo": False},
        )
        drawn.append(DrawnMap(source, coords, used, proj_key, key))
        try:
            q = map_quality_cached(proj_key, str(source.entry.array_path), coords_path)
            st.caption(
                f"{used} map quality: trustworthiness **{q['trustworthiness']:.3f}** · "
                f"{int(q['k'])}-NN recall **{q['knn_recall']:.3f}** (sample of "
                f"{int(q['sample']):,})"
            )
        except ParallaxError as exc:
            st.caption(f"Map quality unavailable: {exc}")
st.session_state[K_RENDER] = render_info

if pending_jobs:

    @st.fragment(run_every=POLL_S)
    def _umap_status() -> None:
        if all(job.future.done() for job in pending_jobs):
            st.rerun()
        slowest = max(job.elapsed for job in pending_jobs)
        st.info(
            f"PCA shown while the UMAP map{'s are' if len(pending_jobs) > 1 else ' is'} "
            f"computed in the background… {slowest:.0f} s so far (the first UMAP in a fresh "
            "process takes longest while numba compiles).",
            icon=":material/hourglass_top:",
        )

    _umap_status()

st.caption(
    "Hover a point to preview the item. Lasso or box-select (or click) points to list them "
    "below; the same items are highlighted in every map."
)
hover.hover_preview(spec)

# -- selection ------------------------------------------------------------------------------------
st.subheader("Selection")
if len(rows_selected) == 0:
    st.caption("Nothing selected yet.")
else:
    head = st.columns([4, 1])
    shown = min(len(rows_selected), GALLERY_CAP)
    head[0].markdown(
        f"**{len(rows_selected):,} item(s) selected**"
        + (f" · showing the first {shown}" if len(rows_selected) > shown else "")
    )
    head[1].button("Clear selection", on_click=clear_selection, icon=":material/close:")
    gallery(ds, rows_selected[:GALLERY_CAP])

    def _export_frame() -> pd.DataFrame:
        return maps.selection_frame(
            rows_selected,
            ids=ds.ids,
            labels=ds.labels,
            metadata=meta_frame,
            coords={d.source.label: d.coords for d in drawn},
            texts=ds.texts,
        )

    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button(
        "Download CSV",
        data=lambda: maps.to_csv_bytes(_export_frame()),
        file_name="parallax-selection.csv",
        mime="text/csv",
        icon=":material/download:",
    )
    d2.download_button(
        "Download Parquet",
        data=lambda: maps.to_parquet_bytes(_export_frame()),
        file_name="parallax-selection.parquet",
        mime="application/vnd.apache.parquet",
        icon=":material/download:",
    )

    if len(rows_selected) == 1:
        row = int(rows_selected[0])
        st.markdown(f"**Nearest neighbours of {ds.ids[row]}**")
        nn_label = st.selectbox("In the space of", [d.source.label for d in drawn], key="map_nn")
        with ui.guard("Finding neighbours"):
            vectors = by_label[nn_label].entry.load()
            scores = maps.cosine_scores(vectors, np.asarray(vectors[row]))
            nn = maps.top_k(scores, NEIGHBOURS, exclude=[row])
            gallery(ds, nn, [f"{scores[i]:.3f}" for i in nn])

# -- agreement ------------------------------------------------------------------------------------
st.subheader("Where do these models disagree about what is similar?")
if len(sources) < 2:
    st.caption(
        "Neighbourhood agreement needs two embedded models: embed this dataset with another "
        "model on the Embed page."
    )
else:
    a1, a2, a3 = st.columns([2, 2, 1])
    if st.session_state.get("map_agree_a") not in by_label:
        st.session_state["map_agree_a"] = agree_a if agree_a in by_label else labels[0]
    if st.session_state.get("map_agree_b") not in by_label:
        st.session_state["map_agree_b"] = agree_b if agree_b in by_label else labels[1]
    a_label = a1.selectbox("Model A", labels, key="map_agree_a")
    b_label = a2.selectbox("Model B", labels, key="map_agree_b")
    k = int(a3.number_input("k", 1, 100, value=agree_k, step=1, key="map_agree_k"))
    if a_label == b_label:
        st.caption("Pick two different models.")
    else:
        ea, eb = by_label[a_label].entry, by_label[b_label].entry
        go_key = f"agree_go_{ea.key}_{eb.key}_{k}"
        overlap = None
        with ui.guard("Comparing neighbourhoods"):
            overlap = agreement_for(a_label, b_label, k, compute=False)
        if overlap is None and n_items > AGREEMENT_AUTO_LIMIT:
            st.caption(
                f"{n_items:,} items: comparing every point's {k} nearest neighbours in both "
                "spaces takes a while."
            )
            if st.button("Compute the agreement", icon=":material/play_arrow:"):
                st.session_state[go_key] = True
                st.rerun()
        if overlap is not None:
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

# -- text search ----------------------------------------------------------------------------------
st.subheader("Text search")
q1, q2 = st.columns([2, 3])
query_label = q1.selectbox("Query model", labels, key="map_query_model")
query_source = by_label[query_label]
mods = model_modalities(query_source.model)
no_text_tower = mods is not None and "text" not in mods
if not viewonly.model_loadable(query_source.model):
    st.info(
        f"Text search embeds the query with **{query_source.model}**, which cannot be loaded "
        f"here. {viewonly.sentence()}.",
        icon=":material/visibility:",
    )
elif no_text_tower:
    st.info(
        f"**{query_source.model}** has no text tower, so it cannot embed a text query. Text "
        "search needs a CLIP-like model that puts images and texts in one space (e.g. an "
        "open_clip model), or a text model for a text dataset.",
        icon=":material/info:",
    )
else:
    with q2.form("map_search_form", border=False):
        query = st.text_input("Find items matching a text", key="map_query")
        submitted = st.form_submit_button("Search", icon=":material/search:")
    if submitted and query.strip():
        with ui.guard(f"Searching with {query_source.model}"):
            model = state.get_model(query_source.model)
            if "text" not in model.modalities:
                raise ParallaxError(
                    f"{query_source.model} has no text tower: text search needs a CLIP-like model"
                )
            qv = model.embed_texts([query.strip()])[0]
            scores = maps.cosine_scores(query_source.entry.load(), qv)
            st.session_state[K_SEARCH] = {
                "query": query.strip(),
                "model": query_source.label,
                "scores": scores,
            }
        if st.session_state.get(K_SEARCH) is not search:
            st.rerun()  # the colour control above now offers the search score
    if search is not None:
        top = maps.top_k(search["scores"], SEARCH_RESULTS)
        st.markdown(
            f"Best matches for **{search['query']}** in {search['model']} (cosine); colour the "
            f"maps by *{SEARCH}* to see them on any model's map."
        )
        gallery(ds, top, [f"{search['scores'][i]:.3f}" for i in top])
