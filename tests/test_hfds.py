"""``hfds:`` datasets: save_to_disk folders and Parquet folders through the manifest contract."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.data import open_dataset
from engine.errors import DatasetError

datasets = pytest.importorskip("datasets")

COLOURS = {"red": (230, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 230)}


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buf, format="PNG")
    return buf.getvalue()


def _hf_dataset():
    names = list(COLOURS)
    features = datasets.Features(
        {
            "picture": datasets.Image(),
            "caption": datasets.Value("string"),
            "kind": datasets.ClassLabel(names=["warm", "cool"]),
            "score": datasets.Value("float32"),
            "emb": datasets.List(datasets.Value("float32")),
        }
    )
    rows = {
        "picture": [{"bytes": _png(COLOURS[n]), "path": None} for n in names],
        "caption": [f"a {n} square" for n in names],
        "kind": [0, 1, 1],
        "score": [0.5, 1.5, 2.5],
        "emb": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
    }
    return datasets.Dataset.from_dict(rows, features=features)


def test_save_to_disk_folder_opens_with_class_names(tmp_path: Path, cache_root: Path) -> None:
    _hf_dataset().save_to_disk(str(tmp_path / "ds"))
    ds = open_dataset(f"hfds:{tmp_path / 'ds'}", cache_root=cache_root)
    assert len(ds) == 3
    assert ds.labels == ["warm", "cool", "cool"]  # ClassLabel names, not integers
    assert ds.texts == ["a red square", "a green square", "a blue square"]
    assert ds.has_images
    assert ds.load_image(2).getpixel((5, 5)) == COLOURS["blue"]
    meta = ds.metadata()
    assert list(meta.columns) == ["score", "emb"]
    assert list(meta["emb"].iloc[2]) == pytest.approx([0.6, 0.8])


def test_dataset_dict_split_choice(tmp_path: Path, cache_root: Path) -> None:
    full = _hf_dataset()
    datasets.DatasetDict({"train": full, "test": full.select([1])}).save_to_disk(
        str(tmp_path / "d")
    )
    assert len(open_dataset(f"hfds:{tmp_path / 'd'}", cache_root=cache_root)) == 3
    test = open_dataset(f"hfds:{tmp_path / 'd'}?split=test", cache_root=cache_root)
    assert test.labels == ["cool"] and test.name.endswith("/test")
    with pytest.raises(DatasetError, match="no split 'dev'"):
        open_dataset(f"hfds:{tmp_path / 'd'}?split=dev", cache_root=cache_root)


def test_parquet_folder_and_same_fingerprint_as_saved(tmp_path: Path, cache_root: Path) -> None:
    full = _hf_dataset()
    full.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "pq").mkdir()
    full.to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    a = open_dataset(f"hfds:{tmp_path / 'saved'}", cache_root=cache_root)
    b = open_dataset(f"hfds:{tmp_path / 'pq'}", cache_root=cache_root)
    assert b.labels == a.labels and b.texts == a.texts
    assert b.fingerprint() == a.fingerprint()  # same content, same vectors cache entries


def test_hub_name_offline_fails_fast_with_one_line(monkeypatch, cache_root: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache_root / "hf"))
    with pytest.raises(DatasetError) as info:
        open_dataset("hfds:someone/not-cached", cache_root=cache_root)
    message = str(info.value)
    assert "\n" not in message and "hf download someone/not-cached" in message


def test_missing_library_is_one_line(monkeypatch, tmp_path: Path, cache_root: Path) -> None:
    (tmp_path / "x").mkdir()
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DatasetError, match=r"requirements-hf\.txt"):
        open_dataset(f"hfds:{tmp_path / 'x'}", cache_root=cache_root)


def test_not_a_dataset_folder(tmp_path: Path, cache_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a save_to_disk folder"):
        open_dataset(f"hfds:{tmp_path / 'empty'}", cache_root=cache_root)
