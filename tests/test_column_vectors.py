"""``column:NAME``: a manifest's own vectors used as a model (maps, comparison, bundles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.analysis.compare import compare_models
from engine.cli import main as cli
from engine.data import open_dataset
from engine.data.column_vectors import read_column_vectors, vector_columns
from engine.embed.local import embed_dataset
from engine.errors import ModelUnavailable, ParallaxError
from engine.maps.project import project
from engine.models import load_model
from engine.store.cache import Cache

N, DIM = 60, 6


def _vectors(seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, N)
    centres = rng.normal(size=(3, DIM)) * 4
    x = centres[labels] + rng.normal(size=(N, DIM))
    return x.astype(np.float32), [f"c{v}" for v in labels]


def _table(x: np.ndarray, labels: list[str]) -> dict[str, list]:
    return {"text": [f"item {i}" for i in range(N)], "label": labels}


def write_manifest(folder: Path, encoding: str, x: np.ndarray, labels: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = _table(x, labels)
    if encoding == "parquet-list":
        t = pa.table({**base, "emb": pa.array([list(map(float, r)) for r in x])})
        pq.write_table(t, folder / "m.parquet")
        return folder / "m.parquet"
    if encoding == "parquet-fixed":
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)
        pq.write_table(pa.table({**base, "emb": emb}), folder / "m.parquet")
        return folder / "m.parquet"
    if encoding == "jsonl":
        path = folder / "m.jsonl"
        rows = [
            {"text": t, "label": lab, "emb": [float(v) for v in r]}
            for t, lab, r in zip(base["text"], labels, x, strict=True)
        ]
        path.write_text("\n".join(json.dumps(r) for r in rows))
        return path
    if encoding == "csv":
        path = folder / "m.csv"
        frame = pd.DataFrame({**base, "emb": [json.dumps([float(v) for v in r]) for r in x]})
        frame.to_csv(path, index=False)
        return path
    if encoding == "npy":
        path = folder / "m.csv"
        pd.DataFrame(base).to_csv(path, index=False)
        np.save(folder / "emb.npy", x)
        (folder / "m.vectors.json").write_text(json.dumps({"emb": "emb.npy"}))
        return path
    raise AssertionError(encoding)


@pytest.mark.parametrize("encoding", ["parquet-list", "parquet-fixed", "jsonl", "csv", "npy"])
def test_every_encoding_reads_the_same_vectors(tmp_path, cache_root, encoding):
    x, labels = _vectors()
    path = write_manifest(tmp_path / encoding, encoding, x, labels)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert "emb" in vector_columns(ds)
    got = read_column_vectors(ds, "column:emb")
    assert got.dtype == np.float32 and got.shape == (N, DIM)
    np.testing.assert_allclose(got, x, rtol=1e-6)


def test_npy_side_file_follows_skipped_rows(tmp_path, cache_root):
    x, labels = _vectors()
    path = write_manifest(tmp_path, "npy", x, labels)
    frame = pd.read_csv(path)
    frame.loc[3, "text"] = None  # row 3 has no content: skipped, so item 3 is table row 4
    frame.to_csv(path, index=False)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert len(ds) == N - 1
    got = read_column_vectors(ds, "column:emb")
    np.testing.assert_allclose(got, np.delete(x, 3, axis=0), rtol=1e-6)


def _bad_manifest(tmp_path: Path, cells: list) -> Path:
    rows = [{"text": f"t{i}", "emb": c} for i, c in enumerate(cells)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([[1.0, 2.0], [1.0, 2.0, 3.0]], "row 1 .*3 values, expected 2"),
        ([[1.0, 2.0], [1.0, None]], "row 1 .*not a list of numbers|row 1 .*NaN"),
        ([[1.0, 2.0], "abc"], "row 1 .*not a list of numbers"),
        ([[1.0, 2.0], [0.0, 0.0]], "row 1 .*all zeros"),
        ([[1.0, 2.0], 7], "row 1 .*not a list of numbers"),
        ([[1.0, 2.0], [["a"], ["b"]]], "row 1 .*not a list of numbers|row 1 .*nested"),
    ],
)
def test_bad_vectors_are_refused_with_one_line(tmp_path, cache_root, cells, message):
    path = _bad_manifest(tmp_path, cells)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    cache = Cache(cache_root)
    with pytest.raises(ParallaxError, match=message) as info:
        embed_dataset(ds, "column:emb", cache=cache)
    assert "\n" not in str(info.value) and "column:emb" in str(info.value)
    assert cache.entries("vectors") == []  # nothing written half


def test_nan_and_inf_in_parquet_are_refused(tmp_path, cache_root):
    x, labels = _vectors()
    x[5, 2] = np.nan
    path = write_manifest(tmp_path / "nan", "parquet-fixed", x, labels)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    with pytest.raises(ParallaxError, match=r"row 5 .*NaN or infinite"):
        embed_dataset(ds, "column:emb", cache=Cache(cache_root))
    x[5, 2] = np.inf
    path = write_manifest(tmp_path / "inf", "parquet-fixed", x, labels)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    with pytest.raises(ParallaxError, match=r"row 5 .*NaN or infinite"):
        embed_dataset(ds, "column:emb", cache=Cache(cache_root))


def test_unknown_column_names_the_vector_columns(tmp_path, cache_root):
    x, labels = _vectors()
    path = write_manifest(tmp_path, "parquet-list", x, labels)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    with pytest.raises(ParallaxError, match=r"no column 'clip'.*vector columns: emb"):
        embed_dataset(ds, "column:clip", cache=Cache(cache_root))


def test_column_is_cached_by_content_and_behaves_like_a_model(tmp_path, cache_root):
    x, labels = _vectors()
    path = write_manifest(tmp_path / "a", "parquet-fixed", x, labels)
    cache = Cache(cache_root)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    first = embed_dataset(ds, "column:emb", cache=cache)
    again = embed_dataset(ds, "column:emb", cache=cache)
    assert not first.cached and again.cached and again.key == first.key
    np.testing.assert_allclose(again.vectors(), x)
    # Other vectors in the same column: another content hash, another key.
    path2 = write_manifest(tmp_path / "b", "parquet-fixed", x * 2 + 1, labels)
    other = embed_dataset(
        open_dataset(f"manifest:{path2}", cache_root=cache_root), "column:emb", cache=cache
    )
    assert other.key != first.key
    # Maps, and a comparison side by side with a computed model.
    coords = project(first.path, "pca", cache=cache).coords()
    assert coords.shape == (N, 2)
    report = compare_models(ds, ["column:emb", "baseline:text"], cache=cache)
    by_model = {m["model"]: m for m in report.to_json()["models"]}
    assert by_model["column:emb"]["error"] is None
    assert by_model["column:emb"]["knn_accuracy"] > 0.9  # well-separated clusters
    with pytest.raises(ModelUnavailable, match="cannot embed new images or texts"):
        load_model("column:emb")


def test_cli_project_and_bundle_with_a_column(tmp_path, cache_root, capsys):
    x, labels = _vectors()
    path = write_manifest(tmp_path, "parquet-list", x, labels)
    args = ["--cache-dir", str(cache_root), "--json"]
    ds = f"manifest:{path}"
    assert cli(["project", "--dataset", ds, "--model", "column:emb", "--method", "pca", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "column:emb" and out["n"] == N
    bundle = tmp_path / "b.parallax.zip"
    code = cli(
        [
            "bundle",
            "--dataset",
            ds,
            "--model",
            "column:emb",
            "--method",
            "pca",
            "--out",
            str(bundle),
            *args,
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["models"] == ["column:emb"]
    fresh = tmp_path / "fresh-cache"
    opened = open_dataset(f"bundle:{bundle}", cache_root=fresh)
    assert len(opened) == N
    installed = Cache(fresh).entries("vectors")
    assert [e.manifest["model"] for e in installed] == ["column:emb"]
    np.testing.assert_allclose(installed[0].load(), x, rtol=1e-3, atol=1e-3)  # bundles keep f16
