"""engine.store.links: an upload reopens by link (upload:<token>/<name>), no server path."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.data import open_dataset
from engine.errors import DatasetError
from engine.store.cache import Cache
from engine.store.links import display_name, link_upload, resolve_link
from engine.store.uploads import UploadFile, stage_upload


def zip_of_images(n: int = 4) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            img = io.BytesIO()
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(img, format="PNG")
            zf.writestr(f"{'red' if i % 2 else 'blue'}/{i}.png", img.getvalue())
    return buf.getvalue()


def test_an_upload_opens_by_its_link_from_any_session_with_no_path(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    staged = stage_upload([UploadFile("skimg.zip", zip_of_images())], owner="s1", cache=cache)
    assert str(tmp_path) in staged  # the staged spec names a server path ...
    public = link_upload(staged, "skimg.zip", cache)
    assert public.startswith("upload:") and public.endswith("/skimg.zip")
    assert str(tmp_path) not in public and "uploads" not in public  # ... the link does not
    assert link_upload(staged, "skimg.zip", cache) == public  # one link per upload
    ds = open_dataset(public, cache_root=tmp_path)
    direct = open_dataset(staged, cache_root=tmp_path)
    assert len(ds) == 4 and ds.fingerprint() == direct.fingerprint()
    assert getattr(ds, "spec", public) == public
    assert resolve_link(public, cache) == (staged, "skimg.zip")


def test_unknown_or_forged_links_are_one_line(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(DatasetError, match=r"'photos\.zip' is not on this deployment"):
        resolve_link("upload:" + "A" * 22 + "/photos.zip", cache)
    for forged in ("upload:../../etc/passwd", "upload:short/x.zip", "upload:a.b.c/x"):
        with pytest.raises(DatasetError, match="not valid"):
            open_dataset(forged, cache_root=tmp_path)


def test_display_names_carry_no_path() -> None:
    assert display_name("/srv/cache/uploads/s1/upload-1/skimg.zip") == "skimg.zip"
    assert display_name("..\\..\\evil name?.zip") == "evil name_.zip"
    assert display_name("") == "upload"
