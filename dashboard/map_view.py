"""The Map page's parts: what can be mapped, the selection, and one drawn map.

``pages/map.py`` reads the session, calls these and lays them out. ``draw_maps`` is the one
place maps become pixels: WebGL maps (``dashboard.linked_maps``), every point drawn, aligned onto
the first map and linked (hover, selection, optional zoom) in the browser.
The sections under the maps (selection, agreement, text search) are in ``map_sections``.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from dashboard import keys, linked_maps, maps, projections, resources, state, ui, viewonly
from engine.errors import ParallaxError

LABEL = "label"
AGREEMENT = "neighbourhood agreement"
SEARCH = "text search score"
POLL_S = 1.0
AGREEMENT_AUTO_LIMIT = 20_000  # above this many items agreement is computed on request only


@dataclass(frozen=True)
class MapSource:
    """One embedded (model, modality) of the current dataset: what a map is made from."""

    label: str
    model: str
    modality: str
    entry: Any  # the cached vectors (``engine.store.cache.Entry``: key, array_path, load())


@dataclass
class DrawnMap:
    source: MapSource
    coords: np.ndarray
    method: str
    projection_key: str
    chart_key: str


# -- discovery ----------------------------------------------------------------------------------
def embedded_sources(ds: Any, preferred: list[str]) -> list[MapSource]:
    """Every finished vectors entry of this dataset, newest per (model, modality), the
    ``preferred`` models first. A model with two modalities gets one label per modality."""
    embedded = projections.embedded_models(ds)
    out = []
    for model, by_modality in embedded.items():
        for modality, entry in by_modality.items():
            label = f"{model} · {modality}" if len(by_modality) > 1 else model
            out.append(MapSource(label, model, modality, entry))
    out.sort(
        key=lambda s: (
            s.model not in preferred,
            preferred.index(s.model) if s.model in preferred else 0,
            s.label,
        )
    )
    return out


def default_maps(sources: list[MapSource], n: int = 2) -> list[str]:
    """The maps drawn first: the first ``n`` sources, skipping a map of texts whose text
    tower an earlier one shares (the two shipped CLIPs read texts alike: identical maps)."""
    ws = resources.workspace()
    chosen: list[str] = []
    towers: set[str] = set()
    for s in sources:
        tower = ws.text_tower(s.model) if s.modality == "text" else None
        if tower is not None and tower in towers:
            continue
        if tower is not None:
            towers.add(tower)
        chosen.append(s.label)
        if len(chosen) == n:
            break
    return chosen


def model_modalities(spec: str) -> frozenset[str] | None:
    """A model's modalities from the registry (no weights loaded); None if unknown."""
    try:
        for m in resources.known_models():
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
    vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
    coords = np.load(coords_path, allow_pickle=False)
    return resources.workspace().map_quality(vectors, coords)


@st.cache_data(show_spinner=False, max_entries=16)
def agreement_cached(key_a: str, path_a: str, key_b: str, path_b: str, k: int) -> np.ndarray:
    """Per-point k-NN overlap of two vector sets (keyed by their cache keys)."""
    x = np.load(path_a, mmap_mode="r", allow_pickle=False)
    y = np.load(path_b, mmap_mode="r", allow_pickle=False)
    return resources.workspace().agreement(x, y, k)


@st.cache_data(show_spinner=False, max_entries=16)
def colouring_cached(spec: str, fingerprint: str, column: str) -> maps.Colouring:
    ds = state.get_dataset(spec)
    if column == LABEL:
        return maps.categorical(ds.labels, LABEL)
    return maps.colouring_for_column(ds.metadata()[column], column)


def agreement(
    a: MapSource, b: MapSource, k: int, n_items: int, compute: bool = False
) -> np.ndarray | None:
    """Per-point k-NN overlap of two sources; None past ``AGREEMENT_AUTO_LIMIT`` items until
    the user asked for it (``compute`` or the flag ``keys.agreement_go``)."""
    if a.label == b.label:
        return None
    ea, eb = a.entry, b.entry
    asked = compute or st.session_state.get(keys.agreement_go(ea.key, eb.key, k))
    if n_items > AGREEMENT_AUTO_LIMIT and not asked:
        return None
    with st.spinner(f"Comparing {k}-nearest neighbours of {a.label} and {b.label}…"):
        return agreement_cached(ea.key, str(ea.array_path), eb.key, str(eb.array_path), k)


# -- selection ----------------------------------------------------------------------------------
def selected_rows() -> np.ndarray:
    return np.asarray(st.session_state.get(keys.MAP_ROWS, np.zeros(0, np.int64)), dtype=np.int64)


def selection_nonce() -> str:
    """The selection's revision: the maps reapply a selection only when it changes. Rows set
    without one (by hand) get a revision named by their content."""
    from engine.maps import payload as mapdata

    stored = st.session_state.get(keys.MAP_SELECTION_NONCE)
    return stored or "rows-" + mapdata.content_key(mapdata.encode_rows(selected_rows()))


def set_selection(rows: np.ndarray, source: str | None, nonce: str | None = None) -> None:
    """Store the selection; ``nonce`` is the browser's when a map made it, else a new one."""
    st.session_state[keys.MAP_ROWS] = np.asarray(rows, dtype=np.int64)
    st.session_state[keys.MAP_SELECTION_SOURCE] = source
    st.session_state[keys.MAP_SELECTION_NONCE] = nonce or linked_maps.new_nonce()


def clear_selection() -> None:
    set_selection(np.zeros(0, np.int64), None)


def on_map_select(rows: np.ndarray, nonce: str) -> None:
    """Callback of every map: a click, lasso or box selection, as dataset rows."""
    set_selection(rows, "map", nonce or None)


def sync_selection(fingerprint: str, n_items: int) -> None:
    """Drop a selection (and search) made on another dataset; apply rows from a shared link
    now that the number of items is known."""
    if st.session_state.get(keys.MAP_SELECTION_DATASET, fingerprint) != fingerprint:
        clear_selection()
        st.session_state.pop(keys.MAP_SEARCH, None)
    st.session_state[keys.MAP_SELECTION_DATASET] = fingerprint
    if keys.URL_SELECTION in st.session_state:
        url_rows = np.asarray(st.session_state.pop(keys.URL_SELECTION), dtype=np.int64)
        set_selection(url_rows[(url_rows >= 0) & (url_rows < n_items)], "link")


# -- one map ------------------------------------------------------------------------------------
def coords_for(source: MapSource, method: str) -> tuple[np.ndarray, str, str, Any]:
    """(coords, method drawn, projection key, pending UMAP job or None).

    PCA is computed here at once; UMAP runs as a background job, and PCA stands in until it is
    done (or for good in view-only mode when no UMAP map is in the cache).
    """
    pending = None
    if method == "UMAP" and not projections.umap_allowed(source.entry):
        st.caption(
            f"No UMAP map of {ui.plain(source.label)} in the cache, so PCA; {viewonly.MESSAGE}"
        )
    elif method == "UMAP":
        job = projections.projection_job(source.entry, "umap")
        wait([job.future], timeout=0.2)  # a map already in the cache comes back at once
        if job.future.done():
            exc = job.future.exception()
            if exc is None:
                result = job.future.result()
                coords = projections.load_coords(result.key, str(result.path))
                return coords, "UMAP", result.key, None
            ui.show_error(exc, f"Computing the UMAP map of {source.label}")
            if st.button("Retry", key=f"retry_{chart_key(source.label)}"):
                projections.job_runner().forget(job.key)
                st.rerun()
        pending = job if not job.future.done() else None
    coords, key = projections.pca_coords(source.entry)
    return coords, "PCA", key, pending


def draw_maps(
    chosen: list[MapSource],
    method: str,
    colouring: maps.Colouring,
    *,
    n_items: int,
    height: int,
    aligned: bool = True,
    displacement: bool = False,
    link_zoom: bool = False,
) -> tuple[list[DrawnMap], list[Any]]:
    """The chosen sources' maps side by side (every point, linked, aligned onto the first), each
    with its quality line. Returns the maps (their own, unaligned coordinates) and the pending
    UMAP jobs."""
    found = [(source, *coords_for(source, method)) for source in chosen]
    pending = [job for *_, job in found if job is not None]
    drawn = [
        DrawnMap(source, coords, used, key, chart_key(source.label))
        for source, coords, used, key, _ in found
    ]
    specs = [
        linked_maps.MapSpec(
            d.chart_key, f"{d.source.label} · {d.method}", d.coords, d.projection_key
        )
        for d in drawn
    ]

    def quality(i: int) -> None:
        d = drawn[i]
        try:
            coords_path = projections.coords_path(d.projection_key)
            q = map_quality_cached(d.projection_key, str(d.source.entry.array_path), coords_path)
            st.caption(
                f"{d.method} map quality: trustworthiness **{q['trustworthiness']:.3f}** · "
                f"{int(q['k'])}-NN recall **{q['knn_recall']:.3f}** (sample of "
                f"{int(q['sample']):,})"
            )
        except ParallaxError as exc:
            st.caption(f"Map quality unavailable: {exc}")

    linked_maps.draw_maps(
        specs,
        colouring,
        n=n_items,
        selection=(selected_rows(), selection_nonce()),
        on_select=on_map_select,
        aligned=aligned,
        displacement=displacement,
        height=height,
        link_zoom=link_zoom,
        under_each=quality,
    )
    return drawn, pending


def umap_progress(pending_jobs: list[Any]) -> None:
    """While UMAP maps are computed: a line that counts the seconds, then a rerun that swaps
    the PCA stand-ins for them."""
    if not pending_jobs:
        return

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
