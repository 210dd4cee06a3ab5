"""The plotly map kept as the map benchmark's baseline (benchmarks/plotly_map.py)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from benchmarks import plotly_map
from dashboard import maps


def _coords(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def _scatter_traces(fig: go.Figure) -> list[go.Scattergl]:
    return [t for t in fig.data if isinstance(t, go.Scattergl)]


def test_categorical_figure_has_one_trace_per_label_and_every_point() -> None:
    n = 1000
    labels = [str(i % 7) for i in range(n)]
    fig = plotly_map.build_map_figure(_coords(n), maps.categorical(labels, "label"))
    traces = _scatter_traces(fig)
    assert [t.name for t in traces] == [str(i) for i in range(7)]
    assert plotly_map.scatter_point_count(fig) == n
    rows = np.sort(np.concatenate([np.asarray(t.customdata) for t in traces]))
    assert np.array_equal(rows, np.arange(n))
    # every point of a trace carries that trace's label, and its own coordinates
    xy = _coords(n)
    for t in traces:
        cd = np.asarray(t.customdata)
        assert {labels[i] for i in cd} == {t.name}
        assert np.allclose(np.asarray(t.x), xy[cd, 0])
    assert len({t.marker.color for t in traces}) == 7
    assert fig.layout.meta["parallax_map"] is True
    assert fig.layout.meta["n"] == n


def test_numeric_colouring_uses_a_scale_and_keeps_missing_apart() -> None:
    n = 200
    values = np.linspace(0, 1, n)
    values[:5] = np.nan
    fig = plotly_map.build_map_figure(_coords(n), maps.numeric(values, "score"))
    traces = _scatter_traces(fig)
    missing = [t for t in traces if t.name == maps.MISSING]
    scaled = [t for t in traces if t.name == "score"]
    assert len(missing[0].customdata) == 5
    assert len(scaled[0].customdata) == n - 5
    assert scaled[0].marker.colorscale is not None
    assert scaled[0].marker.cmin == pytest.approx(values[5])
    assert scaled[0].marker.cmax == pytest.approx(1.0)


def test_payload_is_compact_binary() -> None:
    n = 10_000
    fig = plotly_map.build_map_figure(
        _coords(n), maps.categorical([str(i % 10) for i in range(n)], "l")
    )
    payload = plotly_map.figure_payload_bytes(fig)
    # float32 x, y and int32 rows as base64: ~16 bytes a point, no per-point strings
    assert payload < 25 * n
    assert '"bdata"' in fig.to_json()


def test_highlight_draws_selected_rows_on_top_and_fades_the_rest() -> None:
    n = 300
    labels = [str(i % 3) for i in range(n)]
    hl = np.array([5, 6, 7, 299])
    fig = plotly_map.build_map_figure(_coords(n), maps.categorical(labels, "label"), highlight=hl)
    traces = _scatter_traces(fig)
    base = [t for t in traces if not t.name.startswith(plotly_map.SELECTED_PREFIX)]
    top = [t for t in traces if t.name.startswith(plotly_map.SELECTED_PREFIX)]
    assert all(t.marker.opacity == plotly_map.FADED_OPACITY for t in base)
    assert sorted(np.concatenate([np.asarray(t.customdata) for t in top]).tolist()) == hl.tolist()
    assert all(t.marker.opacity == 1.0 and t.marker.size > base[0].marker.size for t in top)
    # selected traces come after the base ones (drawn on top) and keep their label colour
    assert fig.data.index(top[0]) > fig.data.index(base[-1])
    assert plotly_map.scatter_point_count(fig) == n
    # no highlight: nothing faded
    plain = plotly_map.build_map_figure(_coords(n), maps.categorical(labels, "label"))
    assert all(t.marker.opacity > plotly_map.FADED_OPACITY for t in _scatter_traces(plain))


def test_highlight_ignores_out_of_range_rows() -> None:
    fig = plotly_map.build_map_figure(_coords(10), None, highlight=[-1, 3, 99])
    top = [t for t in _scatter_traces(fig) if t.name.startswith(plotly_map.SELECTED_PREFIX)]
    assert np.asarray(top[0].customdata).tolist() == [3]


def test_aggregation_switches_on_above_the_threshold() -> None:
    small = plotly_map.display_plan(1000, threshold=500, sample=300)
    assert small.aggregated and small.drawn == 300
    assert np.array_equal(small.rows, np.sort(small.rows))
    assert plotly_map.display_plan(400, threshold=500).aggregated is False
    # seeded: same sample every time
    again = plotly_map.display_plan(1000, threshold=500, sample=300)
    assert np.array_equal(small.rows, again.rows)

    fig = plotly_map.build_map_figure(_coords(1000), None, plan=small)
    assert isinstance(fig.data[0], go.Heatmap)
    assert plotly_map.scatter_point_count(fig) == 300
    assert fig.layout.meta["aggregated"] is True
    assert "sample" in small.note()


def test_default_plan_aggregates_large_maps() -> None:
    n = plotly_map.AGGREGATE_ABOVE + 1
    plan = plotly_map.display_plan(n)
    assert plan.aggregated and plan.drawn == plotly_map.SAMPLE_POINTS
    fig = plotly_map.build_map_figure(_coords(n), maps.categorical(["x"] * n, "l"), plan=plan)
    assert plotly_map.scatter_point_count(fig) == plotly_map.SAMPLE_POINTS
    assert plotly_map.figure_payload_bytes(fig) < 3_000_000


def test_selection_rows_from_customdata_and_from_trace_rows() -> None:
    n = 50
    fig = plotly_map.build_map_figure(
        _coords(n), maps.categorical([str(i % 2) for i in range(n)], "l")
    )
    trace_rows = plotly_map.trace_rows_of(fig)
    # what st.plotly_chart returns: customdata as a scalar or a list, or only indices
    selection = {
        "points": [
            {"curve_number": 0, "point_index": 1, "customdata": 2},
            {"curve_number": 1, "point_index": 0, "customdata": [1]},
            {"curve_number": 1, "point_index": 3},  # no customdata: via trace rows
            {"curve_number": 0, "point_index": 0, "customdata": 999},  # out of range: dropped
        ],
        "box": [],
        "lasso": [],
    }
    rows = plotly_map.selection_rows(selection, n, trace_rows=trace_rows)
    assert rows.tolist() == sorted({2, 1, int(trace_rows[1][3])})
    assert plotly_map.selection_rows(None, n).tolist() == []
    assert plotly_map.selection_rows({"points": []}, n).tolist() == []


def test_selection_shapes_take_every_point_inside() -> None:
    xy = np.array([[0, 0], [1, 1], [2, 2], [5, 5], [0.5, 0.2]], dtype=np.float32)
    box = {"points": [], "box": [{"x": [1.5, -1], "y": [-1, 1.5]}], "lasso": []}
    assert plotly_map.selection_rows(box, 5, coords=xy).tolist() == [0, 1, 4]
    tri = {"points": [], "box": [], "lasso": [{"x": [-1, 4, -1], "y": [-1, -1, 4]}]}
    assert plotly_map.selection_rows(tri, 5, coords=xy).tolist() == [0, 1, 4]
    square = plotly_map.points_in_polygon(xy, [4, 6, 6, 4], [4, 4, 6, 6])
    assert square.tolist() == [False, False, False, True, False]
