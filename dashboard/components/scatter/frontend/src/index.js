// Parallax's WebGL map: one Streamlit components-v2 element per map, drawn by regl-scatterplot.
//
// Python sends small JSON (titles, palette, payload URLs and keys); the points themselves are
// fetched as binary from Streamlit's media endpoint (float32 x,y pairs, uint8 colour codes) and
// kept here by content key, so a rerun that only recolours or reselects never fetches positions
// again. Every map on the page registers in one page-global registry: the hovered item, the
// selection, hidden legend classes and (optionally) the zoom are shared by all maps in a group.
//
// Every map frames all of its points: the camera is fitted to the extent Python sends (the
// joint extent of aligned maps, so they share one scale) with a margin of a few pixels, refitted
// when the canvas changes size (a column added or removed) unless the person has moved the view,
// and again by "Reset view".
//
// The root element reports its state for tests and for users' own tooling, explicitly, so
// nothing has to guess or retry:
//   data-state     "loading" | "drawing" | "partial" | "drawn" | "error"; clicks are ignored
//                  until "drawn" ("partial": the first parts of a big map are drawn, more to come)
//   data-arrived   parts of the positions arrived and drawn (a map sent in parts), of data-parts
//   data-renderer  "regl" (regl-scatterplot) | "density" (the big-map renderer, density.js)
//   data-mode      the big-map renderer's last frame: "density" (an image) | "points" (discs)
//   data-revision  counts the updates from Python that are fully applied
//   data-points    points drawn;   data-selected  points selected;   data-hovered  the linked
//                  hovered row ("" when none)
//   data-points-key  the content key of the positions drawn (changes with projection, alignment)
//   data-extent    "left top right bottom": the drawn points' extent on the canvas, CSS pixels
//   data-canvas    "width height" of the canvas, CSS pixels

import createScatterplot from 'regl-scatterplot';
import DensityMap from './density.js';

export { default as hover } from './hover.js';

const MAX_BLOBS = 16;
const HOVER_EVENT = 'parallax-map-hover';
const INLINE_ROWS = 4096; // selections up to this many rows go back as a list, else packed
const LASSO_CLICK_MS = 500; // a click this soon after a lasso ends is the lasso's own mouse-up
const FIT_PAD_PX = 10; // free pixels between the outermost points' edges and the frame
const PARKED = 1e5; // positions beyond this are items without coordinates (parked off-view)
const PART_FETCHES = 3; // parts of a big map fetched at once
const PARTIAL_REDRAW_MS = 1000; // while parts arrive, the map is redrawn at most this often

function registry() {
  if (!window.__parallaxMaps) {
    window.__parallaxMaps = {
      blobs: new Map(), // content key -> Promise<ArrayBuffer>
      maps: new Map(), // map id -> instance
      groups: new Map(), // group -> { nonce, rows, hidden: Set, linkZoom }
    };
  }
  return window.__parallaxMaps;
}

function groupState(name) {
  const G = registry();
  if (!G.groups.has(name)) {
    // awaiting: the nonce of a selection made here that the server has not echoed yet
    G.groups.set(name, {
      nonce: null, rows: null, hidden: new Set(), linkZoom: false, mine: [], awaiting: null,
    });
  }
  return G.groups.get(name);
}

// Media URLs are app-root-relative ("/media/..."). Like Streamlit's own elements, resolve them
// against the page's folder (an app behind a hosting prefix), then against the server's
// baseUrlPath that Python sent along.
function candidates(url) {
  if (/^[a-z]+:/i.test(url)) return [url];
  const dir = window.location.pathname.replace(/[^/]*$/, '');
  const out = [window.location.origin + dir + url.replace(/^\//, '')];
  const base = registry().basePath || '';
  out.push(window.location.origin + base + url);
  return [...new Set(out)];
}

async function fetchBinary(url) {
  let last = null;
  for (const u of candidates(url)) {
    const resp = await fetch(u);
    if (resp.ok) return resp.arrayBuffer();
    last = resp.status;
  }
  throw new Error(`map data ${url}: HTTP ${last}`);
}

// A map sent in parts: part `index` of P holds rows index, index + P, ... (`width` values each).
function writePart(arr, buf, index, count, width, Type) {
  const src = new Type(buf);
  const rows = src.length / width;
  if (width === 2) {
    for (let k = 0, row = index; k < rows; k++, row += count) {
      arr[2 * row] = src[2 * k];
      arr[2 * row + 1] = src[2 * k + 1];
    }
  } else {
    for (let k = 0, row = index; k < rows; k++, row += count) arr[row] = src[k];
  }
}

// The part's index rides along in the query (the media endpoint ignores it): it names the
// part in the network log, and lets tests hold some parts back.
function partURL(p) {
  return `${p.url}${p.url.includes('?') ? '&' : '?'}part=${p.index}`;
}

async function eachLimited(items, limit, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

// A whole per-point payload (n x width values of Type): one blob, or its parts assembled. Parts
// are not kept in the blob cache (the assembled array is what the map holds).
async function wholePayload(spec, n, width, Type, fill) {
  if (!spec.parts) return new Type(await blob(spec.key, spec.url));
  const arr = new Type(n * width).fill(fill);
  await eachLimited(spec.parts, PART_FETCHES, async (p) => {
    writePart(arr, await fetchBinary(partURL(p)), p.index, spec.parts.length, width, Type);
  });
  return arr;
}

function blob(key, url) {
  const G = registry();
  if (G.blobs.has(key)) {
    const p = G.blobs.get(key);
    G.blobs.delete(key); // most recently used last
    G.blobs.set(key, p);
    return p;
  }
  const p = fetchBinary(url);
  G.blobs.set(key, p);
  p.catch(() => G.blobs.delete(key));
  while (G.blobs.size > MAX_BLOBS) G.blobs.delete(G.blobs.keys().next().value);
  return p;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

function b64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

// The smaller of a row list and a bitmask, as the component state Python decodes.
function packRows(rows, n, nonce) {
  if (rows.length <= INLINE_ROWS) return { nonce, n, rows: Array.from(rows) };
  if (rows.length * 4 < n / 8) {
    return { nonce, n, rows_b64: b64(new Uint8Array(Uint32Array.from(rows).buffer)) };
  }
  const mask = new Uint8Array(Math.ceil(n / 8));
  for (const r of rows) mask[r >> 3] |= 1 << (r & 7);
  return { nonce, n, mask_b64: b64(mask) };
}

function newNonce() {
  return `js-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

function build(parent) {
  const root = el('div', 'parallax-scatter');
  Object.assign(root.dataset, {
    points: '0', selected: '0', hovered: '', state: 'loading', revision: '0', extent: '', canvas: '',
    pointsKey: '', arrived: '', parts: '', renderer: '', mode: '',
  });
  const bar = el('div', 'ps-bar');
  const title = el('div', 'ps-title');
  const tools = el('div', 'ps-tools');
  const modes = {};
  for (const [mode, label, tip] of [
    ['pan', 'Pan', 'Drag to pan, wheel to zoom; click a point to select it'],
    ['lasso', 'Lasso', 'Drag a free shape to select the points inside'],
    ['box', 'Box', 'Drag a rectangle to select the points inside'],
  ]) {
    const b = el('button', 'ps-btn', label);
    b.type = 'button';
    b.title = tip;
    b.dataset.mode = mode;
    modes[mode] = b;
    tools.appendChild(b);
  }
  const reset = el('button', 'ps-btn ps-reset', 'Reset view');
  reset.type = 'button';
  reset.title = 'Frame every point again';
  const link = el('label', 'ps-link');
  const linkBox = el('input');
  linkBox.type = 'checkbox';
  link.append(linkBox, document.createTextNode(' link zoom'));
  tools.append(reset, link);
  bar.append(title, tools);
  const wrap = el('div', 'ps-canvas');
  const canvas = el('canvas');
  const ring = el('div', 'ps-ring');
  const status = el('div', 'ps-status', 'loading the map…');
  wrap.append(canvas, ring, status);
  const legend = el('div', 'ps-legend');
  root.append(bar, wrap, legend);
  parent.appendChild(root);
  return { root, title, modes, reset, linkBox, wrap, canvas, ring, status, legend };
}

function sameView(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i] - b[i]) > 1e-9) return false;
  return true;
}

// The bounding box of the points that have coordinates, and the rows at its four sides.
function extentOf(xy, n) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const rows = [-1, -1, -1, -1];
  for (let i = 0; i < n; i++) {
    const x = xy[2 * i], y = xy[2 * i + 1];
    if (!(Math.abs(x) < PARKED && Math.abs(y) < PARKED)) continue;
    if (x < x0) { x0 = x; rows[0] = i; }
    if (y < y0) { y0 = y; rows[1] = i; }
    if (x > x1) { x1 = x; rows[2] = i; }
    if (y > y1) { y1 = y; rows[3] = i; }
  }
  return rows[0] < 0 ? null : { box: [x0, y0, x1, y1], rows };
}

class MapInstance {
  constructor(parent) {
    this.parent = parent;
    this.ui = build(parent);
    this.sp = null;
    this.n = 0;
    this.pointsKey = null;
    this.coloursKey = null;
    this.xy = null;
    this.codes = null;
    this.appliedNonce = undefined;
    this.spatialIndex = null;
    this.mouse = { x: 0, y: 0 };
    this.version = 0; // the latest update wins when fetches overlap
    this.drawing = null; // the library's draw in progress (settles, never rejects)
    this.revision = 0;
    this.drawn = false;
    this.hovered = null; // the row hovered here (the cursor is on this map)
    this.shownHover = null; // the row ringed here (hovered in any map of the group)
    this.extent = null; // { box, rows } of the drawn points
    this.fitBox = null; // what the camera frames: Python's extent, else the points' own
    this.fittedView = null; // the camera view of the last fit (untouched by the person since?)
    this.ui.wrap.addEventListener('mousemove', (e) => { this.mouse = { x: e.clientX, y: e.clientY }; });
    this.ui.wrap.addEventListener('mouseleave', () => this.hoverOut());
    for (const b of Object.values(this.ui.modes)) b.addEventListener('click', () => this.setMode(b.dataset.mode));
    this.ui.reset.addEventListener('click', () => {
      this.fit();
      if (groupState(this.group).linkZoom) for (const m of this.peers()) m.fit();
    });
    this.ui.linkBox.addEventListener('change', () => {
      groupState(this.group).linkZoom = this.ui.linkBox.checked;
      for (const m of this.peers(true)) m.ui.linkBox.checked = this.ui.linkBox.checked;
    });
  }

  peers(includeSelf = false) {
    return Array.from(registry().maps.values()).filter(
      (m) => m.group === this.group && (includeSelf || m !== this) && m.ui.root.isConnected,
    );
  }

  canvasSize() {
    // the inside of the frame (its border excluded): what the canvas covers
    return {
      width: Math.max(50, this.ui.wrap.clientWidth),
      height: Math.max(50, this.ui.wrap.clientHeight),
    };
  }

  ensurePlot(n, big = false, detailLimit = undefined) {
    if (this.sp && this.big !== big) {
      // another renderer for this element (a bigger or smaller dataset): a fresh canvas for it
      this.sp.destroy();
      this.sp = null;
      this.spatialIndex = null;
      const fresh = el('canvas');
      this.ui.canvas.replaceWith(fresh);
      this.ui.canvas = fresh;
    }
    if (this.sp) return;
    const { width, height } = this.canvasSize();
    this.width = width;
    this.height = height;
    this.big = big;
    this.ui.root.dataset.renderer = big ? 'density' : 'regl';
    if (big) {
      this.sp = new DensityMap({ canvas: this.ui.canvas, width, height, detailLimit });
      this.subscribeAll();
      return;
    }
    this.sp = createScatterplot({
      canvas: this.ui.canvas,
      width,
      height,
      backgroundColor: '#ffffff',
      pointColorHover: '#111111',
      lassoColor: '#1f77b4',
      lassoMinDelay: 8,
      lassoMinDist: 2,
      opacityInactiveScale: 0.25,
      pointSizeSelected: 2,
      pointOutlineWidth: 1,
      deselectOnDblClick: false,
      performanceMode: n > 1_500_000,
      // Building the spatial index on the page is faster than cloning a million points into a
      // worker (measured: 2.1 s vs 4.0 s to draw 1M points in headless Chromium).
      spatialIndexUseWorker: false,
    });
    this.subscribeAll();
  }

  subscribeAll() {
    const sp = this.sp;
    sp.subscribe('pointOver', (row) => this.hoverIn(row));
    sp.subscribe('pointOut', () => this.hoverOut());
    sp.subscribe('lassoEnd', () => {
      this.lassoEndedAt = performance.now();
      this.lassoRows = groupState(this.group).rows;
    });
    sp.subscribe('select', ({ points }) => this.userSelected(points));
    sp.subscribe('deselect', () => this.userSelected([]));
    sp.subscribe('view', (ev) => this.viewChanged(ev));
    // every frame drawn (a pan, a zoom, a linked zoom, a resize): move the ring, report extents
    sp.subscribe('draw', () => this.afterFrame());
    if (!this.resizer) {
      this.resizer = new ResizeObserver(() => this.resized());
      this.resizer.observe(this.ui.wrap);
    }
  }

  resized() {
    if (!this.sp) return;
    const { width, height } = this.canvasSize();
    if (width === this.width && height === this.height) return;
    // a view the person has not moved since the last fit is refitted to the new size
    const untouched = sameView(Array.from(this.sp.get('cameraView')), this.fittedView);
    this.width = width;
    this.height = height;
    this.sp.set({ width, height });
    if (untouched) this.fit();
  }

  // -- framing: the camera shows fitBox with FIT_PAD_PX free pixels beyond the outer points
  fit() {
    if (!this.sp || !this.fitBox) return;
    const { width, height } = this;
    const [x0, y0, x1, y1] = this.fitBox;
    // At camera distance d the view spans y in [-d, d] and x in [-d*W/H, d*W/H]: a pixel is
    // 2d/H units. Points are discs of pointSize pixels (grown a little when zoomed in).
    const pad = (2 * (this.pointSize || 3) + FIT_PAD_PX) * (2 / height);
    const hw = Math.max((x1 - x0) / 2, 1e-6), hh = Math.max((y1 - y0) / 2, 1e-6);
    const d = Math.max(hh / Math.max(1 - pad, 0.1), hw / Math.max(width / height - pad, 0.1));
    this.sp.zoomToLocation([(x0 + x1) / 2, (y0 + y1) / 2], d);
    this.fittedView = Array.from(this.sp.get('cameraView'));
  }

  afterFrame() {
    if (this.big && this.ui.root.dataset.mode !== this.sp.lastMode) this.ui.root.dataset.mode = this.sp.lastMode;
    this.placeRing();
    this.reportExtent();
  }

  reportExtent() {
    const ds = this.ui.root.dataset;
    const canvas = `${this.width || 0} ${this.height || 0}`;
    if (ds.canvas !== canvas) ds.canvas = canvas;
    if (!this.extent || !this.drawn) return;
    const [r0, r1, r2, r3] = this.extent.rows;
    const px = (row, k) => this.sp.getScreenPosition(row)[k];
    const ext = [px(r0, 0), px(r3, 1), px(r2, 0), px(r1, 1)].map((v) => v.toFixed(1)).join(' ');
    if (ds.extent !== ext) ds.extent = ext;
  }

  setMode(mode) {
    this.mode = mode;
    for (const [m, b] of Object.entries(this.ui.modes)) b.classList.toggle('ps-on', m === mode);
    if (!this.sp) return;
    if (mode === 'pan') this.sp.set({ mouseMode: 'panZoom' });
    else this.sp.set({ mouseMode: 'lasso', lassoType: mode === 'box' ? 'rectangle' : 'freeform' });
  }

  // -- hover: ring the item in every map of the group, and ask for the preview card
  hoverIn(row) {
    if (!this.drawn) return;
    this.hovered = row;
    this.showHover(row);
    for (const m of this.peers()) {
      if (m.sp && m.drawn && row < m.n) m.sp.hover(row, { preventEvent: true });
      m.showHover(row);
    }
    document.dispatchEvent(new CustomEvent(HOVER_EVENT, {
      detail: { row, x: this.mouse.x, y: this.mouse.y, element: this.ui.root },
    }));
  }

  hoverOut() {
    if (this.hovered == null) return;
    this.hovered = null;
    this.showHover(null);
    for (const m of this.peers()) {
      if (m.sp) m.sp.hover(undefined, { preventEvent: true });
      m.showHover(null);
    }
    document.dispatchEvent(new CustomEvent(HOVER_EVENT, { detail: { row: null, element: this.ui.root } }));
  }

  showHover(row) {
    this.shownHover = row != null && row < this.n ? row : null;
    this.ui.root.dataset.hovered = this.shownHover == null ? '' : String(this.shownHover);
    this.placeRing();
  }

  placeRing() {
    const ring = this.ui.ring, row = this.shownHover;
    let pos = null;
    if (row != null && this.sp && this.drawn && !(this.filtered && this.hiddenRow(row))) {
      pos = this.sp.getScreenPosition(row);
    }
    // an item outside the current view (zoomed in elsewhere, or without coordinates): no ring
    if (!pos || !(pos[0] >= 0 && pos[1] >= 0 && pos[0] <= this.width && pos[1] <= this.height)) {
      ring.style.display = 'none';
      return;
    }
    ring.style.left = `${pos[0]}px`;
    ring.style.top = `${pos[1]}px`;
    ring.style.display = 'block';
  }

  hiddenRow(row) {
    const g = groupState(this.group);
    return this.codes && g.hidden.has(this.codes[row]) && this.legendCodes && this.legendCodes.has(this.codes[row]);
  }

  // -- selection: a click, lasso or box in one map selects the same rows in all of them
  userSelected(points) {
    const g = groupState(this.group);
    if (!this.drawn) return; // no input is taken before the points are drawn
    // A lasso closed where it started also ends in a "click" on the point under the cursor:
    // that click must not replace what the lasso just selected.
    if (points && points.length === 1 && this.lassoRows && this.lassoRows.length > 1 &&
        performance.now() - this.lassoEndedAt < LASSO_CLICK_MS) {
      this.sp.select(Array.from(this.lassoRows), { preventEvent: true });
      return;
    }
    const rows = Uint32Array.from(points || []).sort();
    const nonce = newNonce();
    g.nonce = nonce;
    g.rows = rows;
    g.mine = [...g.mine.slice(-31), nonce];
    this.appliedNonce = nonce;
    this.ui.root.dataset.selected = String(rows.length);
    for (const m of this.peers()) m.applySelection(nonce, rows);
    // Only a page that keeps the selection hears of it (each report reruns the page).
    if (this.setStateValue && this.reportSelection) {
      g.awaiting = nonce;
      this.setStateValue('selection', packRows(rows, this.n, nonce));
    }
  }

  applySelection(nonce, rows) {
    this.appliedNonce = nonce;
    if (!this.sp || !this.drawn) return;
    // the big renderer takes typed arrays (a selection may hold millions of rows)
    const valid = rows ? (this.big ? Uint32Array.from(rows) : Array.from(rows)).filter((r) => r < this.n) : [];
    if (valid.length) this.sp.select(valid, { preventEvent: true });
    else this.sp.deselect({ preventEvent: true });
    this.ui.root.dataset.selected = String(valid.length);
  }

  async syncSelection(sel) {
    const g = groupState(this.group);
    // The page does not manage the selection (or the server has not heard of the one made
    // here yet: this update comes from a run that started before): keep the browser's own.
    if (!sel || (g.awaiting && sel.nonce !== g.awaiting)) {
      if (g.nonce && this.appliedNonce !== g.nonce) this.applySelection(g.nonce, g.rows);
      return undefined;
    }
    if (g.awaiting && sel.nonce === g.awaiting) g.awaiting = null; // the server has it now
    const nonce = sel.nonce;
    if (nonce === this.appliedNonce) return undefined;
    if (nonce && nonce === g.nonce && g.rows) return this.applySelection(nonce, g.rows);
    // An older selection made here, echoed back while a newer one is on its way: keep the newer.
    if (nonce && g.mine.includes(nonce) && g.nonce !== nonce) return undefined;
    let rows = new Uint32Array(0);
    if (sel.rows) rows = Uint32Array.from(sel.rows);
    else if (sel.url) rows = new Uint32Array(await blob(sel.key, sel.url));
    g.nonce = nonce;
    g.rows = rows;
    this.applySelection(nonce, rows);
    return undefined;
  }

  // -- zoom: optionally the same view in every map of the group
  viewChanged(ev) {
    const g = groupState(this.group);
    if (!g.linkZoom || this.syncingView || !ev || !ev.view) return;
    // A fit is this map's own framing (its canvas, its extent), not a view to share.
    if (sameView(Array.from(ev.view), this.fittedView)) return;
    for (const m of this.peers()) {
      if (!m.sp) continue;
      m.syncingView = true;
      m.sp.lookAt(ev.view, { preventEvent: true });
      m.syncingView = false;
    }
  }

  // -- legend: clicking a class hides or shows it in every map of the group
  renderLegend(colours) {
    const lg = this.ui.legend;
    lg.replaceChildren();
    const g = groupState(this.group);
    if (colours.legend) {
      if (colours.title) lg.appendChild(el('span', 'ps-legend-title', colours.title));
      for (const item of colours.legend) {
        const chip = el('button', 'ps-chip');
        chip.type = 'button';
        chip.dataset.code = String(item.code);
        chip.title = 'Click to hide or show this class in every map';
        const sw = el('span', 'ps-swatch');
        sw.style.background = item.colour;
        chip.append(sw, document.createTextNode(` ${item.label} (${item.count.toLocaleString()})`));
        chip.classList.toggle('ps-hidden', g.hidden.has(item.code));
        chip.addEventListener('click', () => {
          if (g.hidden.has(item.code)) g.hidden.delete(item.code);
          else g.hidden.add(item.code);
          for (const m of this.peers(true)) m.applyFilter(true);
        });
        lg.appendChild(chip);
      }
    } else if (colours.scale) {
      const s = colours.scale;
      lg.appendChild(el('span', 'ps-legend-title', colours.title || ''));
      lg.appendChild(el('span', 'ps-scale-end', s.min));
      const bar = el('span', 'ps-scale');
      bar.style.background = `linear-gradient(to right, ${s.stops.join(',')})`;
      lg.appendChild(bar);
      lg.appendChild(el('span', 'ps-scale-end', s.max));
    }
  }

  applyFilter(refreshLegend) {
    if (!this.sp || !this.drawn || !this.codes) return;
    const g = groupState(this.group);
    if (refreshLegend) {
      for (const chip of this.ui.legend.querySelectorAll('.ps-chip')) {
        chip.classList.toggle('ps-hidden', g.hidden.has(Number(chip.dataset.code)));
      }
    }
    const hidden = this.legendCodes ? new Set([...g.hidden].filter((c) => this.legendCodes.has(c))) : new Set();
    if (this.big) {
      this.sp.filterCodes(hidden);
      this.filtered = hidden.size > 0;
      this.placeRing();
      return;
    }
    if (!hidden.size) {
      if (this.filtered) this.sp.unfilter({ preventEvent: true });
      this.filtered = false;
      this.placeRing();
      return;
    }
    const keep = [];
    for (let i = 0; i < this.n; i++) if (!hidden.has(this.codes[i])) keep.push(i);
    this.sp.filter(keep, { preventEvent: true });
    this.filtered = true;
    this.placeRing();
  }

  setState(state) {
    this.ui.root.dataset.state = state;
  }

  async update(data, setStateValue) {
    const version = ++this.version;
    this.setStateValue = setStateValue;
    this.reportSelection = !!data.report_selection;
    this.group = data.group || 'default';
    const g = groupState(this.group);
    if (data.link_zoom != null && this.lastLinkDefault !== data.link_zoom) {
      g.linkZoom = !!data.link_zoom;
      this.lastLinkDefault = data.link_zoom;
    }
    this.ui.linkBox.checked = g.linkZoom;
    this.ui.title.textContent = data.title || '';
    this.ui.title.title = data.title || '';
    this.ui.wrap.style.height = `${data.height || 480}px`;
    this.ui.root.dataset.mapId = data.id || '';
    if (!this.mode) this.setMode('pan');
    const needPoints = data.points.key !== this.pointsKey;
    const needColours = data.colours.key !== this.coloursKey;
    // Said at once (before any await), so that a new title is never seen beside an old "drawn".
    if (needPoints || needColours) {
      this.drawn = false;
      this.setState('loading');
    }
    try {
      const n = data.n;
      const big = data.density_above != null && n > data.density_above;
      if (big) {
        if (!(await this.updateBig(data, version, needPoints, needColours))) return;
      } else {
        if (!(await this.updateRegl(data, version, needPoints, needColours))) return;
      }
      this.legendCodes = data.colours.legend ? new Set(data.colours.legend.map((x) => x.code)) : null;
      this.renderLegend(data.colours);
      this.applyFilter(false);
      await this.syncSelection(data.selection);
      if (version !== this.version) return;
      this.ui.status.textContent = data.note || '';
      this.ui.status.style.display = data.note ? 'block' : 'none';
      this.ui.root.dataset.points = String(this.n);
      this.ui.root.dataset.pointsKey = this.pointsKey;
      this.reportExtent();
      this.placeRing();
      this.ui.root.dataset.revision = String(++this.revision);
      this.setState('drawn');
    } catch (err) {
      if (version !== this.version) return;
      this.setState('error');
      this.ui.status.style.display = 'block';
      this.ui.status.textContent = `The map could not be drawn: ${err && err.message ? err.message : err}`;
    }
  }

  // New positions: frame them (Python's extent, else the points' own).
  frameNew(data) {
    this.extent = extentOf(this.xy, data.n);
    const e = data.extent;
    this.fitBox = Array.isArray(e) && e.length === 4 ? e : this.extent && this.extent.box;
    this.fit();
  }

  // The big-map renderer (density.js). A map sent in parts is drawn as soon as its first part
  // is in (an even sample of the whole map: data-state "partial"), then redrawn as the others
  // arrive, at most every PARTIAL_REDRAW_MS. False: a newer update took over.
  async updateBig(data, version, needPoints, needColours) {
    const n = data.n;
    this.ensurePlot(n, true, data.detail_limit);
    this.pointSize = data.point_size || 2;
    this.sp.set({ pointColor: data.colours.palette, pointSize: this.pointSize });
    if (!needPoints && !needColours) return true;
    const ds = this.ui.root.dataset;
    if (!needPoints && this.codes && this.xy && this.xy.length === 2 * n && this.sp.n === n) {
      // a recolour: only the colour codes travel
      const codes = await wholePayload(data.colours, n, 1, Uint8Array, 255);
      if (version !== this.version) return false;
      this.codes = codes;
      this.sp.setCodes(codes);
    } else {
      const pts = data.points, col = data.colours;
      if (!pts.parts) {
        const [xy, codes] = await Promise.all([
          wholePayload(pts, n, 2, Float32Array, 0),
          wholePayload(col, n, 1, Uint8Array, 255),
        ]);
        if (version !== this.version) return false;
        this.xy = xy;
        this.codes = codes;
        this.sp.setPoints(xy, codes);
        this.frameNew(data);
      } else {
        const P = pts.parts.length;
        const xy = new Float32Array(2 * n).fill(10 * PARKED); // rows not arrived: off-view
        const pairs = pts.parts.map((p, j) => [p, col.parts && col.parts.length === P ? col.parts[j] : null]);
        let codes;
        if (pairs[0][1]) codes = new Uint8Array(n).fill(255);
        else codes = await wholePayload(col, n, 1, Uint8Array, 255);
        if (version !== this.version) return false;
        let arrived = 0;
        const take = async ([p, c]) => {
          const [xb, cb] = await Promise.all([fetchBinary(partURL(p)), c ? fetchBinary(partURL(c)) : null]);
          if (version !== this.version) return;
          writePart(xy, xb, p.index, P, 2, Float32Array);
          if (cb) writePart(codes, cb, c.index, P, 1, Uint8Array);
          arrived++;
        };
        ds.parts = String(P);
        await take(pairs[0]);
        if (version !== this.version) return false;
        this.xy = xy;
        this.codes = codes;
        this.sp.setPoints(xy, codes);
        this.frameNew(data);
        ds.arrived = String(arrived);
        if (P > 1) this.setState('partial');
        let last = performance.now();
        await eachLimited(pairs.slice(1), PART_FETCHES, async (pair) => {
          await take(pair);
          if (version !== this.version) return;
          const now = performance.now();
          if (now - last >= PARTIAL_REDRAW_MS && arrived < P) {
            this.sp.setPoints(xy, codes);
            ds.arrived = String(arrived);
            last = performance.now();
          }
        });
        if (version !== this.version) return false;
        this.sp.setPoints(xy, codes);
        this.extent = extentOf(xy, n);
        ds.arrived = String(arrived);
      }
    }
    this.n = n;
    this.pointsKey = data.points.key;
    this.coloursKey = data.colours.key;
    this.drawn = true;
    this.appliedNonce = undefined; // reapply the selection (the rows may have changed)
    this.filtered = false;
    return true;
  }

  // regl-scatterplot: every point handed over as one small array, drawn in one go.
  async updateRegl(data, version, needPoints, needColours) {
    const n = data.n;
    const [xyArr, codeArr] = await Promise.all([
      needPoints ? wholePayload(data.points, n, 2, Float32Array, 10 * PARKED) : null,
      needColours ? wholePayload(data.colours, n, 1, Uint8Array, 255) : null,
    ]);
    if (version !== this.version) return false; // a newer update is on its way
    if (xyArr) this.xy = xyArr;
    if (codeArr) this.codes = codeArr;
    if (this.xy.length !== 2 * n || this.codes.length !== n) {
      throw new Error(`map data has ${this.xy.length / 2} points and ${this.codes.length} colours, expected ${n}`);
    }
    this.ensurePlot(n, false);
    this.pointSize = data.point_size || 3;
    this.sp.set({
      pointColor: data.colours.palette,
      pointColorActive: data.colours.palette,
      colorBy: 'valueA',
      pointSize: this.pointSize,
    });
    if (needPoints || needColours) {
      const points = new Array(n);
      const xy = this.xy, codes = this.codes;
      for (let i = 0; i < n; i++) points[i] = [xy[2 * i], xy[2 * i + 1], codes[i], 0];
      this.setState('drawing');
      // new positions (another map, projection or alignment): frame them
      if (needPoints) this.frameNew(data);
      const opts = { zDataType: 'categorical', wDataType: 'continuous' };
      if (!needPoints && this.spatialIndex && this.n === n) opts.spatialIndex = this.spatialIndex;
      // One draw at a time: the library refuses a draw while the last one runs, so an update
      // that comes meanwhile (UMAP replacing PCA) waits for it, then draws if still the latest.
      await this.drawing;
      if (version !== this.version) return false;
      const draw = this.sp.draw(points, opts);
      this.drawing = draw.catch(() => undefined); // the next update waits on it, errors or not
      await draw;
      if (version !== this.version) return false;
      this.spatialIndex = this.sp.get('spatialIndex');
      this.n = n;
      this.pointsKey = data.points.key;
      this.coloursKey = data.colours.key;
      this.drawn = true;
      this.appliedNonce = undefined; // a redraw drops the library's selection: reapply it
      this.filtered = false;
    }
    return true;
  }

  destroy() {
    if (this.resizer) this.resizer.disconnect();
    if (this.sp) this.sp.destroy();
    this.sp = null;
    // The same map may already be drawn by a newer instance (removing an earlier map re-mounts
    // the later ones): that one keeps the id, or linked hover and selection stop reaching it.
    const G = registry();
    if (G.maps.get(this.id) === this) G.maps.delete(this.id);
  }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data || !data.points) return undefined;
  const G = registry();
  if (data.base_path != null) G.basePath = data.base_path;
  let inst = parentElement.__parallaxMap;
  if (!inst || !inst.ui.root.isConnected) {
    inst = new MapInstance(parentElement);
    parentElement.__parallaxMap = inst;
  }
  inst.id = data.id;
  G.maps.set(data.id, inst);
  inst.update(data, setStateValue);
  // Streamlit calls this cleanup before every update as well as on unmount: destroy only a map
  // whose element has left the page.
  return () => {
    setTimeout(() => {
      if (!inst.ui.root.isConnected || !parentElement.isConnected) {
        inst.destroy();
        if (parentElement.__parallaxMap === inst) parentElement.__parallaxMap = null;
      }
    }, 2000);
  };
}
