"""Hover preview for map points: a thumbnail for images, the text for texts.

The preview is an ``st.components.v2`` component (running in the app page, not in an iframe)
that draws a floating card next to the cursor for the hovered row; its JavaScript is
``dashboard/components/scatter/frontend/src/hover.js``, built into the map component's bundle
and loaded by the same loader as the maps. The WebGL maps (``dashboard.components.scatter``)
announce hovers as a ``parallax-map-hover`` DOM event; plotly
maps (``.js-plotly-plot`` whose ``layout.meta.parallax_map`` is set) are followed through their
``plotly_hover`` / ``plotly_unhover`` events.

Nothing per-item is shipped with the figure. Items come in chunks of ``CHUNK`` rows (one
thumbnail sprite sheet from ``engine.data.thumbnails`` as a data URL, plus the ids, labels and
truncated texts of those rows), fetched lazily: hovering a point whose chunk the browser does not
have sets the component state ``want``; that reruns only the fragment holding the component,
which sends the wanted chunk; the browser keeps every chunk it got for the rest of the session.
A 100k-point map therefore costs nothing up front, and about 100-200 kB per 256 items hovered.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard.components import scatter
from dashboard.resources import engine_cache, get_dataset
from engine.data.thumbnails import GRID, PER_SHEET, THUMB_SIZE, sheet_data_url
from engine.errors import ParallaxError

HOVER_KEY = "map_hover_preview"
WANTED_KEY = "_map_hover_wanted"
CHUNK = PER_SHEET  # one sprite sheet per chunk
MAX_WANTED = 4  # chunks sent per fragment run (the browser keeps every chunk it got)
TEXT_CHARS = 400
DISPLAY_SCALE = 2  # thumbnails are shown at twice their stored size

# The card's code is the ``hover`` export of the map component's bundle (built from
# dashboard/components/scatter/frontend/src/hover.js), loaded by the same loader as the maps.
_component = st.components.v2.component(
    "parallax_hover_preview",
    css=scatter.asset_text("hover.css"),
    js=scatter.asset_text("loader.js"),
)


@st.cache_data(show_spinner=False, max_entries=512)
def chunk_payload(spec: str, fingerprint: str, chunk: int) -> dict[str, Any]:
    """What the browser needs to preview rows ``chunk * CHUNK ..``: a sprite sheet (images),
    ids, labels and truncated texts. ``fingerprint`` keys the cache by dataset content."""
    dataset = get_dataset(spec)
    start = chunk * CHUNK
    stop = min(len(dataset), start + CHUNK)
    if start >= stop:
        return {"ids": [], "labels": [], "texts": None, "sheet": None}
    texts = dataset.texts
    payload: dict[str, Any] = {
        "ids": [str(x) for x in dataset.ids[start:stop]],
        "labels": [None if x is None else str(x) for x in dataset.labels[start:stop]],
        "texts": None
        if texts is None
        else [None if t is None else _clip(str(t)) for t in texts[start:stop]],
        "sheet": None,
    }
    if dataset.has_images:
        payload["sheet"] = sheet_data_url(dataset, chunk, engine_cache(), THUMB_SIZE)
    return payload


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def wanted_chunks(value: Any) -> tuple[str | None, list[int]]:
    """``(dataset fingerprint, chunk numbers)`` from the component's ``want`` state."""
    want = value.get("want") if isinstance(value, dict) else getattr(value, "want", None)
    if not isinstance(want, dict):
        return None, []
    chunks = want.get("chunks")
    if not isinstance(chunks, list):
        return None, []
    clean = [int(c) for c in chunks if isinstance(c, int) and not isinstance(c, bool) and c >= 0]
    dataset = want.get("dataset")
    return (str(dataset) if dataset is not None else None), clean[:MAX_WANTED]


def _on_want() -> None:
    dataset, chunks = wanted_chunks(st.session_state.get(HOVER_KEY))
    st.session_state[WANTED_KEY] = (dataset, chunks)


def hover_meta(spec: str) -> dict[str, Any]:
    dataset = get_dataset(spec)
    return {
        "dataset": dataset.fingerprint(),
        "n": len(dataset),
        "chunk": CHUNK,
        "grid": GRID,
        "size": THUMB_SIZE,
        "scale": DISPLAY_SCALE,
        "images": bool(dataset.has_images),
    }


@st.fragment
def hover_preview(spec: str) -> None:
    """Mount the preview (once per page). Runs as a fragment: fetching a chunk reruns only it."""
    try:
        meta = hover_meta(spec)
        chunks: dict[str, Any] = {}
        dataset, wanted = st.session_state.get(WANTED_KEY, (None, []))
        for c in wanted if dataset == meta["dataset"] else []:
            if 0 <= c * CHUNK < meta["n"]:
                chunks[str(c)] = chunk_payload(spec, meta["dataset"], c)
    except ParallaxError as exc:
        st.caption(f"Hover previews are unavailable: {exc}")
        return
    _component(
        key=HOVER_KEY,
        data={"meta": meta, "chunks": chunks, "bundle": scatter.bundle_url(), "entry": "hover"},
        on_want_change=_on_want,
    )
