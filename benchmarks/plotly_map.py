"""The plotly map the Map page drew before the WebGL map: kept as the baseline of
``benchmarks/bench_map_browser.py`` (and its tests), used by no page.

Figures are plotly ``Scattergl`` traces whose numeric arrays are NumPy float32/int32, which
plotly serialises as base64 typed arrays (about 16 bytes a point for x, y and the row index).
Every scatter trace carries ``customdata`` = the dataset row of each point; ``layout.meta`` marks
the figure as a Parallax map for the hover preview. Above ``AGGREGATE_ABOVE`` points a map draws
a seeded sample of ``SAMPLE_POINTS`` over a density heatmap of all points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dashboard.maps import MISSING, OTHER, OTHER_COLOUR, PALETTE, Colouring

AGGREGATE_ABOVE = 200_000
SAMPLE_POINTS = 100_000
DENSITY_BINS = 160
FADED_OPACITY = 0.12
HIGHLIGHT_COLOUR = "#111111"
SELECTED_PREFIX = "selected ("


# --------------------------------------------------------------------------- display plan
@dataclass(frozen=True)
class DisplayPlan:
    """Which rows a map draws as points, and whether a density layer stands in for the rest."""

    n: int
    rows: np.ndarray  # int32, sorted: the rows drawn as points
    aggregated: bool

    @property
    def drawn(self) -> int:
        return len(self.rows)

    def note(self) -> str:
        if not self.aggregated:
            return ""
        return (
            f"{self.n:,} points are too many to draw one by one: showing a seeded sample of "
            f"{self.drawn:,} over a density map of all of them. Box and lasso selections still "
            "take every point inside the shape."
        )


def display_plan(
    n: int, threshold: int = AGGREGATE_ABOVE, sample: int = SAMPLE_POINTS, seed: int = 0
) -> DisplayPlan:
    if n <= threshold:
        return DisplayPlan(n, np.arange(n, dtype=np.int32), False)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False)).astype(np.int32)
    return DisplayPlan(n, rows, True)


def density_trace(coords: np.ndarray, bins: int = DENSITY_BINS) -> go.Heatmap:
    """A log-scaled 2-D histogram of every point, binned server-side."""
    xy = np.asarray(coords, dtype=np.float32)
    h, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    z = np.log1p(h.T).astype(np.float32)
    z[z == 0] = np.nan  # empty bins stay transparent
    return go.Heatmap(
        x=((xe[:-1] + xe[1:]) / 2).astype(np.float32),
        y=((ye[:-1] + ye[1:]) / 2).astype(np.float32),
        z=z,
        colorscale="Greys",
        showscale=False,
        hoverinfo="skip",
        opacity=0.55,
        name="density",
    )


# --------------------------------------------------------------------------- figures
def _scatter(
    coords: np.ndarray,
    rows: np.ndarray,
    *,
    name: str,
    colour: Any,
    size: float,
    opacity: float,
    showlegend: bool,
    hovertemplate: str,
    marker_extra: dict[str, Any] | None = None,
) -> go.Scattergl:
    marker: dict[str, Any] = {"color": colour, "size": size, "opacity": opacity}
    marker |= marker_extra or {}
    return go.Scattergl(
        x=coords[rows, 0].astype(np.float32),
        y=coords[rows, 1].astype(np.float32),
        customdata=rows.astype(np.int32),
        mode="markers",
        name=name,
        marker=marker,
        showlegend=showlegend,
        hovertemplate=hovertemplate,
    )


def build_map_figure(
    coords: np.ndarray,
    colouring: Colouring | None = None,
    *,
    title: str = "",
    highlight: np.ndarray | Sequence[int] | None = None,
    plan: DisplayPlan | None = None,
    point_size: float = 5.0,
    height: int = 520,
    dataset_key: str = "",
) -> go.Figure:
    """The figure of one map.

    ``highlight``: rows to emphasise (drawn on top, larger and opaque) while every other point is
    faded; an empty array fades everything. ``None`` means no highlighting.
    """
    xy = np.asarray(coords, dtype=np.float32)
    n = len(xy)
    colouring = colouring or Colouring.none()
    plan = plan or display_plan(n)
    rows = plan.rows
    hl = None if highlight is None else np.unique(np.asarray(highlight, dtype=np.int64))
    if hl is not None:
        hl = hl[(hl >= 0) & (hl < n)].astype(np.int32)
    base_opacity = FADED_OPACITY if hl is not None else (0.55 if plan.aggregated else 0.8)
    # Every trace of the map shares its points, size and opacity.
    trace = partial(_scatter, xy, size=point_size, opacity=base_opacity)
    traces: list[Any] = []
    if plan.aggregated:
        traces.append(density_trace(xy))

    if colouring.kind == "categorical" and colouring.codes is not None:
        codes = colouring.codes[rows]
        for ci, cat in enumerate(colouring.categories):
            sub = rows[codes == ci]
            if len(sub) == 0:
                continue
            colour = OTHER_COLOUR if cat in (OTHER, MISSING) else PALETTE[ci % len(PALETTE)]
            traces.append(
                trace(
                    sub,
                    name=cat,
                    colour=colour,
                    showlegend=True,
                    hovertemplate=f"{colouring.title}: %{{fullData.name}}<extra></extra>",
                )
            )
    elif colouring.kind == "numeric" and colouring.values is not None:
        vals = colouring.values[rows]
        ok = np.isfinite(vals)
        if (~ok).any():
            traces.append(
                trace(
                    rows[~ok],
                    name=MISSING,
                    colour=OTHER_COLOUR,
                    showlegend=True,
                    hovertemplate=f"{colouring.title}: n/a<extra></extra>",
                )
            )
        finite = colouring.values[np.isfinite(colouring.values)]
        cmin = float(finite.min()) if len(finite) else 0.0
        cmax = float(finite.max()) if len(finite) else 1.0
        traces.append(
            trace(
                rows[ok],
                name=colouring.title or "value",
                colour=vals[ok].astype(np.float32),
                showlegend=False,
                hovertemplate=f"{colouring.title}: %{{marker.color:.3f}}<extra></extra>",
                marker_extra={
                    "colorscale": colouring.colorscale,
                    "reversescale": colouring.reverse,
                    "cmin": cmin,
                    "cmax": cmax if cmax > cmin else cmin + 1e-6,
                    "colorbar": {"title": {"text": colouring.title}, "thickness": 12},
                },
            )
        )
    else:
        traces.append(
            trace(
                rows,
                name="items",
                colour=PALETTE[0],
                showlegend=False,
                hovertemplate="<extra></extra>",
            )
        )

    if hl is not None and len(hl):
        traces.extend(_highlight_traces(xy, hl, colouring, point_size))

    fig = go.Figure(traces)
    fig.update_layout(
        title={"text": title, "font": {"size": 14}} if title else None,
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        dragmode="lasso",
        hovermode="closest",
        legend={"itemsizing": "constant", "font": {"size": 11}},
        xaxis={"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": ""},
        yaxis={"showticklabels": False, "showgrid": False, "zeroline": False, "ticks": ""},
        template=go.layout.Template(),  # the default template is most of a small figure's bytes
        meta={
            "parallax_map": True,
            "n": int(n),
            "drawn": int(plan.drawn),
            "aggregated": bool(plan.aggregated),
            "dataset": dataset_key,
        },
        uirevision=dataset_key or "map",
    )
    return fig


def _highlight_traces(
    xy: np.ndarray, hl: np.ndarray, colouring: Colouring, point_size: float
) -> list[go.Scattergl]:
    """The highlighted rows on top: larger, opaque, outlined, in their own colours."""
    groups: list[tuple[np.ndarray, Any, dict[str, Any]]] = []
    if colouring.kind == "categorical" and colouring.codes is not None:
        codes = colouring.codes[hl]
        for ci, cat in enumerate(colouring.categories):
            sub = hl[codes == ci]
            if len(sub):
                colour = OTHER_COLOUR if cat in (OTHER, MISSING) else PALETTE[ci % len(PALETTE)]
                groups.append((sub, colour, {}))
    elif colouring.kind == "numeric" and colouring.values is not None:
        finite = colouring.values[np.isfinite(colouring.values)]
        groups.append(
            (
                hl,
                np.nan_to_num(colouring.values[hl]).astype(np.float32),
                {
                    "colorscale": colouring.colorscale,
                    "reversescale": colouring.reverse,
                    "cmin": float(finite.min()) if len(finite) else 0.0,
                    "cmax": float(finite.max()) if len(finite) else 1.0,
                },
            )
        )
    else:
        groups.append((hl, PALETTE[0], {}))
    out = []
    for i, (rows, colour, extra) in enumerate(groups):
        trace = _scatter(
            xy,
            rows,
            name=f"{SELECTED_PREFIX}{len(hl):,})",
            colour=colour,
            size=point_size * 1.9,
            opacity=1.0,
            showlegend=i == 0,
            hovertemplate="selected<extra></extra>",
            marker_extra=extra | {"line": {"color": HIGHLIGHT_COLOUR, "width": 1}},
        )
        trace.legendgroup = "selected"
        out.append(trace)
    return out


def scatter_point_count(fig: go.Figure) -> int:
    """Points drawn as markers (what the browser has to render), highlight overlay excluded."""
    return sum(
        len(t.customdata)
        for t in fig.data
        if isinstance(t, go.Scattergl) and t.customdata is not None and t.hovertemplate
        if not str(t.name).startswith(SELECTED_PREFIX)
    )


def figure_payload_bytes(fig: go.Figure) -> int:
    """Bytes of the JSON that Streamlit sends for this figure."""
    import plotly.io

    return len(plotly.io.to_json(fig, validate=False).encode())


# --------------------------------------------------------------------------- selection
def _point_row(point: Mapping[str, Any], trace_rows: Sequence[np.ndarray] | None) -> int | None:
    cd = point.get("customdata")
    if isinstance(cd, (list, tuple)):
        cd = cd[0] if cd else None
    if cd is not None:
        try:
            return int(cd)
        except (TypeError, ValueError):
            pass
    if trace_rows is not None:
        curve = point.get("curve_number")
        idx = point.get("point_index", point.get("point_number"))
        if curve is not None and idx is not None and 0 <= int(curve) < len(trace_rows):
            rows = trace_rows[int(curve)]
            if rows is not None and 0 <= int(idx) < len(rows):
                return int(rows[int(idx)])
    return None


def points_in_polygon(xy: np.ndarray, px: Sequence[float], py: Sequence[float]) -> np.ndarray:
    """Boolean mask of points inside the polygon (even-odd rule, vectorised ray casting)."""
    xy = np.asarray(xy, dtype=np.float64)
    vx = np.asarray(px, dtype=np.float64)
    vy = np.asarray(py, dtype=np.float64)
    inside = np.zeros(len(xy), dtype=bool)
    if len(vx) < 3:
        return inside
    x, y = xy[:, 0], xy[:, 1]
    j = len(vx) - 1
    for i in range(len(vx)):
        xi, yi, xj, yj = vx[i], vy[i], vx[j], vy[j]
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < x_at)
        j = i
    return inside


def rows_in_shapes(coords: np.ndarray, selection: Mapping[str, Any]) -> np.ndarray:
    """Every row whose map position falls inside the selection's boxes or lassos."""
    xy = np.asarray(coords, dtype=np.float32)
    mask = np.zeros(len(xy), dtype=bool)
    for box in selection.get("box") or []:
        bx, by = box.get("x") or [], box.get("y") or []
        if len(bx) >= 2 and len(by) >= 2:
            x0, x1 = sorted((float(bx[0]), float(bx[1])))
            y0, y1 = sorted((float(by[0]), float(by[1])))
            mask |= (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)
    for lasso in selection.get("lasso") or []:
        mask |= points_in_polygon(xy, lasso.get("x") or [], lasso.get("y") or [])
    return np.flatnonzero(mask).astype(np.int64)


def selection_rows(
    selection: Mapping[str, Any] | None,
    n: int,
    *,
    trace_rows: Sequence[np.ndarray] | None = None,
    coords: np.ndarray | None = None,
) -> np.ndarray:
    """Dataset rows picked by a ``st.plotly_chart`` selection (sorted, unique, int64).

    Points map back through their ``customdata`` (the row index), else through ``trace_rows``
    (the rows of each trace, by curve number). With ``coords`` given, every point inside a box or
    lasso shape counts too, including points a sampled map did not draw.
    """
    if not selection:
        return np.zeros(0, dtype=np.int64)
    found: list[int] = []
    for point in selection.get("points") or []:
        row = _point_row(point, trace_rows)
        if row is not None and 0 <= row < n:
            found.append(row)
    rows = np.asarray(found, dtype=np.int64)
    if coords is not None:
        rows = np.concatenate([rows, rows_in_shapes(coords, selection)])
    return np.unique(rows)


def trace_rows_of(fig: go.Figure) -> list[np.ndarray]:
    """The dataset rows of every trace, by curve number (empty for non-scatter traces)."""
    out: list[np.ndarray] = []
    for t in fig.data:
        cd = getattr(t, "customdata", None)
        out.append(np.asarray(cd, dtype=np.int64) if cd is not None else np.zeros(0, np.int64))
    return out
