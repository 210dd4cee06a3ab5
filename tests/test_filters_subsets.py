"""engine.data.filters (a filter spec -> a row mask) and engine.store.subsets (named subsets in
the cache)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engine.data.filters import column_kinds, filter_json, parse_filter, row_mask
from engine.errors import ParallaxError
from engine.store.cache import Cache
from engine.store.subsets import (
    delete_subset,
    get_subset,
    list_subsets,
    save_subset,
    subset_frame,
)


class Items:
    """Six items with labels, texts and metadata of each kind."""

    def __init__(self, fingerprint: str = "fp-items", ids: list[str] | None = None) -> None:
        self.ids = ids or [f"item-{i}" for i in range(6)]
        self.labels = ["cat", "dog", "cat", None, "bird", "dog"]
        self.texts = ["A red cat", "a dog", "blue CAT", "nothing", "a bird", "RED dog"]
        self._fp = fingerprint
        self._meta = pd.DataFrame(
            {
                "width": [10, 20, 30, 40, np.nan, 60],
                "source": ["web", "web", "scan", "scan", "web", None],
                "note": [f"note {i}" for i in range(6)],
            }
        )

    def __len__(self) -> int:
        return len(self.ids)

    def metadata(self) -> pd.DataFrame:
        return self._meta

    def fingerprint(self) -> str:
        return self._fp


def test_each_op_and_their_conjunction() -> None:
    ds = Items()
    rows = lambda spec: np.flatnonzero(row_mask(ds, spec)).tolist()  # noqa: E731
    assert rows([]) == [0, 1, 2, 3, 4, 5]
    assert rows([{"column": "label", "op": "in", "values": ["cat", "bird"]}]) == [0, 2, 4]
    assert rows([{"column": "width", "op": "range", "min": 15, "max": 40}]) == [1, 2, 3]
    assert rows([{"column": "width", "op": "range", "min": 30}]) == [2, 3, 5]  # NaN never in
    assert rows([{"column": "text", "op": "contains", "text": "red"}]) == [0, 5]
    assert rows([{"column": "source", "op": "in", "values": ["web"]}]) == [0, 1, 4]
    both = [
        {"column": "text", "op": "contains", "text": "cat"},
        {"column": "source", "op": "in", "values": ["scan"]},
    ]
    assert rows(both) == [2]
    assert filter_json(parse_filter(both)) == both


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"column": "nope", "op": "in", "values": []}], "no column 'nope'"),
        ([{"column": "width", "op": "between"}], "unknown op 'between'"),
        ([{"column": "width", "op": "range", "min": "x"}], "width min must be a number"),
        ([{"column": "width", "op": "range", "min": 5, "max": 1}], "min 5 is above max 1"),
        ([{"op": "in"}], "names no column"),
    ],
)
def test_bad_specs_are_one_line(spec, message) -> None:
    with pytest.raises(ParallaxError, match=message):
        row_mask(Items(), spec)


def test_column_kinds_choose_the_control() -> None:
    kinds = column_kinds(Items())
    assert kinds == {
        "label": "values",
        "text": "text",
        "width": "number",
        "source": "values",
        "note": "values",
    }


def test_subsets_are_kept_per_dataset_and_refused_when_the_rows_moved(tmp_path) -> None:
    cache = Cache(tmp_path)
    ds = Items()
    saved = save_subset(ds, "red things", [5, 0, 5], cache, filter_spec=[{"column": "x"}])
    assert saved.rows.tolist() == [0, 5]
    assert [s.name for s in list_subsets(ds, cache)] == ["red things"]
    assert get_subset(ds, "red things", cache).filter == [{"column": "x"}]
    path = tmp_path / "subsets" / "fp-items.json"
    assert json.loads(path.read_text())["red things"]["ids"] == ["item-0", "item-5"]
    # another dataset never sees it
    assert list_subsets(Items("fp-other"), cache) == []
    # same fingerprint but the ids no longer at those rows: refused, not misapplied
    moved = Items(ids=[f"other-{i}" for i in range(6)])
    assert list_subsets(moved, cache) == []
    with pytest.raises(ParallaxError, match="no subset named 'red things'"):
        get_subset(moved, "red things", cache)
    frame = subset_frame(ds, saved)
    assert frame.to_dict("list") == {
        "row": [0, 5],
        "id": ["item-0", "item-5"],
        "label": ["cat", "dog"],
        "text": ["A red cat", "RED dog"],
    }
    assert delete_subset(ds, "red things", cache) and list_subsets(ds, cache) == []
    assert not delete_subset(ds, "red things", cache)


@pytest.mark.parametrize(
    ("name", "rows", "message"),
    [
        ("", [1], "a subset name"),
        ("../etc", [1], "a subset name"),
        ("ok", [], "at least one item"),
        ("ok", [99], "between 0 and 5"),
    ],
)
def test_bad_subsets_are_one_line(tmp_path, name, rows, message) -> None:
    with pytest.raises(ParallaxError, match=message):
        save_subset(Items(), name, rows, Cache(tmp_path))


def test_a_damaged_subsets_file_reads_as_none(tmp_path) -> None:
    cache = Cache(tmp_path)
    (tmp_path / "subsets").mkdir()
    (tmp_path / "subsets" / "fp-items.json").write_text("{not json")
    assert list_subsets(Items(), cache) == []
    save_subset(Items(), "again", [1], cache)
    assert [s.name for s in list_subsets(Items(), cache)] == ["again"]


def test_a_dataset_without_texts_or_metadata() -> None:
    class Two(Items):
        def __init__(self) -> None:
            super().__init__()
            self.ids, self.labels, self.texts = ["a", "b"], ["x", "y"], None
            self._meta = pd.DataFrame(index=range(2))

    assert row_mask(Two(), [{"column": "label", "op": "in", "values": ["y"]}]).tolist() == [
        False,
        True,
    ]
    with pytest.raises(ParallaxError, match="no texts"):
        row_mask(Two(), [{"column": "text", "op": "contains", "text": "a"}])
