"""Colourings, selection tables and exports of the Map page (pure functions, no Streamlit)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from dashboard import maps


def _coords(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


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
    assert len(c.codes) == 2000 and int(c.codes.max()) == maps.MAX_CATEGORIES - 1


def test_missing_labels_become_none_category() -> None:
    c = maps.categorical(["a", None, "b", None], "label")
    assert maps.MISSING in c.categories
    assert [c.categories[i] for i in c.codes] == ["a", maps.MISSING, "b", maps.MISSING]


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
    assert df["m1_x"].iloc[0] == pytest.approx(_coords(20, 1)[3, 0])
    assert {"m2_y", "text", "kind"} <= set(df.columns)


def test_export_round_trips_through_csv_and_parquet() -> None:
    df = _frame()
    back_csv = pd.read_csv(io.BytesIO(maps.to_csv_bytes(df)))
    assert back_csv["id"].tolist() == df["id"].tolist()
    assert np.allclose(back_csv["m2_x"], df["m2_x"], atol=1e-6)
    back_pq = pd.read_parquet(io.BytesIO(maps.to_parquet_bytes(df)))
    assert back_pq.columns.tolist() == df.columns.tolist()
    assert back_pq["id"].tolist() == df["id"].tolist()
    assert np.array_equal(back_pq["m1_x"].to_numpy(), df["m1_x"].to_numpy())
    assert back_pq["kind"].tolist() == ["b", "b", "b"]


def test_agreement_frame_sorts_least_agreement_first() -> None:
    df = maps.agreement_frame(np.array([0.5, 0.1, 0.9]), ["a", "b", "c"], ["x", None, "z"])
    assert df["id"].tolist() == ["b", "a", "c"]
    assert df.columns.tolist() == ["row", "id", "label", "overlap"]


def test_knn_overlap_is_one_for_the_same_space_and_lower_for_noise() -> None:
    """The engine's overlap, as the Map page's agreement colouring uses it."""
    from engine.analysis.metrics import knn_overlap

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    assert np.allclose(knn_overlap(x, x * 3.0, 10), 1.0)
    y = rng.normal(size=(300, 16)).astype(np.float32)
    ov = knn_overlap(x, y, 10)
    assert ov.shape == (300,) and ov.mean() < 0.3
    assert ((ov >= 0) & (ov <= 1)).all()


def test_map_search_scores_every_row_and_ranks_like_them(tmp_path) -> None:
    """The Map page's text search is ``Workspace.search(all_scores=True)``: one search (the
    same k as every door), every row's cosine for the colouring, hits in score order."""
    from engine.params import SEARCH
    from engine.workspace import Workspace

    ws = Workspace(tmp_path)
    ds = ws.open("demo:digits")
    ws.embed(ds, "baseline:pixels")
    vectors = np.asarray(ws.vectors(ds, "baseline:pixels").load(), dtype=np.float32)
    found = ws.search(ds, "baseline:pixels", vectors[5], all_scores=True)
    assert found.scores is not None and found.scores.shape == (len(ds),)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert np.allclose(found.scores, unit @ unit[5], atol=1e-5)
    assert len(found.hits) == SEARCH.k and found.hits[0].row == 5
    ranked = [h.score for h in found.hits]
    assert ranked == sorted(ranked, reverse=True)
    assert np.isclose(ranked[-1], np.sort(found.scores)[-SEARCH.k], atol=1e-5)


def test_hover_component_state_is_parsed_defensively() -> None:
    from dashboard.hover import MAX_WANTED, wanted_chunks

    state = {"want": {"chunks": [5, 2, "x", -1, True, 9, 1, 0], "dataset": "fp", "nonce": 1}}
    assert wanted_chunks(state) == ("fp", [5, 2, 9, 1][:MAX_WANTED])
    assert wanted_chunks(None) == (None, [])
    assert wanted_chunks({"want": "garbage"}) == (None, [])
    assert wanted_chunks({"want": {"chunks": 3}}) == (None, [])


def _categorical_row_by_row(values, title):
    """The former implementation, one row at a time; its ties at the 20-category cut (left to
    the hash table's order) now go to the value seen first."""
    s = pd.Series(list(values) if not isinstance(values, pd.Series) else values.to_numpy())
    missing = s.isna().to_numpy()
    as_str = s.astype("string").fillna(maps.MISSING).to_numpy(dtype=object)
    as_str[missing] = maps.MISSING
    counts = pd.Series(as_str).value_counts(sort=True)
    first = {v: i for i, v in reversed(list(enumerate(as_str)))}  # a tie goes to the first seen
    counts = counts.iloc[
        sorted(range(len(counts)), key=lambda i: (-counts.iloc[i], first[counts.index[i]]))
    ]
    if len(counts) > maps.MAX_CATEGORIES:
        keep = list(counts.index[: maps.MAX_CATEGORIES - 1])
        keep_set = set(keep)
        as_str = np.array([v if v in keep_set else maps.OTHER for v in as_str], dtype=object)
        cats = [*sorted(keep, key=maps._natural_key), maps.OTHER]
    else:
        cats = sorted(counts.index, key=maps._natural_key)
    lookup = {c: i for i, c in enumerate(cats)}
    return np.array([lookup[v] for v in as_str], dtype=np.int32), tuple(cats)


@pytest.mark.parametrize("seed", range(12))
def test_categorical_equals_the_row_by_row_rules(seed: int) -> None:
    """Mixed types (1 and "1" share a text), None / NaN / "(none)", ties at the 20-category cut,
    a Series or a list: the same codes and categories as the former per-row code."""
    rng = np.random.default_rng(seed)
    pool = [*(f"c{i}" for i in range(30)), 1, "1", 2.0, "2.0", None, np.nan, maps.MISSING, True]
    n = int(rng.integers(1, 400))
    values = [pool[i] for i in rng.integers(0, len(pool) - (seed % 2) * 25, n)]
    _assert_as_row_by_row(pd.Series(values, dtype=object) if seed % 3 == 0 else values)


def _assert_as_row_by_row(values) -> None:
    got = maps.categorical(values, "t")
    want_codes, want_cats = _categorical_row_by_row(values, "t")
    assert got.categories == want_cats
    np.testing.assert_array_equal(got.codes, want_codes)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series([0.1, 0.2 + 0.1, 2.0, np.nan, 1e20, -0.0, 0.0] * 5),
        pd.Series(np.arange(60) % 7, dtype=np.int64),
        pd.Series([True, False, True]),
        pd.Series(["b", "a", None, "b"], dtype="string"),
        pd.Series(pd.to_datetime(["2020-01-01", "2021-06-01", None] * 3)),
        pd.Series(pd.Categorical(["x", "y", "x", None])),
    ],
    ids=["float", "int", "bool", "string", "datetime", "category"],
)
def test_categorical_of_typed_columns_equals_the_row_by_row_rules(column: pd.Series) -> None:
    _assert_as_row_by_row(column)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["b", "a", None, "b", "c"] * 40, dtype=object),
        pd.Series([1, "1", True, 2.0, 2, None, "x"] * 3, dtype=object),
        pd.Series(np.arange(150) % 13, dtype=np.int64),
        pd.Series([0.5, -0.0, 0.0, np.nan] * 4),
        pd.Series(pd.to_datetime(["2020-01-01", "2021-06-01", None] * 3)),
        pd.Series(pd.Categorical(["x", "y", None, "x"], categories=["x", "y", "unused"])),
        pd.Series(pd.Categorical([3, 1, 3])),
        pd.Series(pd.Categorical(pd.to_datetime(["2020-01-01", None, "2020-01-01"]))),
    ],
    ids=["text", "mixed", "int", "float", "datetime", "category", "int-category", "date-category"],
)
def test_filter_values_are_the_columns_texts(column: pd.Series) -> None:
    """The value filter's options: each distinct text once, as the column's rows read."""
    from dashboard.filter_panel import _values

    assert _values(column) == sorted(set(column.dropna().astype(str)))
