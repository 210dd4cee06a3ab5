"""A manifest held as columns (#31): the same ids, labels, texts, skipped rows, metadata and
fingerprint as the row-by-row rules give, ``column:`` vectors equal to ``--vectors`` on the
same file, and the operator's allowance for large tables (visitors keep ``MAX_ITEMS``)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import settings
from engine.data import open_dataset
from engine.data.base import ContentHasher, SkippedItem, approx_nbytes
from engine.data.column_vectors import column_identity
from engine.data.manifest import (
    IMAGE_COLUMNS,
    LABEL_COLUMNS,
    PY_WHITESPACE,
    TEXT_COLUMNS,
    ManifestDataset,
    _as_key,
    clean_text,
    find_column,
    read_table,
    resolve_image_ref,
)
from engine.errors import DatasetError, ParallaxError
from engine.policy import DatasetRefused
from engine.workspace import Workspace


def test_the_whitespace_stripped_is_pythons() -> None:
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert every == PY_WHITESPACE


# -- the reference: the rules applied one row at a time, as the manifest was read before -------
def reference(path: Path) -> dict:
    """What a manifest gives read into pandas and cleaned cell by cell (``_as_key``,
    ``clean_text``, ``resolve_image_ref``), fingerprinted with ``ContentHasher.add_row``."""
    skipped: list[SkippedItem] = []
    table = read_table(path, skipped)
    columns = [str(c) for c in table.columns]
    table.columns = columns
    image_col = find_column(columns, IMAGE_COLUMNS)
    text_col = find_column(columns, TEXT_COLUMNS)
    label_col = find_column(columns, LABEL_COLUMNS)
    id_col = find_column(columns, ("id",))
    n = len(table)
    keys = [_as_key(v) for v in table[id_col].tolist()] if id_col else None
    id_used = keys is not None and None not in keys and len(set(keys)) == n
    row_ids = keys if id_used else [str(i) for i in range(n)]
    labels = [_as_key(v) for v in table[label_col].tolist()] if label_col else [None] * n
    texts = [clean_text(v) for v in table[text_col].tolist()] if text_col else [None] * n
    digests: list[str | None] = [None] * n
    why: list[str] = ["no image and no text" if text_col else "no image"] * n
    if image_col:
        for i, cell in enumerate(table[image_col].tolist()):
            ref = resolve_image_ref(cell, path.resolve().parent)
            if ref is not None and ref.path is None:
                why[i] = str(ref.error)
            elif ref is not None:  # the fixtures' image files are all valid
                digests[i] = hashlib.sha256(ref.path.read_bytes()).hexdigest()
    keep = [i for i in range(n) if digests[i] is not None or texts[i] is not None]
    kept = set(keep)
    skipped += [
        SkippedItem(f"row {i}" + (f" ({row_ids[i]})" if id_used else ""), why[i])
        for i in range(n)
        if i not in kept
    ]
    h = ContentHasher("manifest-v1")
    for i in keep:
        h.add_row(row_ids[i], labels[i], texts[i], digests[i])
    used = {c for c in (image_col, text_col, label_col) if c} | ({id_col} if id_used else set())
    meta = table.iloc[keep][[c for c in columns if c not in used]].reset_index(drop=True)
    return {
        "ids": [row_ids[i] for i in keep],
        "labels": [labels[i] for i in keep],
        "texts": [texts[i] for i in keep] if text_col else None,
        "skipped": skipped,
        "fingerprint": h.hexdigest(),
        "source_rows": keep,
        "meta": meta,
    }


WHITE = [
    "  a b  ",
    "\u3000x\u2028",
    "\x1cy\x1f",
    "\x85z\x85",
    "é\u00a0",
    "",
    " ",
    None,
    "😀abc😀",
    "a\x00b",
    "\u200bq\u200b",
    "\ufeffw",
    "é" * 25_000 + " ",  # cut to MAX_TEXT_CHARS code points, not bytes
    "\x00 \x00",
]


def _frames() -> dict[str, pd.DataFrame]:
    n = len(WHITE)
    return {
        "white": pd.DataFrame(
            {"id": [f" {i} " for i in range(n)], "text": WHITE, "label": WHITE[::-1], "k": range(n)}
        ),
        "int_ids": pd.DataFrame(
            {
                "id": [3, None, 5, 7],
                "text": ["a", "b", None, "d"],
                "label": [1.0, 2.0, None, 4.0],
                "m": [1, None, 3, 4],
            }
        ),
        "float_labels": pd.DataFrame(
            {"id": [1, 2, 3], "caption": ["a", "b", "c"], "class": [1.5, np.nan, 2.0]}
        ),
        "bool_labels": pd.DataFrame(
            {
                "text": ["a", "b", "c"],
                "label": [True, False, True],
                "when": pd.date_range("2020", periods=3),
            }
        ),
        "duplicate_ids": pd.DataFrame({"id": ["a", "a", "b"], "text": ["a", "b", "c"]}),
        "huge_ints": pd.DataFrame(
            {
                "id": pd.array([2**60 + 1, None, 2**60 + 3], dtype="Int64"),
                "text": ["a", "b", "c"],
                "label": pd.array([2**60 + 1, None, 7], dtype="Int64"),
            }
        ),
        "indexed": pd.DataFrame(
            {"text": ["a", "b", "c"], "label": pd.Categorical(["u", None, "u"]), "n": [1, 2, 3]},
            index=pd.Index([10, 20, 30], name="idx"),
        ),
        "images": pd.DataFrame(
            {
                "image": ["0.png", "../x.png", None, "1.png", "nope.png", "/etc/passwd", "0.png"],
                "text": [None, "t", None, "u", None, "v", " "],
                "id": list("abcdefg"),
            }
        ),
    }


def _write_all(folder: Path, make_image) -> list[Path]:
    for i in range(2):
        make_image(folder / f"{i}.png", colour=(40 * i, 90, 10))
    paths = []
    for name, frame in _frames().items():
        paths.append(folder / f"{name}.parquet")
        pq.write_table(pa.Table.from_pandas(frame), paths[-1])
        if name not in ("indexed",):
            paths.append(folder / f"{name}.csv")
            frame.to_csv(paths[-1], index=False)
    jsonl = folder / "mixed.jsonl"
    jsonl.write_text(
        '{"text": "a\\ud800b", "id": 1}\n{"text": 5, "id": 2.0, "label": true}\n'
        '{"text": [1, 2], "id": "x"}\nnot json\n{"text": " k ", "label": 3}\n'
    )
    plain = folder / "plain.jsonl"
    plain.write_text('{"text": "a", "id": 1}\n{"text": "b", "id": 2.5}\n{"text": null, "id": 3}\n')
    return [*paths, jsonl, plain]


def test_columns_match_the_row_by_row_rules(tmp_path: Path, cache_root: Path, make_image) -> None:
    folder = tmp_path / "m"
    for path in _write_all(folder, make_image):
        want = reference(path)
        ds = ManifestDataset(path, cache_root=cache_root)
        where = path.name
        assert len(ds) == len(want["ids"]), where
        assert ds.ids == want["ids"], where
        assert ds.labels == want["labels"], where
        assert ds.texts == want["texts"], where
        assert ds.skipped == want["skipped"], where
        assert list(ds.source_rows) == want["source_rows"], where
        assert ds.fingerprint() == want["fingerprint"], where
        pd.testing.assert_frame_equal(ds.metadata(), want["meta"], obj=where)


def test_a_lone_surrogate_is_fingerprinted_row_by_row(tmp_path: Path, cache_root: Path) -> None:
    path = tmp_path / "s.jsonl"
    # A column of mixed types stays Python objects in pandas, the surrogate with them.
    path.write_text('{"text": "x", "id": "a\\udc00"}\n{"text": "y", "id": 5}\n')
    ds = ManifestDataset(path, cache_root=cache_root)
    assert ds.ids == ["a\udc00", "5"]
    assert ds.fingerprint() == reference(path)["fingerprint"]


def test_columns_become_lists_only_when_asked(tmp_path: Path, cache_root: Path) -> None:
    n = 50_000
    ids = pa.array(np.arange(n).astype(str))
    pq.write_table(pa.table({"id": ids, "text": ids}), tmp_path / "t.parquet")
    ds = ManifestDataset(tmp_path / "t.parquet", cache_root=cache_root)
    small = approx_nbytes(ds)  # Arrow buffers: tens of bytes a row
    assert small < 40 * n
    assert ds.ids[:3] == ["0", "1", "2"] and len(ds) == n
    assert approx_nbytes(ds) > small + 56 * n  # now Python strings too


# -- column: at 50k rows, against --vectors on the same file -----------------------------------
def _column_manifest(folder: Path, x: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ids = pa.array(np.arange(len(x)).astype(str))
    pq.write_table(pa.table({"id": ids, "text": ids}), folder / "items.parquet")
    np.save(folder / "vec.npy", x)
    (folder / "items.vectors.json").write_text(json.dumps({"vec": "vec.npy"}))
    return folder / "items.parquet"


def test_column_vectors_are_the_side_file_and_map_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(50_000, 8)) + 0.1).astype(np.float32)
    path = _column_manifest(tmp_path / "m", x)
    ws = Workspace(tmp_path / "cache")
    spec = f"manifest:{path}"
    got = ws.embed(spec, "column:vec")
    assert not got.cached
    cached = np.load(got.path, mmap_mode="r")
    assert np.array_equal(cached, x)
    assert Path(got.path).read_bytes() == (tmp_path / "m" / "vec.npy").read_bytes()  # as copied
    entry = ws.vectors(ws.open(spec), "column:vec")
    assert entry.manifest["model_identity"] == column_identity("column:vec", x)
    again = ws.embed(spec, "column:vec")
    assert again.cached and again.key == got.key
    from engine.params import ProjectionParams

    pca = ProjectionParams(method="pca")
    through_column = ws.map(got.path, pca).coords()
    through_vectors = ws.map(str(tmp_path / "m" / "vec.npy"), pca).coords()
    assert np.array_equal(through_column, through_vectors)


@pytest.mark.parametrize("when", ["first", "again"])
def test_a_side_file_changed_while_copied_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """The copy is made while the vectors are hashed ("first": nothing cached for the dataset
    yet) or after ("again": the dataset has vectors under this name, from an older file)."""
    x = np.random.default_rng(4).normal(size=(500, 4)).astype(np.float32)
    path = _column_manifest(tmp_path / "m", x)
    ws = Workspace(tmp_path / "cache")
    if when == "again":
        ws.embed(f"manifest:{path}", "column:vec")
        np.save(tmp_path / "m" / "vec.npy", x + 1)  # new vectors for the same manifest
    import engine.embed.local as local

    real = local.copy_file_bytes

    def copy_then_touch(source, target, count, stop=None):  # another writer, meanwhile
        done = real(source, target, count, stop)
        st = os.stat(source)
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return done

    monkeypatch.setattr(local, "copy_file_bytes", copy_then_touch)
    before = sorted((tmp_path / "cache" / "vectors").rglob("*.npy"))
    with pytest.raises(ParallaxError, match="changed while it was read"):
        ws.embed(f"manifest:{path}", "column:vec")
    assert sorted((tmp_path / "cache" / "vectors").rglob("*.npy")) == before  # nothing kept
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")]


def test_refused_vectors_leave_no_copy(tmp_path: Path) -> None:
    x = np.random.default_rng(6).normal(size=(400, 4)).astype(np.float32)
    x[321, 2] = np.nan
    path = _column_manifest(tmp_path / "m", x)
    with pytest.raises(ParallaxError, match=r"row 321 .*NaN"):
        Workspace(tmp_path / "cache").embed(f"manifest:{path}", "column:vec")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_float64_side_file_is_converted_and_cached(tmp_path: Path) -> None:
    x = np.random.default_rng(5).normal(size=(300, 5))
    path = _column_manifest(tmp_path / "m", x)
    got = Workspace(tmp_path / "cache").embed(f"manifest:{path}", "column:vec")
    assert np.array_equal(np.load(got.path), x.astype(np.float32))


# -- the operator's allowance; visitors keep MAX_ITEMS ------------------------------------------
@pytest.fixture(scope="module")
def three_million(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    n = 3_000_000
    ids = pa.array(np.arange(n).astype(str))
    text = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), ["an item"])
    pq.write_table(pa.table({"id": ids, "text": text}), folder / "items.parquet")
    return folder / "items.parquet"


def test_the_operator_opens_a_3m_row_table_and_a_visitor_is_refused(
    three_million: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.MAX_ITEMS < 3_000_000 <= settings.MAX_TABLE_ITEMS  # the defaults
    spec = f"manifest:{three_million}"
    monkeypatch.setenv("PARALLAX_SERVER_PATHS", str(three_million.parent))
    # A visitor of a fresh process: refused from the file's footer, nothing read.
    visitor = Workspace(tmp_path / "visitor-cache").visitor("v" * 32)
    with pytest.raises(DatasetError, match=r"over the limit of 2,000,000 .*PARALLAX_MAX_ITEMS"):
        visitor.open(spec)
    # Outside a workspace (library code, a Ray worker) the default limit holds too.
    with pytest.raises(DatasetError, match="PARALLAX_MAX_ITEMS"):
        open_dataset(spec, cache_root=tmp_path / "lib-cache")
    ws = Workspace(tmp_path / "cache")
    ds = ws.open(spec)
    assert len(ds) == 3_000_000 and ds.ids[-1] == "2999999"
    # The operator's table is held for the process: a visitor naming it is still refused.
    with pytest.raises(DatasetRefused, match="over the limit of 2,000,000 for visitors"):
        ws.visitor("w" * 32).open(spec)


def test_the_operator_allowance_has_its_own_bound(
    three_million: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "MAX_TABLE_ITEMS", 2_500_000)
    with pytest.raises(
        DatasetError, match=r"over the limit of 2,500,000 .*PARALLAX_MAX_TABLE_ITEMS"
    ):
        Workspace(tmp_path / "cache").open(f"manifest:{three_million}")
    monkeypatch.setattr(settings, "MAX_TABLE_ITEMS", 20_000_000)
    monkeypatch.setattr(settings, "DECODE_BYTES", 1024**2)
    monkeypatch.setattr(settings, "TABLE_DECODE_BYTES", 2 * 1024**2)
    with pytest.raises(DatasetError, match="PARALLAX_TABLE_DECODE_BYTES"):
        Workspace(tmp_path / "cache2").open(f"manifest:{three_million}")


def test_ray_workers_open_a_large_table_under_the_drivers_allowance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver passes the allowance it opened the table under to the Ray workers, which open
    the spec again themselves; a table within MAX_ITEMS needs none."""
    from engine.data.base import past_items_limit
    from engine.embed import ray_backend

    path = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(40)], "text": ["x"] * 40}), path)
    spec = f"manifest:{path}"
    monkeypatch.setattr(settings, "MAX_ITEMS", 30)
    monkeypatch.setattr(ray_backend, "_worker_datasets", {})
    driver = Workspace(tmp_path / "cache").open(spec)
    assert past_items_limit(driver)
    with pytest.raises(DatasetError, match="PARALLAX_MAX_ITEMS"):
        ray_backend._worker_dataset(spec, str(tmp_path / "cache"), tables=False)
    worker = ray_backend._worker_dataset(spec, str(tmp_path / "cache"), tables=True)
    assert len(worker) == 40 and worker.fingerprint() == driver.fingerprint()
    monkeypatch.setattr(settings, "MAX_ITEMS", 40)
    assert not past_items_limit(driver)
