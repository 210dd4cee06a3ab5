"""The WebGL map: a Streamlit components-v2 element that draws every point with regl-scatterplot.

The frontend source is ``frontend/`` (``npm ci && npm run build``); the built bundle
``static/scatter.js`` is committed, so installing Parallax needs no node. ``static/build-info.json``
records a hash of the sources it was built from (``source_hash`` recomputes it; a test compares).

What travels to the browser:

* a tiny loader (``static/loader.js``, built from ``frontend/src/loader.js``), Streamlit's inline
  JS for this component and for the hover preview (``dashboard.hover``): it imports the bundle
  once per page from Streamlit's media endpoint and calls the bundle's export named by the
  element's ``entry`` (the map by default, ``hover`` for the preview card);
* per map, small JSON: title, palette, legend, and the media URLs + content keys of two binary
  payloads built by ``engine.maps.payload`` (float32 positions, uint8 colour codes: 9 bytes a
  point);
  the browser fetches a payload only when it does not hold its key, so a rerun that changes the
  colouring fetches 1 byte a point and one that changes the selection fetches nothing per point;
* the selection: a row list, or a uint32 payload for large ones.

A map of more than ``part_points`` points (``engine.maps.payload.PART_POINTS``) sends each
payload as interleaved parts (``split_parts``: part ``j`` of ``P`` holds rows ``j, j+P, ...``),
each keyed by its content, so the browser draws a first picture from part 0 before the rest has
arrived, and a recolour fetches only the colour parts. Above ``density_above`` points the
browser draws with its own renderer (``frontend/src/density.js``: a grid index, a density image
when more than ``detail_limit`` points are in view, the points themselves when zoomed in)
instead of regl-scatterplot, which holds one JS array a point.

Binary payloads go over HTTP, not the websocket, so ``server.maxMessageSize`` never applies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from engine import settings
from engine.maps import payload as mapdata

HERE = Path(__file__).resolve().parent
FRONTEND = HERE / "frontend"
BUNDLE = HERE / "static" / "scatter.js"
BUILD_INFO = HERE / "static" / "build-info.json"
SOURCE_FILES = ("build.mjs", "package.json", "package-lock.json")
INLINE_SELECTION = 4096  # larger selections travel as a binary payload
# Above this many points the browser draws with density.js: regl-scatterplot turns every point
# into a JS array (~100 B of heap each) and redraws every point on each hover (~1.8 s a frame
# at 1M points in software WebGL).
# PARALLAX_MAP_DENSITY_ABOVE moves it (benchmarks/bench_map_browser.py compares both renderers).
DENSITY_ABOVE = settings.MAP_DENSITY_ABOVE
DETAIL_LIMIT = 250_000  # the big renderer draws points (not density) up to this many in view

STATIC = HERE / "static"
OUTPUTS = ("scatter.js", "loader.js", "scatter.css", "hover.css")


def asset_text(name: str) -> str:
    """A built file of ``static/`` (the loader, a style sheet) as text, for Streamlit's inline
    ``js`` / ``css``: the code itself lives in ``frontend/src``, never in a Python string."""
    if name not in OUTPUTS:
        raise ValueError(f"not a built asset: {name}")
    return (STATIC / name).read_text(encoding="utf-8")


_component = st.components.v2.component(
    "parallax_scatter",
    js=asset_text("loader.js"),
    css=asset_text("scatter.css"),
    isolate_styles=False,
)


# --------------------------------------------------------------------------- payloads
@dataclass(frozen=True)
class Payload:
    """Binary data the browser keeps by ``key`` (a content hash)."""

    key: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Colours:
    """One colouring of N points: uint8 codes into ``palette`` (256 colours), and its legend."""

    codes: Payload
    palette: tuple[str, ...]
    title: str = ""
    legend: tuple[dict[str, Any], ...] | None = None  # categorical: code, label, colour, count
    scale: dict[str, Any] | None = None  # numeric: min, max, stops


def source_hash(frontend: Path = FRONTEND) -> str:
    """The hash ``frontend/build.mjs`` records of the sources (same recipe, no node needed)."""
    paths = [p for p in (frontend / "src").rglob("*") if p.is_file()]
    paths += [frontend / f for f in SOURCE_FILES]
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(frontend).as_posix() for p in paths):
        h.update(rel.encode())
        h.update(b"\0")
        h.update((frontend / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def build_info() -> dict[str, Any]:
    return json.loads(BUILD_INFO.read_text())


@st.cache_resource(show_spinner=False)
def _bundle_bytes() -> bytes:
    return BUNDLE.read_bytes()


def _media_url(data: bytes, mimetype: str, where: str) -> str:
    """Register ``data`` with Streamlit's media storage for this run; its URL."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():  # bare mode (no server): nothing will fetch it
        return ""
    return Runtime.instance().media_file_mgr.add(data, mimetype, f"parallax_scatter.{where}")


def bundle_url() -> str:
    """The bundle's media URL for this run (empty in bare mode, where nothing is served)."""
    return _media_url(_bundle_bytes(), "text/javascript", "bundle")


@st.cache_resource(show_spinner=False, max_entries=8)
def _split(key: str, parts: int, width: int, _data: bytes) -> tuple[bytes, ...]:
    """The interleaved parts of a payload, built once per content key (not on every rerun)."""
    dtype = "<f4" if width == 2 else np.uint8
    values = np.frombuffer(_data, dtype=dtype).reshape(-1, width)
    return tuple(mapdata.split_parts(values, parts))


def payload_spec(
    payload: Payload, n: int, width: int, where: str, part_points: int
) -> dict[str, Any]:
    """How one per-point payload (``width`` values a point: 2 for x,y, 1 for a colour code) is
    announced to the browser: ``{key, url}``, or above ``part_points`` points ``{key, parts}``
    with ``parts`` = ``[{key, url, index}, ...]`` in part order (``index`` = j of P: rows
    ``j, j+P, ...``). A part's key is the payload's key and its place, so it names its content."""
    count = mapdata.part_count(n, part_points)
    mime = "application/octet-stream"
    if count <= 1:
        return {"key": payload.key, "url": _media_url(payload.data, mime, where)}
    blobs = _split(payload.key, count, width, payload.data)
    return {
        "key": payload.key,
        "parts": [
            {
                "key": mapdata.content_key(payload.key, f"part {j} of {count}"),
                "url": _media_url(blob, mime, f"{where}.part{j}"),
                "index": j,
            }
            for j, blob in enumerate(blobs)
        ],
    }


def _base_path() -> str:
    from streamlit import config

    base = str(config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""


def selection_payload(rows: np.ndarray, nonce: str | None, where: str) -> dict[str, Any] | None:
    """How a selection goes to the browser: inline rows, or a uint32 payload for large ones."""
    if nonce is None:
        return None
    r = np.asarray(rows, dtype=np.int64)
    if len(r) <= INLINE_SELECTION:
        return {"nonce": nonce, "rows": [int(x) for x in r]}
    data = mapdata.encode_rows(r)
    return {
        "nonce": nonce,
        "key": mapdata.content_key(data),
        "url": _media_url(data, "application/octet-stream", f"{where}.selection"),
    }


# --------------------------------------------------------------------------- the element
def scatter_map(
    map_id: str,
    *,
    n: int,
    positions: Payload,
    colours: Colours,
    title: str = "",
    selection: tuple[np.ndarray, str | None] | None = None,
    group: str = "map",
    height: int = 520,
    point_size: float = 3.0,
    link_zoom: bool | None = None,
    note: str = "",
    on_select: Callable[[np.ndarray, str], None] | None = None,
    extent: Sequence[float] | None = None,
    part_points: int = mapdata.PART_POINTS,
    density_above: int = DENSITY_ABOVE,
    detail_limit: int = DETAIL_LIMIT,
) -> None:
    """Draw one map. ``selection`` = (rows, nonce): the browser reapplies it only when the nonce
    changes (None: the page does not manage the selection, the browser keeps its own).
    ``extent`` = (x0, y0, x1, y1) in the positions' frame: what the view frames, with a margin
    (maps side by side pass their joint extent, so they share one scale); None: the points' own.
    ``on_select(rows, nonce)`` runs when a person selects in this map (click, lasso or box);
    every map of the same ``group`` highlights the same rows at once, in the browser.
    ``part_points``: above this many points the payloads go in parts of about this many;
    ``density_above``: above this many points the browser's big-map renderer draws the map, as
    a density image while more than ``detail_limit`` points are in view (tests lower all three
    to try them on small maps)."""
    rows, nonce = selection if selection is not None else (np.zeros(0, np.int64), None)

    def _changed() -> None:
        value = st.session_state.get(map_id)
        state = value.get("selection") if hasattr(value, "get") else None
        if on_select is not None and isinstance(state, dict):
            on_select(mapdata.decode_rows(state, n), str(state.get("nonce") or ""))

    data = {
        "id": map_id,
        "group": group,
        "title": title,
        "n": int(n),
        "height": int(height),
        "point_size": float(point_size),
        "link_zoom": link_zoom,
        "note": note,
        "extent": None if extent is None else [float(v) for v in extent],
        "bundle": bundle_url(),
        "base_path": _base_path(),
        "density_above": int(density_above),
        "detail_limit": int(detail_limit),
        "points": payload_spec(positions, n, 2, f"{map_id}.points", part_points),
        "colours": {
            **payload_spec(colours.codes, n, 1, f"{map_id}.colours", part_points),
            "palette": list(colours.palette),
            "title": colours.title,
            "legend": None if colours.legend is None else list(colours.legend),
            "scale": colours.scale,
        },
        "selection": selection_payload(rows, nonce, map_id),
        "report_selection": on_select is not None,
    }
    _component(key=map_id, data=data, height="content", on_selection_change=_changed)


def positions_payload(coords: np.ndarray, frame: mapdata.Frame, projection_key: str) -> Payload:
    """The positions of one map in a shared frame, keyed by projection and frame."""
    return Payload(
        mapdata.content_key("xy", projection_key, frame.token()),
        mapdata.position_bytes(coords, frame),
    )


def palette_with_missing(colours: Sequence[str], missing: str) -> tuple[str, ...]:
    """256 colours: ``colours`` first, ``missing`` for every other code (255 = missing)."""
    out = list(colours)[: mapdata.MAX_PALETTE]
    return tuple(out + [missing] * (256 - len(out)))
