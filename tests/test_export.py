"""``export``: one Parquet with every model's map, read back column by column."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from engine.cli import main as cli
from engine.data import open_dataset
from engine.embed.local import embed_dataset
from engine.maps.knn import exact_knn
from engine.maps.project import project
from engine.outputs.export import export_parquet, model_slug, unique_slugs
from engine.store.cache import Cache


def test_slugs_are_column_safe_and_unique():
    assert model_slug("demo:shapes-clip") == "demo_shapes_clip"
    assert model_slug("open_clip:ViT-B-32/laion2b") == "open_clip_vit_b_32_laion2b"
    assert unique_slugs(["a:b", "a-b"]) == ["a_b", "a_b_2"]


def test_export_reads_back_column_by_column(tmp_path, cache_root):
    cache = Cache(cache_root)
    ds = open_dataset("demo:shapes?n=200", cache_root=cache_root)
    models = ["baseline:pixels", "baseline:text"]
    out = tmp_path / "maps" / "shapes.parquet"
    result = export_parquet(
        ds, models, out, method="pca", vectors=True, neighbours=5, thumbnails=True, cache=cache
    )
    frame = pd.read_parquet(out)
    assert len(frame) == len(ds) == result.rows
    assert frame["id"].tolist() == ds.ids
    assert frame["label"].tolist() == ds.labels
    assert frame["text"].tolist() == ds.texts
    meta = ds.metadata()
    for column in meta.columns:  # every metadata column, unchanged
        assert frame[column].tolist() == meta[column].tolist()
    for spec in models:
        slug = model_slug(spec)
        vectors = embed_dataset(ds, spec, cache=cache)
        coords = project(vectors.path, "pca", cache=cache).coords()
        np.testing.assert_array_equal(frame[f"{slug}_x"].to_numpy(), coords[:, 0])
        np.testing.assert_array_equal(frame[f"{slug}_y"].to_numpy(), coords[:, 1])
        stored = np.stack(frame[f"{slug}_vector"].to_numpy())
        np.testing.assert_array_equal(stored, vectors.vectors())
        unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
        idx, _ = exact_knn(unit, 5)
        assert np.stack(frame[f"{slug}_neighbors"].to_numpy()).tolist() == idx.tolist()
    assert frame["image"].map(lambda b: b[:8] == b"\x89PNG\r\n\x1a\n").all()
    info = json.loads(pq.read_schema(out).metadata[b"parallax"])
    assert info["fingerprint"] == ds.fingerprint()
    assert {m["spec"] for m in info["models"].values()} == set(models)


def test_cli_export_names_the_map_columns(tmp_path, cache_root, capsys):
    out = tmp_path / "digits.parquet"
    code = cli(
        [
            "export",
            "--dataset",
            "demo:digits",
            "--model",
            "baseline:pixels",
            "--method",
            "pca",
            "--out",
            str(out),
            "--cache-dir",
            str(cache_root),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["map_columns"] == {"baseline:pixels": ["baseline_pixels_x", "baseline_pixels_y"]}
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["id", "label", "digit", "baseline_pixels_x", "baseline_pixels_y"]
    assert len(frame) == 1797 and frame["baseline_pixels_x"].dtype == np.float32


def test_cli_export_bad_model_is_one_line(tmp_path, cache_root, capsys):
    code = cli(
        [
            "export",
            "--dataset",
            "demo:digits",
            "--model",
            "nope:x",
            "--out",
            str(tmp_path / "x.parquet"),
            "--cache-dir",
            str(cache_root),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "x.parquet").exists()


def test_build_table_from_drawn_maps(cache_root):
    """What the Map page's button writes: the maps as drawn, one x/y pair each."""
    from engine.outputs.export import ModelMap, build_table, parquet_bytes

    cache = Cache(cache_root)
    ds = open_dataset("demo:digits", cache_root=cache_root)
    vectors = embed_dataset(ds, "baseline:pixels", cache=cache)
    coords = project(vectors.path, "pca", cache=cache).coords()
    entry = cache.get("vectors", vectors.key)
    table = build_table(
        ds,
        [
            ModelMap("baseline:pixels", coords, entry, "image"),
            ModelMap("baseline:pixels", coords * 2, entry, "image"),
        ],
    )
    frame = pd.read_parquet(io.BytesIO(parquet_bytes(table)))
    assert [c for c in frame.columns if c.endswith(("_x", "_y"))] == [
        "baseline_pixels_x",
        "baseline_pixels_y",
        "baseline_pixels_2_x",
        "baseline_pixels_2_y",
    ]
    np.testing.assert_array_equal(
        frame["baseline_pixels_2_y"].to_numpy(), (coords[:, 1] * 2).astype(np.float32)
    )
