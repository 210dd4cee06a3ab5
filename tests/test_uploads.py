"""engine.store.uploads: staging for every front end (suffixes, names, owners, atomicity, quota)."""

from __future__ import annotations

import gc
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine import settings
from engine.data import open_dataset
from engine.data.images import IMAGE_EXTENSIONS
from engine.data.manifest import MANIFEST_SUFFIXES
from engine.errors import CacheError, DatasetError, QuotaError
from engine.store import uploads
from engine.store.cache import Cache
from engine.store.uploads import UploadFile, safe_filename, stage_upload, unique_names


def png(colour: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_safe_filename():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\My Photo (1).JPG") == "My_Photo_1_.JPG"
    assert safe_filename("..") == "file"
    assert ".." not in safe_filename("a..b.png")
    assert safe_filename("") == "file"
    assert unique_names(["a.png", "A.png", "x/a.png"]) == ["a.png", "A-1.png", "a-2.png"]


def test_accepted_suffixes_are_the_engines_own() -> None:
    """What a picker accepts is exactly what the engine reads (the page used to accept .tsv
    and .tif, which the engine then refused)."""
    images = {f".{e}" for e in IMAGE_EXTENSIONS}
    assert set(uploads.IMAGE_SUFFIXES) == images
    assert set(uploads.TABLE_SUFFIXES) == set(MANIFEST_SUFFIXES)
    assert "tsv" not in uploads.UPLOAD_TYPES and "tif" not in uploads.UPLOAD_TYPES
    for name in ("table.tsv", "scan.tif", "notes.txt"):
        with pytest.raises(DatasetError, match=rf"unsupported file type: {name} \(accepted: "):
            uploads.plan_upload([UploadFile(name, b"x")])


def test_images_zip_beside_a_manifest_cannot_escape(cache_root: Path) -> None:
    archive = zip_bytes({"img/ok.png": png(), "../escape.png": png((1, 2, 3))})
    table = b"image,label\nimg/ok.png,red\n"
    spec = stage_upload(
        [UploadFile("list.csv", table), UploadFile("imgs.zip", archive)],
        owner="alice",
        cache=Cache(cache_root),
    )
    folder = Cache(cache_root).kind_dir("uploads") / "alice"
    (upload,) = folder.iterdir()
    assert spec == f"manifest:{upload / 'list.csv'}"
    assert (upload / "img" / "ok.png").is_file()
    assert not list(cache_root.rglob("escape.png"))
    assert not list(upload.glob(".tmp-*"))  # the packed archive was only a temp file
    ds = open_dataset(spec, cache_root=cache_root)
    assert len(ds) == 1 and ds.load_image(0).size == (16, 16)


def test_each_kind_of_upload_makes_its_spec(cache_root: Path) -> None:
    cache = Cache(cache_root)
    folder = stage_upload(
        [UploadFile("../a.png", png()), UploadFile("a.png", png((0, 0, 200)))], "bob", cache=cache
    )
    assert folder.startswith("folder:") and folder.endswith("/images")
    assert sorted(p.name for p in Path(folder[7:]).iterdir()) == ["a-1.png", "a.png"]
    zipped = stage_upload(
        [UploadFile("My Pets.zip", zip_bytes({"x/a.png": png()}))], "bob", cache=cache
    )
    assert zipped.startswith("zip:") and zipped.endswith("My_Pets.zip")
    bundle_zip = zip_bytes({"manifest.json": json.dumps({"format": "parallax-bundle"}).encode()})
    assert stage_upload([UploadFile("b.zip", bundle_zip)], "bob", cache=cache).startswith("bundle:")
    named = UploadFile("c.parallax.zip", zip_bytes({"x.txt": b"1"}))  # a bundle by its name
    assert stage_upload([named], "bob", cache=cache).startswith("bundle:")
    with pytest.raises(DatasetError, match="not a readable zip or tar archive"):
        stage_upload([UploadFile("photos.zip", b"not a zip")], "bob", cache=cache)
    with pytest.raises(DatasetError, match="one archive at a time"):
        stage_upload([UploadFile("a.zip", b"1"), UploadFile("b.zip", b"2")], "bob", cache=cache)


def test_owners_are_apart_and_owner_ids_are_checked(cache_root: Path) -> None:
    cache = Cache(cache_root)
    files = [UploadFile("a.png", png())]
    mine, theirs = (
        stage_upload(files, "alice", cache=cache),
        stage_upload(files, "eve", cache=cache),
    )
    assert mine != theirs
    assert "/uploads/alice/" in mine and "/uploads/eve/" in theirs
    assert stage_upload(files, "alice", cache=cache) == mine  # same files again: reused
    for bad in ("../eve", "a/b", "", "."):
        with pytest.raises(CacheError, match="invalid cache key"):
            stage_upload(files, bad, cache=cache)


def test_a_failed_upload_leaves_nothing(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(uploads, "unpack_members", broken)
    with pytest.raises(CacheError, match="the disk is full"):
        stage_upload(
            [
                UploadFile("t.csv", b"image\nx.png\n"),
                UploadFile("i.zip", zip_bytes({"x.png": png()})),
            ],
            "alice",
            cache=Cache(cache_root),
        )
    owner = Cache(cache_root).kind_dir("uploads") / "alice"
    assert list(owner.iterdir()) == []  # no half upload, no temp folder


def test_upload_quota_per_owner(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = Cache(cache_root)
    first = [UploadFile("a.png", png(size=64))]
    size = len(first[0].data)
    monkeypatch.setattr(settings, "QUOTA_UPLOADS", int(size * 1.5))
    spec_a = stage_upload(first, "alice", cache=cache)
    stage_upload(first, "eve", cache=cache)  # another owner's share is separate
    # Over the quota: alice's older upload, not in use, makes room.
    spec_b = stage_upload([UploadFile("b.png", png((9, 9, 9), size=64))], "alice", cache=cache)
    assert not Path(spec_a[7:]).exists() and Path(spec_b[7:]).is_dir()
    # In use (an open dataset holds it): nothing can be removed, so one clear line.
    ds = open_dataset(spec_b, cache_root=cache_root)
    with pytest.raises(QuotaError) as err:
        stage_upload([UploadFile("c.png", png((1, 1, 1), size=64))], "alice", cache=cache)
    line = str(err.value)
    assert "\n" not in line and "PARALLAX_QUOTA_UPLOADS" in line and "your uploads" in line
    assert Path(spec_b[7:]).is_dir()
    del ds
    gc.collect()  # the dataset's lease goes with it
    stage_upload([UploadFile("c.png", png((1, 1, 1), size=64))], "alice", cache=cache)
    assert not Path(spec_b[7:]).exists()
    # One upload bigger than the whole quota never fits.
    with pytest.raises(QuotaError, match=r"more than the .* quota for your uploads"):
        stage_upload([UploadFile("big.png", png(size=256))], "alice", cache=cache)


def test_prune_removes_uploads_past_their_time_to_live(
    cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload does not outlive its visitor: ``cache prune`` (the Workspace's verb, what the
    CLI runs) removes uploads unused for ``PARALLAX_UPLOAD_TTL_S``, even under the size limit."""
    import os
    import time

    from engine.workspace import Workspace

    ws = Workspace(cache_root)
    old = stage_upload([UploadFile("old.png", png())], "ann", cache=ws.cache)
    fresh = stage_upload([UploadFile("new.png", png())], "bob", cache=ws.cache)
    old_entry = Path(old.split(":", 1)[1]).parent  # folder:<upload entry>/images
    past = time.time() - 3 * 3600
    os.utime(old_entry, (past, past))
    monkeypatch.setattr(settings, "UPLOAD_TTL_S", 3600.0)
    ws.prune("20G")
    assert not old_entry.exists()
    assert Path(fresh.split(":", 1)[1]).is_dir()
