// Hover preview for map points: a floating card next to the cursor showing the hovered item
// (its thumbnail for images, its text for texts). Mounted once per page by dashboard/hover.py
// through the same loader as the maps (export `hover` of this bundle).
//
// The WebGL maps (index.js) announce hovers as a `parallax-map-hover` DOM event; plotly maps
// (`.js-plotly-plot` whose `layout.meta.parallax_map` is set, the benchmark's baseline) are
// followed through their `plotly_hover` / `plotly_unhover` events. Items come in chunks (a sprite
// sheet plus ids, labels, texts) that Python sends when the component state `want` asks for them;
// the card reports `data-row` (the row shown) and `data-ready` ("1" once the item is shown).

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

export default function hover(component) {
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
