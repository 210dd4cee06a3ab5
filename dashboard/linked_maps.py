"""Side-by-side WebGL maps of one dataset, for the Map and Home pages.

Turns a page's maps (coordinates + projection keys), its colouring and its selection into
``dashboard.components.scatter`` elements: the maps are aligned onto the first
(``Workspace.align_maps``), share one [-1, 1] frame and one framed extent (so linked zoom shows the
same region of each; unaligned maps are framed each on its own), are coloured from one palette,
and are linked: hovering or selecting in one highlights the same items in all of them, in the
browser.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from dashboard import maps, projections, resources
from dashboard.components.scatter import (
    Colours,
    Payload,
    palette_with_missing,
    positions_payload,
    scatter_map,
)
from engine.maps import payload as mapdata

SCALE_STOPS = 7


@dataclass(frozen=True)
class MapSpec:
    """One map to draw: its stable element id, title, coordinates and projection cache key."""

    map_id: str
    title: str
    coords: np.ndarray
    projection_key: str


def new_nonce() -> str:
    """A fresh selection revision for a selection made on the server (link, Clear button)."""
    return f"py-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- colours
def _hex(colour: str) -> str:
    if colour.startswith("#"):
        return colour
    parts = [
        int(float(x)) for x in colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3]
    ]
    return "#{:02x}{:02x}{:02x}".format(*parts)


def _scale_colours(colorscale: str, reverse: bool, count: int) -> list[str]:
    from plotly.colors import get_colorscale, sample_colorscale

    scale = get_colorscale(colorscale)
    if reverse:
        scale = [[1 - p, c] for p, c in reversed(scale)]
    return [_hex(c) for c in sample_colorscale(scale, [i / (count - 1) for i in range(count)])]


def colours_from(colouring: maps.Colouring, n: int) -> Colours:
    """A page colouring (``dashboard.maps.Colouring``) as uint8 codes, palette and legend."""
    missing = maps.OTHER_COLOUR
    if colouring.kind == "categorical" and colouring.codes is not None:
        data = mapdata.category_codes(colouring.codes)
        palette = [
            missing if c in (maps.OTHER, maps.MISSING) else maps.PALETTE[i % len(maps.PALETTE)]
            for i, c in enumerate(colouring.categories)
        ]
        counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
        legend = tuple(
            {"code": i, "label": c, "colour": palette[i], "count": int(counts[i])}
            for i, c in enumerate(colouring.categories)
            if counts[i]
        )
        return Colours(
            Payload(mapdata.content_key("cat", data), data),
            palette_with_missing(palette, missing),
            colouring.title,
            legend=legend,
        )
    if colouring.kind == "numeric" and colouring.values is not None:
        values = colouring.values
        finite = values[np.isfinite(values)]
        lo = float(finite.min()) if len(finite) else 0.0
        hi = float(finite.max()) if len(finite) else 1.0
        data = mapdata.quantise(values, lo, hi)
        palette = _scale_colours(colouring.colorscale, colouring.reverse, mapdata.LEVELS)
        stops = _scale_colours(colouring.colorscale, colouring.reverse, SCALE_STOPS)
        return Colours(
            Payload(mapdata.content_key("num", data, ",".join(palette)), data),
            palette_with_missing(palette, missing),
            colouring.title,
            scale={"min": f"{lo:.3g}", "max": f"{hi:.3g}", "stops": stops},
        )
    data = bytes(n)
    return Colours(Payload(mapdata.content_key("none", str(n)), data), (maps.PALETTE[0],) * 256)


# --------------------------------------------------------------------------- positions
@st.cache_resource(show_spinner=False, max_entries=8)
def _aligned_payloads(
    keys: tuple[str, ...], aligned: bool, _coords: tuple[np.ndarray, ...]
) -> tuple[tuple[Payload, ...], tuple[np.ndarray, ...], tuple[tuple[float, ...], ...]]:
    """Positions of the maps ``keys`` (their projection keys), the coordinates drawn, and the
    extent each view frames. Aligned maps share one frame and one extent (the same scale side by
    side, so linked zoom shows the same region); unaligned maps each get their own, so none is
    crammed into a corner of another's. Cached per set of maps: the bytes are built once, not
    per rerun."""
    ws = resources.workspace()
    layouts = ws.align_maps(list(_coords)) if aligned else [np.asarray(c) for c in _coords]
    groups = [list(range(len(layouts)))] if aligned else [[i] for i in range(len(layouts))]
    payloads: list[Payload] = [Payload("", b"")] * len(layouts)
    extents: list[tuple[float, ...]] = [()] * len(layouts)
    for members in groups:
        frame = mapdata.shared_frame([layouts[i] for i in members])
        extent = _extent([frame.apply(layouts[i]) for i in members])
        for i in members:
            mode = "aligned" if aligned else "raw"
            payloads[i] = positions_payload(layouts[i], frame, f"{keys[i]}|{mode}|{keys[0]}")
            extents[i] = extent
    return tuple(payloads), tuple(layouts), tuple(extents)


def _extent(framed: Sequence[np.ndarray]) -> tuple[float, ...]:
    """(x0, y0, x1, y1) of the finite points of ``framed`` together; the whole frame if none."""
    finite = [a[np.isfinite(a).all(axis=1)] for a in framed]
    finite = [a for a in finite if len(a)]
    if not finite:
        return (-1.0, -1.0, 1.0, 1.0)
    both = np.concatenate(finite)
    lo, hi = both.min(axis=0), both.max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def layouts(
    specs: Sequence[MapSpec], aligned: bool
) -> tuple[tuple[Payload, ...], list[np.ndarray]]:
    """(positions payload, drawn coordinates) of each map, aligned onto the first if asked."""
    payloads, coords, _ = _layouts(specs, aligned)
    return payloads, coords


def _layouts(
    specs: Sequence[MapSpec], aligned: bool
) -> tuple[tuple[Payload, ...], list[np.ndarray], tuple[tuple[float, ...], ...]]:
    keys = tuple(s.projection_key for s in specs)
    payloads, coords, extents = _aligned_payloads(
        keys, aligned and len(specs) > 1, tuple(s.coords for s in specs)
    )
    return payloads, list(coords), extents


def displacement_colouring(reference: np.ndarray, other: np.ndarray, names: str) -> maps.Colouring:
    """Each item's distance between two aligned maps (in RMS radii of the first), as a
    colouring: bright = the two models put this item in different places."""
    return maps.numeric(
        resources.workspace().displacement(reference, other),
        f"displacement {names}",
        colorscale="Inferno",
    )


# --------------------------------------------------------------------------- drawing
def point_size(n: int) -> float:
    return 5.0 if n < 20_000 else 3.0 if n < 300_000 else 2.0


def draw_maps(
    specs: Sequence[MapSpec],
    colouring: maps.Colouring,
    *,
    n: int,
    selection: tuple[np.ndarray, str | None] | None,
    on_select: Callable[[np.ndarray, str], None] | None,
    aligned: bool = True,
    displacement: bool = False,
    height: int = 520,
    link_zoom: bool | None = None,
    group: str = "map",
    under_each: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """The maps side by side, one column each, linked through ``group``; returns the
    coordinates as drawn (aligned onto the first map when ``aligned``).

    ``displacement`` colours every map by how far each item moves between the first two maps
    (aligned), instead of ``colouring``. ``under_each(i)`` draws extra lines under map ``i``.
    """
    payloads, drawn, extents = _layouts(specs, aligned)
    if displacement and len(drawn) >= 2:
        colouring = displacement_colouring(
            drawn[0], drawn[1], f"{specs[0].title} → {specs[1].title}"
        )
    colours = colours_from(colouring, n)
    columns = st.columns(len(specs)) if len(specs) > 1 else [st.container()]
    for i, (col, spec, payload, extent) in enumerate(
        zip(columns, specs, payloads, extents, strict=True)
    ):
        with col:
            scatter_map(
                spec.map_id,
                n=n,
                positions=payload,
                colours=colours,
                title=spec.title,
                selection=selection,
                group=group,
                height=height,
                point_size=point_size(n),
                link_zoom=link_zoom,
                on_select=on_select,
                extent=extent,
            )
            if under_each is not None:
                under_each(i)
    return drawn


def draw_cached_maps(ds: Any, spec: str, models: list[str], method: str, group: str) -> None:
    """``models``' cached maps of ``ds`` side by side, aligned and linked, with hover previews
    (Home: nothing to select, no model loaded; UMAP only when it is in the cache)."""
    from dashboard import hover

    specs = []
    for i, model in enumerate(models):
        entry = projections.cached_vectors(ds, model)
        coords, key = projections.map_coords(entry, method.lower())
        specs.append(MapSpec(f"{group}_{i}", f"{model} · {method}", coords, key))
    draw_maps(
        specs,
        maps.categorical(ds.labels, "label"),
        n=len(ds),
        selection=None,
        on_select=None,
        height=520 if len(specs) > 1 else 560,
        group=group,
    )
    hover.hover_preview(spec)
