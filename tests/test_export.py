"""``export``: one Parquet with every model's map, read back column by column."""

from __future__ import annotations

import io
import json
import os
import stat

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from engine.cli import main as cli
from engine.data import open_dataset
from engine.embed.local import embed_dataset
from engine.maps.knn import exact_knn
from engine.maps.project import project
from engine.outputs.export import (
    column_name,
    export_parquet,
    model_columns,
    model_slug,
    unique_slugs,
)
from engine.store.cache import Cache


def test_slugs_are_column_safe_and_unique():
    assert model_slug("demo:shapes-clip") == "demo_shapes_clip"
    assert model_slug("open_clip:ViT-B-32/laion2b") == "open_clip_vit_b_32_laion2b"
    assert unique_slugs(["a:b", "a-b"]) == ["a_b", "a_b_2"]


def test_one_column_scheme_for_every_model_field():
    first, second = model_columns(["demo:shapes-clip", "demo:shapes-clip"])
    assert (first.x, first.y, first.vector, first.neighbours) == (
        "demo_shapes_clip_x",
        "demo_shapes_clip_y",
        "demo_shapes_clip_vector",
        "demo_shapes_clip_neighbours",
    )
    assert second.x == column_name("demo_shapes_clip_2", "x") == "demo_shapes_clip_2_x"


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
        idx, sims = exact_knn(unit, 5)
        # Embedding Atlas's --neighbors form: {"ids": [row, ...], "distances": [...]} per row
        for row, cell in enumerate(frame[f"{slug}_neighbours"]):
            assert set(cell) == {"ids", "distances"}
            assert cell["ids"].tolist() == idx[row].tolist()
            np.testing.assert_allclose(cell["distances"], 1.0 - sims[row], atol=1e-6)
            assert (np.diff(cell["distances"]) >= -1e-6).all()  # nearest first
    assert frame["image"].map(lambda b: b[:8] == b"\x89PNG\r\n\x1a\n").all()
    info = json.loads(pq.read_schema(out).metadata[b"parallax"])
    assert info["fingerprint"] == ds.fingerprint()
    assert {m["spec"] for m in info["models"].values()} == set(models)


def test_export_and_bundle_files_follow_the_umask(tmp_path, cache_root):
    """An export is a file to share: 0644 under the usual umask 022 (mkstemp's temp file alone
    would leave it 0600), 0600 under 077."""
    from engine.workspace import Workspace

    ws = Workspace(cache_root)
    old = os.umask(0o022)
    try:
        out = tmp_path / "digits.parquet"
        ws.export("demo:digits", ["baseline:pixels"], out, method="pca")
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        bundle = tmp_path / "digits.parallax.zip"
        ws.bundle("demo:digits", ["baseline:pixels"], bundle, methods=("pca",))
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o644
        os.umask(0o077)
        private = tmp_path / "private.parquet"
        ws.export("demo:digits", ["baseline:pixels"], private, method="pca")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)


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


def test_a_metadata_column_named_like_a_model_column_is_kept_apart(cache_root):
    from engine.outputs.export import ModelMap, build_table

    class Tiny:
        spec, ids, labels, texts, has_images = "tiny", ["a", "b"], ["x", "y"], None, False

        def metadata(self) -> pd.DataFrame:
            return pd.DataFrame({"m_x": [1, 2], "size_x": [3, 4], "id": ["p", "q"]})

        def fingerprint(self) -> str:
            return "f"

        def __len__(self) -> int:
            return 2

    coords = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    table = build_table(Tiny(), [ModelMap("m", coords)])
    assert table.column_names == ["id", "label", "meta_m_x", "size_x", "meta_id", "m_x", "m_y"]
    assert table.column("size_x").to_pylist() == [3, 4]  # no longer renamed for its suffix
    assert table.column("m_x").to_pylist() == [0.0, 2.0]


def test_cli_export_with_neighbours_names_atlas_column(tmp_path, cache_root, capsys):
    out = tmp_path / "digits.parquet"
    argv = ["export", "--dataset", "demo:digits", "--model", "baseline:pixels", "--method", "pca"]
    argv += ["--neighbours", "3", "--out", str(out), "--cache-dir", str(cache_root)]
    assert cli(argv) == 0
    human = capsys.readouterr().out
    assert "--x baseline_pixels_x --y baseline_pixels_y --neighbors baseline_pixels_neighbours" in (
        human
    )
    first = pq.read_table(out).column("baseline_pixels_neighbours")[0].as_py()
    assert len(first["ids"]) == len(first["distances"]) == 3 and 0 not in first["ids"]
