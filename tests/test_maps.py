"""Figure building and selection logic of the Map page (pure functions, no Streamlit)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dashboard import maps


def _coords(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def _scatter_traces(fig: go.Figure) -> list[go.Scattergl]:
    return [t for t in fig.data if isinstance(t, go.Scattergl)]


def test_categorical_figure_has_one_trace_per_label_and_every_point() -> None:
    n = 1000
    labels = [str(i % 7) for i in range(n)]
    fig = maps.build_map_figure(_coords(n), maps.categorical(labels, "label"))
    traces = _scatter_traces(fig)
    assert [t.name for t in traces] == [str(i) for i in range(7)]
    assert maps.scatter_point_count(fig) == n
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
    fig = maps.build_map_figure(_coords(n), maps.numeric(values, "score"))
    traces = _scatter_traces(fig)
    missing = [t for t in traces if t.name == maps.MISSING]
    scaled = [t for t in traces if t.name == "score"]
    assert len(missing[0].customdata) == 5
    assert len(scaled[0].customdata) == n - 5
    assert scaled[0].marker.colorscale is not None
    assert scaled[0].marker.cmin == pytest.approx(values[5])
    assert scaled[0].marker.cmax == pytest.approx(1.0)


def test_column_colouring_picks_categories_or_scale() -> None:
    assert maps.colouring_for_column(pd.Series(["a", "b", "a"])).kind == "categorical"
    assert maps.colouring_for_column(pd.Series([1, 2, 3, 1])).kind == "categorical"
    assert maps.colouring_for_column(pd.Series(np.arange(500))).kind == "numeric"
    assert maps.colouring_for_column(pd.Series([0.5, 1.5])).kind == "numeric"
    assert maps.colouring_for_column(pd.Series([True, False])).kind == "categorical"


def test_many_categories_are_capped_with_other() -> None:
    labels = [f"c{i % 100}" for i in range(2000)]
    c = maps.categorical(labels, "label")
    assert len(c.categories) == maps.MAX_CATEGORIES
    assert c.categories[-1] == maps.OTHER
    fig = maps.build_map_figure(_coords(2000), c)
    assert maps.scatter_point_count(fig) == 2000


def test_missing_labels_become_none_category() -> None:
    c = maps.categorical(["a", None, "b", None], "label")
    assert maps.MISSING in c.categories
    assert [c.categories[i] for i in c.codes] == ["a", maps.MISSING, "b", maps.MISSING]


def test_payload_is_compact_binary() -> None:
    n = 10_000
    fig = maps.build_map_figure(_coords(n), maps.categorical([str(i % 10) for i in range(n)], "l"))
    payload = maps.figure_payload_bytes(fig)
    # float32 x, y and int32 rows as base64: ~16 bytes a point, no per-point strings
    assert payload < 25 * n
    assert '"bdata"' in fig.to_json()


def test_highlight_draws_selected_rows_on_top_and_fades_the_rest() -> None:
    n = 300
    labels = [str(i % 3) for i in range(n)]
    hl = np.array([5, 6, 7, 299])
    fig = maps.build_map_figure(_coords(n), maps.categorical(labels, "label"), highlight=hl)
    traces = _scatter_traces(fig)
    base = [t for t in traces if not t.name.startswith(maps.SELECTED_PREFIX)]
    top = [t for t in traces if t.name.startswith(maps.SELECTED_PREFIX)]
    assert all(t.marker.opacity == maps.FADED_OPACITY for t in base)
    assert sorted(np.concatenate([np.asarray(t.customdata) for t in top]).tolist()) == hl.tolist()
    assert all(t.marker.opacity == 1.0 and t.marker.size > base[0].marker.size for t in top)
    # selected traces come after the base ones (drawn on top) and keep their label colour
    assert fig.data.index(top[0]) > fig.data.index(base[-1])
    assert maps.scatter_point_count(fig) == n
    # no highlight: nothing faded
    plain = maps.build_map_figure(_coords(n), maps.categorical(labels, "label"))
    assert all(t.marker.opacity > maps.FADED_OPACITY for t in _scatter_traces(plain))


def test_highlight_ignores_out_of_range_rows() -> None:
    fig = maps.build_map_figure(_coords(10), None, highlight=[-1, 3, 99])
    top = [t for t in _scatter_traces(fig) if t.name.startswith(maps.SELECTED_PREFIX)]
    assert np.asarray(top[0].customdata).tolist() == [3]


def test_aggregation_switches_on_above_the_threshold() -> None:
    small = maps.display_plan(1000, threshold=500, sample=300)
    assert small.aggregated and small.drawn == 300
    assert np.array_equal(small.rows, np.sort(small.rows))
    assert maps.display_plan(400, threshold=500).aggregated is False
    # seeded: same sample every time
    again = maps.display_plan(1000, threshold=500, sample=300)
    assert np.array_equal(small.rows, again.rows)

    fig = maps.build_map_figure(_coords(1000), None, plan=small)
    assert isinstance(fig.data[0], go.Heatmap)
    assert maps.scatter_point_count(fig) == 300
    assert fig.layout.meta["aggregated"] is True
    assert "sample" in small.note()


def test_default_plan_aggregates_large_maps() -> None:
    n = maps.AGGREGATE_ABOVE + 1
    plan = maps.display_plan(n)
    assert plan.aggregated and plan.drawn == maps.SAMPLE_POINTS
    fig = maps.build_map_figure(_coords(n), maps.categorical(["x"] * n, "l"), plan=plan)
    assert maps.scatter_point_count(fig) == maps.SAMPLE_POINTS
    assert maps.figure_payload_bytes(fig) < 3_000_000


def test_selection_rows_from_customdata_and_from_trace_rows() -> None:
    n = 50
    fig = maps.build_map_figure(_coords(n), maps.categorical([str(i % 2) for i in range(n)], "l"))
    trace_rows = maps.trace_rows_of(fig)
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
    rows = maps.selection_rows(selection, n, trace_rows=trace_rows)
    assert rows.tolist() == sorted({2, 1, int(trace_rows[1][3])})
    assert maps.selection_rows(None, n).tolist() == []
    assert maps.selection_rows({"points": []}, n).tolist() == []


def test_selection_shapes_take_every_point_inside() -> None:
    xy = np.array([[0, 0], [1, 1], [2, 2], [5, 5], [0.5, 0.2]], dtype=np.float32)
    box = {"points": [], "box": [{"x": [1.5, -1], "y": [-1, 1.5]}], "lasso": []}
    assert maps.selection_rows(box, 5, coords=xy).tolist() == [0, 1, 4]
    tri = {"points": [], "box": [], "lasso": [{"x": [-1, 4, -1], "y": [-1, -1, 4]}]}
    assert maps.selection_rows(tri, 5, coords=xy).tolist() == [0, 1, 4]
    square = maps.points_in_polygon(xy, [4, 6, 6, 4], [4, 4, 6, 6])
    assert square.tolist() == [False, False, False, True, False]


def _frame() -> pd.DataFrame:
    n = 20
    meta = pd.DataFrame({"size": np.arange(n) * 1.5, "kind": ["a", "b"] * 10})
    return maps.selection_frame(
        np.array([3, 1, 7]),
        ids=[f"id{i}" for i in range(n)],
        labels=[None if i == 7 else str(i % 4) for i in range(n)],
        metadata=meta,
        coords={"m1": _coords(n, 1), "m2": _coords(n, 2)},
        texts=[f"text {i}" for i in range(n)],
    )


def test_selection_frame_holds_ids_labels_metadata_and_coords() -> None:
    df = _frame()
    assert df["row"].tolist() == [3, 1, 7]
    assert df["id"].tolist() == ["id3", "id1", "id7"]
    assert df["label"].tolist()[:2] == ["3", "1"] and pd.isna(df["label"].iloc[2])
    assert df["size"].tolist() == [4.5, 1.5, 10.5]
    assert df["x[m1]"].iloc[0] == pytest.approx(_coords(20, 1)[3, 0])
    assert {"y[m2]", "text", "kind"} <= set(df.columns)


def test_export_round_trips_through_csv_and_parquet() -> None:
    df = _frame()
    back_csv = pd.read_csv(io.BytesIO(maps.to_csv_bytes(df)))
    assert back_csv["id"].tolist() == df["id"].tolist()
    assert np.allclose(back_csv["x[m2]"], df["x[m2]"], atol=1e-6)
    back_pq = pd.read_parquet(io.BytesIO(maps.to_parquet_bytes(df)))
    assert back_pq.columns.tolist() == df.columns.tolist()
    assert back_pq["id"].tolist() == df["id"].tolist()
    assert np.array_equal(back_pq["x[m1]"].to_numpy(), df["x[m1]"].to_numpy())
    assert back_pq["kind"].tolist() == ["b", "b", "b"]


def test_agreement_frame_sorts_least_agreement_first() -> None:
    df = maps.agreement_frame(np.array([0.5, 0.1, 0.9]), ["a", "b", "c"], ["x", None, "z"])
    assert df["id"].tolist() == ["b", "a", "c"]
    assert df.columns.tolist() == ["row", "id", "label", "overlap"]


def test_knn_overlap_is_one_for_the_same_space_and_lower_for_noise() -> None:
    """The engine's overlap, as the Map page's agreement colouring uses it."""
    from engine.metrics import knn_overlap

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    assert np.allclose(knn_overlap(x, x * 3.0, 10), 1.0)
    y = rng.normal(size=(300, 16)).astype(np.float32)
    ov = knn_overlap(x, y, 10)
    assert ov.shape == (300,) and ov.mean() < 0.3
    assert ((ov >= 0) & (ov <= 1)).all()


def test_cosine_scores_and_top_k() -> None:
    v = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    s = maps.cosine_scores(v, np.array([2.0, 0.0]))
    assert np.allclose(s, [1, 0, np.sqrt(0.5), -1], atol=1e-6)
    assert maps.top_k(s, 2).tolist() == [0, 2]
    assert maps.top_k(s, 2, exclude=[0]).tolist() == [2, 1]
    assert maps.top_k(s, 10).tolist() == [0, 2, 1, 3]


def test_hover_component_state_is_parsed_defensively() -> None:
    from dashboard.hover import MAX_WANTED, wanted_chunks

    state = {"want": {"chunks": [5, 2, "x", -1, True, 9, 1, 0], "dataset": "fp", "nonce": 1}}
    assert wanted_chunks(state) == ("fp", [5, 2, 9, 1][:MAX_WANTED])
    assert wanted_chunks(None) == (None, [])
    assert wanted_chunks({"want": "garbage"}) == (None, [])
    assert wanted_chunks({"want": {"chunks": 3}}) == (None, [])
