"""Bundles: round trip, installation under keys recomputed from the bundle's own content,
refusal of bad files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from engine.data.bundle import BundleError, bundle_fingerprint, open_bundle
from engine.maps.project import project
from engine.outputs.bundle import write_bundle
from engine.store.cache import Cache, make_key
from engine.store.catalog import embeddings_by
from tests.fakes import ArrayImageDataset, MeanColourModel

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    ds = ArrayImageDataset(60)
    models = [MeanColourModel(dim=16), MeanColourModel(dim=8, version="2")]
    path = tmp / "demo.parallax.zip"
    write_bundle(ds, models, path, methods=("pca", "umap"), cache=Cache(tmp / "producer"))
    return path, ds, models, tmp / "producer"


def test_round_trip_restores_items_maps_and_vectors(bundle_file, tmp_path):
    path, ds, models, producer = bundle_file
    viewer = Cache(tmp_path / "viewer")
    bundle = open_bundle(path, cache=viewer)
    b = bundle.dataset
    assert len(b) == 60 and b.ids == ds.ids and b.labels == ds.labels and b.texts == ds.texts
    # the fingerprint is the bundle's own (recomputed from its content), never the claimed one
    assert b.fingerprint() == bundle_fingerprint(bundle.manifest["files"]) != ds.fingerprint()
    assert b.load_image(0).size[0] <= 64 and b.has_images
    assert bundle.model_specs == [m.spec for m in models]
    # the viewer's cache now answers as the producer's does, without any model, under the
    # engine's key recipes applied to the bundle's fingerprint
    for model in models:
        (entry,) = embeddings_by(b, model.spec, viewer)
        (original,) = embeddings_by(ds, model.spec, Cache(producer))
        assert entry.key == make_key(
            kind="vectors", dataset=b.fingerprint(), model=model.identity, modality="image"
        )
        np.testing.assert_allclose(entry.load(), original.load(), atol=2e-3)  # float16 copy
        for method in ("pca", "umap"):
            mine = project(entry, method, cache=viewer)
            theirs = project(original, method, cache=Cache(producer))
            assert mine.cached  # the bundle's map, found under the engine's projection key
            np.testing.assert_array_equal(mine.coords(), theirs.coords())
    nbr = bundle.neighbours(0)
    assert nbr.shape == (60, 10) and not (nbr == np.arange(60)[:, None]).any()


def test_reopening_is_idempotent(bundle_file, tmp_path):
    path = bundle_file[0]
    cache = Cache(tmp_path)
    open_bundle(path, cache=cache)
    before = sorted(e.key for e in cache.entries())
    open_bundle(path, cache=cache)
    assert sorted(e.key for e in cache.entries()) == before


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dst


def test_corrupt_member_is_refused_clearly(bundle_file, tmp_path):
    def flip(name, data):
        if name == "coords/0-pca.npy":
            return data[:-4] + b"\0\0\0\1"
        return data

    bad = _rewrite(bundle_file[0], tmp_path / "bad.zip", flip)
    with pytest.raises(BundleError, match="checksum"):
        open_bundle(bad, cache=Cache(tmp_path / "c"))
    assert Cache(tmp_path / "c").entries("projections") == []


def test_foreign_newer_and_non_zip_files_are_refused(bundle_file, tmp_path):
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"hello")
    with pytest.raises(BundleError, match="not a zip"):
        open_bundle(not_zip, cache=Cache(tmp_path / "c"))

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "something-else"}))
    with pytest.raises(BundleError, match="foreign"):
        open_bundle(foreign, cache=Cache(tmp_path / "c"))

    def bump(name, data):
        if name == "manifest.json":
            m = json.loads(data)
            m["version"] = 99
            return json.dumps(m)
        return data

    newer = _rewrite(bundle_file[0], tmp_path / "newer.zip", bump)
    with pytest.raises(BundleError, match="upgrade"):
        open_bundle(newer, cache=Cache(tmp_path / "c"))


def test_missing_member_is_refused(bundle_file, tmp_path):
    gone = _rewrite(
        bundle_file[0],
        tmp_path / "gone.zip",
        lambda name, data: None if name == "neighbors/1.npy" else data,
    )
    with pytest.raises(BundleError, match="missing member"):
        open_bundle(gone, cache=Cache(tmp_path / "c"))


def test_opening_a_bundle_imports_no_torch(bundle_file, tmp_path):
    heavy = ("torch", "transformers", "open_clip", "umap", "sentence_transformers")
    code = "\n".join(
        [
            f"import sys; sys.path.insert(0, {str(REPO)!r})",
            "from engine.data.bundle import open_bundle",
            "from engine.store.cache import Cache",
            "from engine.store.catalog import embeddings_by",
            "from engine.maps.project import project",
            f"c = Cache({str(tmp_path)!r})",
            f"b = open_bundle({str(bundle_file[0])!r}, cache=c)",
            "e = embeddings_by(b.dataset, b.model_specs[0], c)[0]",
            "project(e, 'umap', cache=c).coords()",
            f"print([m for m in {heavy!r} if m in sys.modules])",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bundle_spec_opens_through_open_dataset(bundle_file, tmp_path):
    from engine.data import open_dataset
    from engine.errors import DatasetError

    ds = open_dataset(f"bundle:{bundle_file[0]}", cache_root=tmp_path)
    assert len(ds) == 60 and ds.ids == bundle_file[1].ids
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK not really")
    with pytest.raises(DatasetError, match="not a Parallax bundle"):
        open_dataset(f"bundle:{junk}", cache_root=tmp_path)
