"""Hover preview for map points: a thumbnail for images, the text for texts.

The preview is an ``st.components.v2`` component (inline JS, running in the app page, not in an
iframe) that draws a floating card next to the cursor for the hovered row. The WebGL maps
(``dashboard.components.scatter``) announce hovers as a ``parallax-map-hover`` DOM event; plotly
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

from dashboard.resources import engine_cache, get_dataset
from engine.data.thumbnails import GRID, PER_SHEET, THUMB_SIZE, sheet_data_url
from engine.errors import ParallaxError

HOVER_KEY = "map_hover_preview"
WANTED_KEY = "_map_hover_wanted"
CHUNK = PER_SHEET  # one sprite sheet per chunk
MAX_WANTED = 4  # chunks sent per fragment run (the browser keeps every chunk it got)
TEXT_CHARS = 400
DISPLAY_SCALE = 2  # thumbnails are shown at twice their stored size

_CSS = """
:host { display: block; height: 0; overflow: hidden; }
"""

_JS = r"""
const TIP_ID = "parallax-hover-preview";
const RETRY_MS = 2500;
const MAX_WANTED = 4;

function state() {
  if (!window.__parallaxHover) {
    window.__parallaxHover = {
      chunks: new Map(), pending: new Map(), attached: new WeakMap(),
      dataset: null, meta: null, cur: null, setState: null, retry: null,
    };
  }
  return window.__parallaxHover;
}

function tip() {
  let el = document.getElementById(TIP_ID);
  if (!el) {
    el = document.createElement("div");
    el.id = TIP_ID;
    el.setAttribute("role", "tooltip");
    Object.assign(el.style, {
      position: "fixed", zIndex: "100000", pointerEvents: "none", display: "none",
      background: "white", color: "#222", border: "1px solid #ccc", borderRadius: "6px",
      boxShadow: "0 4px 14px rgba(0,0,0,.18)", padding: "6px", maxWidth: "300px",
      font: "12px/1.35 system-ui, sans-serif", whiteSpace: "normal", wordBreak: "break-word",
    });
    document.body.appendChild(el);
  }
  return el;
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function place(el, x, y) {
  const pad = 16, w = el.offsetWidth || 160, h = el.offsetHeight || 160;
  let left = x + pad, top = y + pad;
  if (left + w > window.innerWidth - 4) left = x - w - pad;
  if (top + h > window.innerHeight - 4) top = y - h - pad;
  el.style.left = Math.max(4, left) + "px";
  el.style.top = Math.max(4, top) + "px";
}

function render() {
  const G = state(), el = tip(), cur = G.cur, meta = G.meta;
  if (!cur || !meta) { el.style.display = "none"; return; }
  const chunkNo = Math.floor(cur.row / meta.chunk);
  const chunk = G.chunks.get(chunkNo);
  el.dataset.row = String(cur.row);
  let html = "";
  if (!chunk) {
    el.dataset.ready = "0";
    html = `<div style="color:#777">row ${cur.row} · loading preview…</div>`;
    requestChunk(chunkNo);
  } else {
    el.dataset.ready = "1";
    const i = cur.row - chunkNo * meta.chunk;
    if (chunk.sheet) {
      const s = meta.size * meta.scale, col = i % meta.grid, row = Math.floor(i / meta.grid);
      html += `<div class="parallax-thumb" style="width:${s}px;height:${s}px;` +
        `background-image:url(${chunk.sheet});background-size:${meta.grid * s}px auto;` +
        `background-position:-${col * s}px -${row * s}px;background-repeat:no-repeat;` +
        `border-radius:3px;margin-bottom:4px"></div>`;
    }
    const label = chunk.labels ? chunk.labels[i] : null;
    html += `<div><b>${esc(chunk.ids[i])}</b>` +
      (label != null ? ` · <span style="color:#555">${esc(label)}</span>` : "") + "</div>";
    if (chunk.texts && chunk.texts[i]) {
      html += `<div class="parallax-text" style="margin-top:3px">${esc(chunk.texts[i])}</div>`;
    }
  }
  el.innerHTML = html;
  el.style.display = "block";
  place(el, cur.x, cur.y);
}

function requestChunk(chunkNo) {
  const G = state(), now = Date.now(), last = G.pending.get(chunkNo);
  if (last && now - last < RETRY_MS) return;
  G.pending.set(chunkNo, now);
  // Ask for every chunk still missing, the newest first: a request superseded by a quicker
  // one (the cursor sweeping over several chunks) is not lost.
  const wanted = Array.from(G.pending.entries()).sort((a, b) => b[1] - a[1])
    .slice(0, MAX_WANTED).map((e) => e[0]);
  if (G.setState) G.setState("want", { chunks: wanted, dataset: G.dataset, nonce: now });
  clearTimeout(G.retry);
  G.retry = setTimeout(() => {  // still not here (a rerun was dropped): ask again
    const cur = G.cur;
    if (cur && G.meta && !G.chunks.has(Math.floor(cur.row / G.meta.chunk))) render();
  }, RETRY_MS + 50);
}

function rowOf(pt) {
  let cd = pt.customdata;
  if (cd === undefined && pt.data && pt.data.customdata) cd = pt.data.customdata[pt.pointIndex];
  if (Array.isArray(cd)) cd = cd[0];
  return typeof cd === "number" && Number.isFinite(cd) ? cd : null;
}

function attach() {
  const G = state();
  document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
    // Plotly.newPlot on a reused element replaces its event emitter (and drops listeners):
    // re-attach whenever the element's `on` is not the one listened to.
    if (typeof gd.on !== "function" || G.attached.get(gd) === gd.on) return;
    if (!gd.layout || !gd.layout.meta || !gd.layout.meta.parallax_map) return;
    G.attached.set(gd, gd.on);
    gd.dataset.parallaxHover = "1";
    gd.on("plotly_hover", (ev) => {
      const pt = ev && ev.points && ev.points[0];
      const row = pt ? rowOf(pt) : null;
      if (row === null || !G.meta || row >= G.meta.n) return;
      const e = ev.event || {};
      G.cur = { row, gd, x: e.clientX ?? 0, y: e.clientY ?? 0 };
      render();
    });
    gd.on("plotly_unhover", () => { G.cur = null; render(); });
  });
}

function hideWhenOutside(ev) {
  const G = state();
  if (!G.cur) return;
  const t = ev.target;
  if (!(t instanceof Element) || !t.closest(".js-plotly-plot, .parallax-scatter canvas")) {
    G.cur = null;
    render();
  }
}

// The WebGL maps (dashboard/components/scatter) announce hovers as a DOM event.
function onMapHover(ev) {
  const G = state(), d = ev.detail || {};
  if (d.row == null || !G.meta || d.row >= G.meta.n) {
    if (G.cur && G.cur.gd === d.element) { G.cur = null; render(); }
    return;
  }
  G.cur = { row: d.row, gd: d.element, x: d.x ?? 0, y: d.y ?? 0 };
  render();
}

export default function (component) {
  const { data, setStateValue } = component;
  const G = state();
  G.setState = setStateValue;
  if (!G.listening) {  // a map redrawn under a still cursor never sends plotly_unhover
    document.addEventListener("mousemove", hideWhenOutside, { passive: true });
    document.addEventListener("parallax-map-hover", onMapHover);
    G.listening = true;
  }
  if (data && data.meta) {
    if (G.dataset !== data.meta.dataset) {
      G.chunks.clear();
      G.pending.clear();
      G.cur = null;
      G.dataset = data.meta.dataset;
    }
    G.meta = data.meta;
    for (const [k, v] of Object.entries(data.chunks || {})) {
      G.chunks.set(Number(k), v);
      G.pending.delete(Number(k));
    }
  }
  if (!G.observer) {  // a redrawn map gets its listeners within a frame, not half a second
    let queued = false;
    G.observer = new MutationObserver(() => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; attach(); });
    });
    G.observer.observe(document.body, { childList: true, subtree: true });
  }
  attach();
  // Maps are redrawn (new plot elements) on reruns: look for new ones twice a second. Each
  // mount owns its own timer, so a late cleanup of an old mount cannot stop the new one.
  const timer = setInterval(attach, 500);
  if (G.cur && !(G.cur.gd && document.body.contains(G.cur.gd))) G.cur = null;
  render();
  return () => clearInterval(timer);
}
"""

_component = st.components.v2.component("parallax_hover_preview", css=_CSS, js=_JS)


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
        data={"meta": meta, "chunks": chunks},
        on_want_change=_on_want,
    )
