// The big-map renderer: every point of a multi-million-point map, without one JS object a point.
//
// regl-scatterplot turns its input into one small array a point and redraws every point on each
// hover; at 10M points that is gigabytes of heap and seconds a frame without a GPU. This draws
// from the flat typed arrays MapInstance already holds (float32 x,y and uint8 colour codes):
//
// * a uniform grid index built once per set of positions (a counting sort: the points' x,y and
//   codes copied in cell order, `order` mapping back to rows), so a frame, a hover or a lasso
//   touches only the cells it needs;
// * per frame, when more than `detailLimit` points may be in view, a density image: every point
//   in view binned into a device-pixel grid (count and summed palette colour), each non-empty
//   pixel drawn in the mean colour of its points with an opacity rising with log(count), so no
//   point is lost and dense regions read as density; the image is one texture drawn as one quad.
//   Otherwise (zoomed in) the points in view are drawn as discs (WebGL points);
// * hover never redraws: MapInstance rings the hovered row in the DOM.
//
// It exposes the part of regl-scatterplot's API that MapInstance uses (set, get('cameraView'),
// zoomToLocation, lookAt, getScreenPosition, select, deselect, hover, subscribe, destroy) plus
// setPoints / setCodes / filterCodes. The camera follows regl-scatterplot's convention: at
// distance d the view spans y in [-d, d] about its centre, a pixel being 2d / height units.

import createREGL from 'regl';

const PARKED = 1e5; // positions beyond this have no coordinates (or have not arrived yet)
const HOVER_PX = 5; // the nearest point within this many pixels is hovered
const CLICK_PX = 4; // a press and release closer than this is a click, not a drag
const FADED = 0.25;
// colours blended over what is drawn; the canvas itself stays opaque
const BLEND = {
  enable: true,
  func: { srcRGB: 'src alpha', dstRGB: 'one minus src alpha', srcAlpha: 'one', dstAlpha: 'one minus src alpha' },
}; // opacity scale of unselected points while a selection exists

function hexRGB(c) {
  const s = String(c || '#888888').replace('#', '');
  const h = s.length === 3 ? s.split('').map((x) => x + x).join('') : s.slice(0, 6);
  const v = parseInt(h, 16) || 0;
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function pointInPolygon(x, y, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 2; i < poly.length; j = i, i += 2) {
    const xi = poly[i], yi = poly[i + 1], xj = poly[j], yj = poly[j + 1];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

export default class DensityMap {
  constructor({ canvas, width, height, pointSize = 2, detailLimit = 250_000 }) {
    this.canvas = canvas;
    this.dpr = window.devicePixelRatio || 1;
    this.detailLimit = detailLimit;
    this.pointSize = pointSize;
    this.listeners = new Map();
    this.cam = { cx: 0, cy: 0, d: 1 };
    this.mode = 'panZoom';
    this.lassoType = 'freeform';
    this.n = 0;
    this.m = 0; // points indexed (with coordinates)
    this.rgb = new Uint8Array(256 * 3);
    this.hidden = new Uint8Array(256); // 1: this colour code is hidden (legend)
    this.selMask = null; // Uint8Array(n), 1 = selected; null = no selection
    this.hovered = null;
    this.lastMode = '';
    this.frames = 0;
    this.regl = createREGL({
      canvas,
      attributes: { antialias: false, preserveDrawingBuffer: true, premultipliedAlpha: false },
    });
    this.tex = this.regl.texture({ width: 1, height: 1 });
    this.quad = this.regl({
      vert: `precision mediump float; attribute vec2 p; varying vec2 uv;
        void main() { uv = vec2((p.x + 1.0) / 2.0, (1.0 - p.y) / 2.0); gl_Position = vec4(p, 0, 1); }`,
      frag: `precision mediump float; uniform sampler2D tex; varying vec2 uv;
        void main() { gl_FragColor = texture2D(tex, uv); }`,
      attributes: { p: [-1, -1, 1, -1, -1, 1, -1, 1, 1, -1, 1, 1] },
      uniforms: { tex: this.regl.prop('tex') },
      blend: BLEND,
      depth: { enable: false },
      count: 6,
    });
    this.posBuf = this.regl.buffer({ usage: 'dynamic', type: 'float', length: 8 });
    this.colBuf = this.regl.buffer({ usage: 'dynamic', type: 'uint8', length: 4 });
    this.dots = this.regl({
      vert: `precision highp float; attribute vec2 pos; attribute vec4 col;
        uniform vec2 centre; uniform vec2 scale; uniform float size; varying vec4 c;
        void main() { c = col; gl_PointSize = size;
          gl_Position = vec4((pos - centre) * scale, 0, 1); }`,
      frag: `precision mediump float; varying vec4 c;
        void main() { vec2 q = gl_PointCoord - 0.5; if (dot(q, q) > 0.25) discard; gl_FragColor = c; }`,
      attributes: {
        pos: { buffer: this.regl.prop('pos'), size: 2 },
        col: { buffer: this.regl.prop('col'), size: 4, normalized: true },
      },
      uniforms: {
        centre: this.regl.prop('centre'), scale: this.regl.prop('scale'), size: this.regl.prop('size'),
      },
      blend: BLEND,
      depth: { enable: false },
      primitive: 'points',
      offset: this.regl.prop('offset'),
      count: this.regl.prop('count'),
    });
    this.overlay = document.createElement('canvas');
    Object.assign(this.overlay.style, { position: 'absolute', left: '0', top: '0', pointerEvents: 'none' });
    canvas.parentElement.appendChild(this.overlay);
    this.resize(width, height);
    this.bindInput();
  }

  // -- the regl-scatterplot-like API -------------------------------------------------------
  subscribe(name, fn) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(fn);
  }

  emit(name, payload) {
    for (const fn of this.listeners.get(name) || []) fn(payload);
  }

  set(opts) {
    if (opts.width != null || opts.height != null) {
      this.resize(opts.width ?? this.width, opts.height ?? this.height);
    }
    if (opts.pointColor) {
      opts.pointColor.forEach((c, i) => this.rgb.set(hexRGB(c), 3 * i));
      this.redraw();
    }
    if (opts.pointSize != null) { this.pointSize = opts.pointSize; this.redraw(); }
    if (opts.mouseMode) this.mode = opts.mouseMode;
    if (opts.lassoType) this.lassoType = opts.lassoType;
  }

  get(name) {
    if (name === 'cameraView') return [this.cam.cx, this.cam.cy, this.cam.d];
    return undefined;
  }

  zoomToLocation([x, y], d, opts = {}) { this.setCamera(x, y, d, opts.preventEvent !== false); }

  lookAt(view, opts = {}) { this.setCamera(view[0], view[1], view[2], !!opts.preventEvent); }

  getScreenPosition(row) {
    const k = this.unit();
    return [this.width / 2 + (this.xy[2 * row] - this.cam.cx) / k,
      this.height / 2 - (this.xy[2 * row + 1] - this.cam.cy) / k];
  }

  // hover: MapInstance rings the row in the DOM; nothing to redraw here
  hover() {}

  select(rows, opts = {}) {
    const mask = new Uint8Array(this.n);
    let count = 0;
    for (const r of rows) if (r < this.n && !mask[r]) { mask[r] = 1; count++; }
    this.selMask = count ? mask : null;
    this.redraw();
    if (!opts.preventEvent) {
      if (count) this.emit('select', { points: this.maskRows(mask, count) });
      else this.emit('deselect');
    }
  }

  deselect(opts = {}) {
    this.selMask = null;
    this.redraw();
    if (!opts.preventEvent) this.emit('deselect');
  }

  // hidden legend classes: `codes` is a Set of colour codes not to draw (nor hover, nor select)
  filterCodes(codes) {
    this.hidden.fill(0);
    for (const c of codes) this.hidden[c] = 1;
    this.redraw();
  }

  destroy() {
    this.destroyed = true;
    if (this.unbind) this.unbind();
    this.overlay.remove();
    this.regl.destroy();
  }

  // -- data -----------------------------------------------------------------------------------
  // Positions (and codes) changed: rebuild the grid index. `xy` / `codes` are MapInstance's own
  // arrays (not copied); rows without coordinates (|x| >= PARKED) are left out of the index.
  setPoints(xy, codes) {
    const n = codes.length;
    this.xy = xy;
    this.codes = codes;
    if (n !== this.n) {
      this.n = n;
      this.order = new Uint32Array(n);
      this.sxy = new Float32Array(2 * n);
      this.scodes = new Uint8Array(n);
      this.selMask = null;
    }
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i], y = xy[2 * i + 1];
      if (!(Math.abs(x) < PARKED && Math.abs(y) < PARKED)) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    if (!(x1 >= x0)) { x0 = y0 = -1; x1 = y1 = 1; }
    // about 8 points a cell on average, at most 1024 x 1024 cells
    const G = Math.max(16, Math.min(1024, Math.ceil(Math.sqrt(n / 8))));
    const span = Math.max(x1 - x0, y1 - y0, 1e-9) * (1 + 1e-6);
    this.grid = { x0, y0, G, inv: G / span, cell: span / G };
    const start = new Uint32Array(G * G + 1);
    const cellOf = (x, y) => {
      const cx = Math.min(G - 1, ((x - x0) * this.grid.inv) | 0);
      const cy = Math.min(G - 1, ((y - y0) * this.grid.inv) | 0);
      return cy * G + cx;
    };
    let m = 0;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i], y = xy[2 * i + 1];
      if (!(Math.abs(x) < PARKED && Math.abs(y) < PARKED)) continue;
      start[cellOf(x, y) + 1]++;
      m++;
    }
    for (let c = 0; c < G * G; c++) start[c + 1] += start[c];
    const fill = start.slice(0, G * G);
    const { order, sxy, scodes } = this;
    for (let i = 0; i < n; i++) {
      const x = xy[2 * i], y = xy[2 * i + 1];
      if (!(Math.abs(x) < PARKED && Math.abs(y) < PARKED)) continue;
      const k = fill[cellOf(x, y)]++;
      order[k] = i;
      sxy[2 * k] = x;
      sxy[2 * k + 1] = y;
      scodes[k] = codes[i];
    }
    this.start = start;
    this.m = m;
    this.redraw();
  }

  // New colour codes for the same positions: only the codes in cell order change.
  setCodes(codes) {
    this.codes = codes;
    const { order, scodes } = this;
    for (let k = 0; k < this.m; k++) scodes[k] = codes[order[k]];
    this.redraw();
  }

  // -- camera -----------------------------------------------------------------------------------
  unit() { return (2 * this.cam.d) / this.height; } // data units a CSS pixel

  setCamera(cx, cy, d, quiet) {
    this.cam = { cx, cy, d: Math.max(d, 1e-7) };
    if (!quiet) this.viewMoved = true;
    this.redraw();
  }

  toData(px, py) {
    const k = this.unit();
    return [this.cam.cx + (px - this.width / 2) * k, this.cam.cy - (py - this.height / 2) * k];
  }

  resize(width, height) {
    this.width = width;
    this.height = height;
    for (const c of [this.canvas, this.overlay]) {
      c.width = Math.round(width * this.dpr);
      c.height = Math.round(height * this.dpr);
      c.style.width = `${width}px`;
      c.style.height = `${height}px`;
    }
    this.redraw();
  }

  // -- drawing ----------------------------------------------------------------------------------
  redraw() {
    if (this.pending || this.destroyed) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      if (this.destroyed) return;
      this.frame();
      if (this.viewMoved) {
        this.viewMoved = false;
        this.emit('view', { view: this.get('cameraView') });
      }
      this.emit('draw');
    });
  }

  // The cells the view [x0, x1] x [y0, y1] (data units) touches: [cx0, cy0, cx1, cy1] or null.
  cellRange(x0, y0, x1, y1) {
    const g = this.grid;
    if (!g || !this.m) return null;
    const c = (v, o) => Math.floor((v - o) * g.inv);
    const cx0 = Math.max(0, c(x0, g.x0)), cy0 = Math.max(0, c(y0, g.y0));
    const cx1 = Math.min(g.G - 1, c(x1, g.x0)), cy1 = Math.min(g.G - 1, c(y1, g.y0));
    return cx0 > cx1 || cy0 > cy1 ? null : [cx0, cy0, cx1, cy1];
  }

  frame() {
    const W = this.canvas.width, H = this.canvas.height;
    this.regl.poll();
    this.regl.clear({ color: [1, 1, 1, 1] });
    const [vx0, vy1] = this.toData(0, 0), [vx1, vy0] = this.toData(this.width, this.height);
    const range = this.cellRange(vx0, vy0, vx1, vy1);
    if (!range) return;
    const [cx0, cy0, cx1, cy1] = range;
    const { G } = this.grid, start = this.start;
    let upper = 0; // points in the cells the view touches: at least those in view
    for (let cy = cy0; cy <= cy1; cy++) upper += start[cy * G + cx1 + 1] - start[cy * G + cx0];
    this.lastMode = upper > this.detailLimit ? 'density' : 'points';
    this.frames++;
    if (this.lastMode === 'density') this.drawDensity(range, W, H, vx0, vy1);
    else this.drawPoints(range, upper, vx0, vy0, vx1, vy1);
  }

  drawDensity([cx0, cy0, cx1, cy1], W, H, vx0, vy1) {
    const size = W * H;
    if (!this.bins || this.bins.size !== size) {
      this.bins = {
        size, count: new Uint32Array(size), sum: new Uint32Array(3 * size),
        selCount: new Uint32Array(size), selSum: new Uint32Array(3 * size), image: new Uint8Array(4 * size),
      };
    }
    const { count, sum, selCount, selSum, image } = this.bins;
    count.fill(0);
    sum.fill(0);
    const sel = this.selMask;
    if (sel) { selCount.fill(0); selSum.fill(0); }
    const { G } = this.grid, { start, sxy, scodes, order, rgb, hidden } = this;
    const s = 1 / (this.unit() / this.dpr); // device pixels a data unit
    for (let cy = cy0; cy <= cy1; cy++) {
      const k0 = start[cy * G + cx0], k1 = start[cy * G + cx1 + 1];
      for (let k = k0; k < k1; k++) {
        const px = ((sxy[2 * k] - vx0) * s) | 0, py = ((vy1 - sxy[2 * k + 1]) * s) | 0;
        if (px < 0 || py < 0 || px >= W || py >= H) continue;
        const code = scodes[k];
        if (hidden[code]) continue;
        const p = py * W + px;
        count[p]++;
        sum[3 * p] += rgb[3 * code];
        sum[3 * p + 1] += rgb[3 * code + 1];
        sum[3 * p + 2] += rgb[3 * code + 2];
        if (sel && sel[order[k]]) {
          selCount[p]++;
          selSum[3 * p] += rgb[3 * code];
          selSum[3 * p + 1] += rgb[3 * code + 1];
          selSum[3 * p + 2] += rgb[3 * code + 2];
        }
      }
    }
    let max = 1;
    for (let p = 0; p < size; p++) if (count[p] > max) max = count[p];
    // one point: opacity 0.45 (visible on white); the densest pixel: opaque
    const logMax = Math.log1p(max);
    const alpha = (c) => 0.45 + (0.55 * Math.log1p(c)) / logMax;
    for (let p = 0; p < size; p++) {
      const c = count[p];
      if (!c) { image[4 * p + 3] = 0; continue; }
      if (sel && selCount[p]) {
        const sc = selCount[p];
        image[4 * p] = selSum[3 * p] / sc;
        image[4 * p + 1] = selSum[3 * p + 1] / sc;
        image[4 * p + 2] = selSum[3 * p + 2] / sc;
        image[4 * p + 3] = 255;
      } else {
        image[4 * p] = sum[3 * p] / c;
        image[4 * p + 1] = sum[3 * p + 1] / c;
        image[4 * p + 2] = sum[3 * p + 2] / c;
        image[4 * p + 3] = 255 * alpha(c) * (sel ? FADED : 1);
      }
    }
    this.tex({ width: W, height: H, data: image, mag: 'nearest', min: 'nearest' });
    this.quad({ tex: this.tex });
  }

  drawPoints([cx0, cy0, cx1, cy1], upper, vx0, vy0, vx1, vy1) {
    if (!this.dotPos || this.dotPos.length < 2 * upper) {
      const cap = Math.max(upper, 1024);
      this.dotPos = new Float32Array(2 * cap);
      this.dotCol = new Uint8Array(4 * cap);
    }
    const pos = this.dotPos, col = this.dotCol;
    const { G } = this.grid, { start, sxy, scodes, order, rgb, hidden } = this;
    const sel = this.selMask;
    const pad = (this.pointSize * this.unit()) / 2;
    // unselected points fill from the front, selected from the back (drawn last, on top)
    let a = 0, b = upper;
    const alpha = sel ? Math.round(255 * FADED) : 255;
    for (let cy = cy0; cy <= cy1; cy++) {
      const k0 = start[cy * G + cx0], k1 = start[cy * G + cx1 + 1];
      for (let k = k0; k < k1; k++) {
        const x = sxy[2 * k], y = sxy[2 * k + 1];
        if (x < vx0 - pad || x > vx1 + pad || y < vy0 - pad || y > vy1 + pad) continue;
        const code = scodes[k];
        if (hidden[code]) continue;
        const on = sel && sel[order[k]];
        const j = on ? --b : a++;
        pos[2 * j] = x;
        pos[2 * j + 1] = y;
        col[4 * j] = rgb[3 * code];
        col[4 * j + 1] = rgb[3 * code + 1];
        col[4 * j + 2] = rgb[3 * code + 2];
        col[4 * j + 3] = on ? 255 : alpha;
      }
    }
    this.posBuf({ data: pos, usage: 'dynamic' });
    this.colBuf({ data: col, usage: 'dynamic' });
    const k = this.unit();
    const props = {
      pos: this.posBuf, col: this.colBuf, centre: [this.cam.cx, this.cam.cy],
      scale: [2 / (this.width * k), 2 / (this.height * k)],
    };
    if (a) this.dots({ ...props, size: this.pointSize * this.dpr, offset: 0, count: a });
    if (upper - b) this.dots({ ...props, size: (this.pointSize + 2) * this.dpr, offset: b, count: upper - b });
    this.shown = a + upper - b;
  }

  // -- picking ----------------------------------------------------------------------------------
  // The visible row nearest to canvas pixel (px, py) within `radius` pixels, or null.
  nearest(px, py, radius) {
    const [x, y] = this.toData(px, py);
    const r = radius * this.unit();
    const range = this.cellRange(x - r, y - r, x + r, y + r);
    if (!range) return null;
    const [cx0, cy0, cx1, cy1] = range;
    const { G } = this.grid, { start, sxy, scodes, order, hidden } = this;
    let best = null, bestD = r * r;
    for (let cy = cy0; cy <= cy1; cy++) {
      const k0 = start[cy * G + cx0], k1 = start[cy * G + cx1 + 1];
      for (let k = k0; k < k1; k++) {
        const dx = sxy[2 * k] - x, dy = sxy[2 * k + 1] - y, dd = dx * dx + dy * dy;
        if (dd <= bestD && !hidden[scodes[k]]) { bestD = dd; best = order[k]; }
      }
    }
    return best;
  }

  // Rows inside a polygon of canvas pixels [x0, y0, x1, y1, ...] (visible ones), sorted.
  rowsInPolygon(poly) {
    const data = [];
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (let i = 0; i < poly.length; i += 2) {
      const [x, y] = this.toData(poly[i], poly[i + 1]);
      data.push(x, y);
      x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    }
    const mask = new Uint8Array(this.n);
    const rect = this.lassoType === 'rectangle';
    let count = 0;
    const range = this.cellRange(x0, y0, x1, y1);
    if (range) {
      const [cx0, cy0, cx1, cy1] = range;
      const { G, cell } = this.grid, { start, sxy, scodes, order, hidden } = this;
      for (let cy = cy0; cy <= cy1; cy++) {
        for (let cx = cx0; cx <= cx1; cx++) {
          // a box takes a cell wholly inside it without testing each point
          const gx = this.grid.x0 + cx * cell, gy = this.grid.y0 + cy * cell;
          const whole = rect && gx >= x0 && gx + cell <= x1 && gy >= y0 && gy + cell <= y1;
          const c = cy * G + cx;
          for (let k = start[c]; k < start[c + 1]; k++) {
            if (hidden[scodes[k]]) continue;
            const x = sxy[2 * k], y = sxy[2 * k + 1];
            if (!whole && (x < x0 || x > x1 || y < y0 || y > y1 || !pointInPolygon(x, y, data))) continue;
            mask[order[k]] = 1;
            count++;
          }
        }
      }
    }
    return { mask, rows: this.maskRows(mask, count) };
  }

  maskRows(mask, count) {
    const rows = new Uint32Array(count);
    for (let i = 0, j = 0; j < count; i++) if (mask[i]) rows[j++] = i;
    return rows;
  }

  // -- input ------------------------------------------------------------------------------------
  bindInput() {
    const cv = this.canvas;
    const local = (e) => {
      const r = cv.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    let press = null; // { x, y, cam, path, moved }
    const ctx = this.overlay.getContext('2d');
    const drawPath = (path) => {
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      ctx.clearRect(0, 0, this.width, this.height);
      if (!path || path.length < 4) return;
      ctx.beginPath();
      ctx.moveTo(path[0], path[1]);
      for (let i = 2; i < path.length; i += 2) ctx.lineTo(path[i], path[i + 1]);
      ctx.closePath();
      ctx.fillStyle = 'rgba(31,119,180,0.12)';
      ctx.strokeStyle = '#1f77b4';
      ctx.lineWidth = 1.5;
      ctx.fill();
      ctx.stroke();
    };
    const shape = (p, x, y) => (this.lassoType === 'rectangle'
      ? [p.x, p.y, x, p.y, x, y, p.x, y] : [...p.path, x, y]);
    const down = (e) => {
      if (e.button !== 0) return;
      const [x, y] = local(e);
      press = { x, y, cam: { ...this.cam }, path: [x, y], moved: false };
      e.preventDefault();
    };
    const move = (e) => {
      const [x, y] = local(e);
      if (!press) {
        if (e.target !== cv) return;
        const row = this.nearest(x, y, Math.max(HOVER_PX, this.pointSize));
        if (row !== this.hovered) {
          if (this.hovered != null) this.emit('pointOut', this.hovered);
          this.hovered = row;
          if (row != null) this.emit('pointOver', row);
        }
        return;
      }
      if (Math.hypot(x - press.x, y - press.y) >= CLICK_PX) press.moved = true;
      if (this.mode === 'panZoom') {
        if (!press.moved) return;
        const k = this.unit();
        this.setCamera(press.cam.cx - (x - press.x) * k, press.cam.cy + (y - press.y) * k, this.cam.d, false);
      } else {
        if (this.lassoType !== 'rectangle') press.path.push(x, y);
        drawPath(shape(press, x, y));
      }
    };
    const up = (e) => {
      if (!press) return;
      const p = press;
      press = null;
      const [x, y] = local(e);
      if (!p.moved) {
        const row = this.nearest(x, y, Math.max(HOVER_PX, this.pointSize));
        if (row != null) this.select([row]);
        else this.deselect();
        return;
      }
      if (this.mode === 'panZoom') return;
      const poly = shape(p, x, y);
      drawPath(null);
      const { mask, rows } = this.rowsInPolygon(poly);
      this.emit('lassoEnd', { rows });
      this.selMask = rows.length ? mask : null;
      this.redraw();
      if (rows.length) this.emit('select', { points: rows });
      else this.emit('deselect');
    };
    const wheel = (e) => {
      e.preventDefault();
      const [x, y] = local(e);
      const [dx, dy] = this.toData(x, y);
      const f = Math.exp(Math.max(-1, Math.min(1, e.deltaY * 0.002)));
      const d = this.cam.d * f;
      // the point under the cursor stays under it
      this.setCamera(dx - (dx - this.cam.cx) * f, dy - (dy - this.cam.cy) * f, d, false);
    };
    const leave = () => {
      if (this.hovered != null && !press) {
        this.emit('pointOut', this.hovered);
        this.hovered = null;
      }
    };
    cv.addEventListener('mousedown', down);
    window.addEventListener('mousemove', move);
    window.addEventListener('mouseup', up);
    cv.addEventListener('wheel', wheel, { passive: false });
    cv.addEventListener('mouseleave', leave);
    this.unbind = () => {
      cv.removeEventListener('mousedown', down);
      window.removeEventListener('mousemove', move);
      window.removeEventListener('mouseup', up);
      cv.removeEventListener('wheel', wheel);
      cv.removeEventListener('mouseleave', leave);
    };
  }
}
