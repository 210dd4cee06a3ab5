"""Security (issue 8): hostile files and archives through every door, SSRF-safe manifest URLs,
limits, untrusted code and weights, cache keys from untrusted bundles, session isolation.

Every hostile input is generated inside the test (nothing malicious is committed). Nothing
here needs the network: servers are loopback, and refused URLs are refused before connecting.
See docs/security.md for the threat -> defence -> test table.
"""

from __future__ import annotations

import ast
import contextlib
import http.server
import io
import ipaddress
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from engine import settings
from engine.data import Dataset, open_dataset
from engine.data import manifest as manifest_mod
from engine.data.manifest import BlockedAddress, blocked_reason, download_url
from engine.errors import CacheError, DatasetError, ItemError
from engine.store.cache import Cache, check_key

REPO = Path(__file__).resolve().parent.parent
_TEXT: dict = {"capture_output": True, "text": True, "timeout": 180}


# -- hostile and odd image files --------------------------------------------------------------
def _png(size=(8, 8), colour=(10, 200, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _noisy(fmt: str, size: int = 48) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return struct.pack(">I", len(data)) + kind + data + crc


def _bomb_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + _chunk(b"IEND", b"")


def _patched(fmt: str, mode: str, offsets: dict[int, bytes]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (1, 1)).save(buf, format=fmt)
    data = bytearray(buf.getvalue())
    for at, value in offsets.items():
        data[at : at + len(value)] = value
    return bytes(data)


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def hostile_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected reason substring): each must be skipped with that reason."""
    png, jpg = _noisy("PNG"), _noisy("JPEG")
    huge = (100_000).to_bytes(4, "little")
    return {
        "empty.png": (b"", "empty file (0 bytes)"),
        "text.jpg": (b"just some text, honestly\n" * 10, "not an image"),
        "cut.png": (png[: len(png) // 2], "truncated or corrupt image"),
        "cut.jpg": (jpg[: len(jpg) // 2], "truncated or corrupt image"),
        "bomb.png": (_bomb_png(100_000, 100_000), "decompression bomb"),
        "bomb.gif": (_patched("GIF", "P", {6: b"\xff\xff\xff\xff"}), "decompression bomb"),
        "bomb.bmp": (_patched("BMP", "RGB", {18: huge, 22: huge}), "decompression bomb"),
        # Formats outside the allow-list are never parsed, whatever their name says: EPS would
        # run Ghostscript, SVG/PDF are not images at all, a zip is not an image either.
        "eps.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not an"),
        "svg.png": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "not an"),
        "zip.png": (_zip_bytes({"a.txt": b"hello"}), "not an image"),
    }


def odd_good_files() -> dict[str, tuple[bytes, Callable[[Image.Image], bool]]]:
    """name -> (bytes, check on the decoded RGB image): unusual but valid, all must load."""
    rotated = Image.new("RGB", (40, 20), (0, 0, 255))
    rotated.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 250] + [0] * 762)
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    deep = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    alpha = Image.new("RGBA", (3, 3), (255, 0, 0, 0))
    return {
        "cmyk.jpg": (
            _encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
            lambda im: im.getpixel((4, 4))[0] > 200 and im.getpixel((4, 4))[1] < 60,
        ),
        "deep16.png": (
            _encode(deep, "PNG"),
            lambda im: np.asarray(im)[0, :, 0].tolist() == [0, 255],
        ),
        "palette.png": (_encode(palette, "PNG"), lambda im: im.getpixel((0, 0)) == (10, 20, 250)),
        "alpha.png": (_encode(alpha, "PNG"), lambda im: im.getpixel((1, 1)) == (255, 255, 255)),
        "anim.gif": (
            _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40),
            lambda im: im.getpixel((5, 5))[0] > 200 and im.getpixel((5, 5))[2] < 60,
        ),
        "rotated.jpg": (
            _encode(rotated, "JPEG", exif=exif, quality=95),
            lambda im: im.size == (20, 40) and im.getpixel((10, 3))[0] > 200,
        ),
        "jpeg_named.png": (_encode(rotated, "JPEG"), lambda im: im.size == (40, 20)),
    }


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _write_set(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (data, _) in {**hostile_files(), **odd_good_files()}.items():
        (folder / name).write_bytes(data)


def _check_hostile_set(ds: Dataset, source_of: Callable[[str], str]) -> None:
    """Every odd-but-valid file loads and looks right; every hostile one is skipped with its
    reason (``source_of(name)`` is how the door names the item in ``skipped``)."""
    good, bad = odd_good_files(), hostile_files()
    reasons = {s.source: s.reason for s in ds.skipped}
    for name, (_, expected) in bad.items():
        assert expected in reasons.get(source_of(name), ""), (name, reasons)
    assert len(ds) == len(good), ds.ids
    for i in range(len(ds)):
        image = ds.load_image(i)
        assert image.mode == "RGB"
        name = ds.ids[i].rsplit("/", 1)[-1] if "/" in ds.ids[i] else ds.ids[i]
        check = good.get(name)
        if check is None:  # manifest ids are row numbers: look the name up in metadata
            check = good[ds.metadata().iloc[i]["name"]]
        assert check[1](image), name


def test_pillow_is_not_told_to_accept_truncated_images() -> None:
    import engine.data.images  # noqa: F401  (its import sets Pillow's limits)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == settings.MAX_IMAGE_PIXELS


def test_hostile_files_through_a_folder(tmp_path: Path, cache_root: Path) -> None:
    _write_set(tmp_path / "set")
    ds = open_dataset(f"folder:{tmp_path / 'set'}", cache_root=cache_root)
    _check_hostile_set(ds, lambda name: name)


def test_hostile_files_through_a_manifest(tmp_path: Path, cache_root: Path) -> None:
    _write_set(tmp_path / "set" / "img")
    names = sorted({**hostile_files(), **odd_good_files()})
    path = tmp_path / "set" / "m.csv"
    pd.DataFrame({"image": [f"img/{n}" for n in names], "name": names}).to_csv(path, index=False)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    _check_hostile_set(ds, lambda name: f"row {names.index(name)}")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_hostile_files_through_an_archive(tmp_path: Path, cache_root: Path, kind: str) -> None:
    members = {f"set/{n}": d for n, (d, _) in {**hostile_files(), **odd_good_files()}.items()}
    archive = tmp_path / f"set.{kind}"
    if kind == "zip":
        archive.write_bytes(_zip_bytes(members))
    else:
        with tarfile.open(archive, "w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    ds = open_dataset(f"{kind}:{archive}", cache_root=cache_root)
    _check_hostile_set(ds, lambda name: name)


def test_hostile_files_through_the_cli(tmp_path: Path) -> None:
    _write_set(tmp_path / "set")
    cmd = [sys.executable, "-m", "engine", "datasets", "--inspect", f"folder:{tmp_path / 'set'}"]
    cmd += ["--json", "--cache-dir", str(tmp_path / "cache")]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    payload = json.loads(out.stdout)
    assert payload["n"] == len(odd_good_files())
    reasons = {s["source"]: s["reason"] for s in payload["skipped"]}
    for name, (_, expected) in hostile_files().items():
        assert expected in reasons[name], (name, reasons)
    # A folder holding only hostile files: exit 2, no traceback, and (under --json) one JSON
    # error object on stdout, the HTTP error shape.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bomb.png").write_bytes(_bomb_png(100_000, 100_000))
    cmd[5] = f"folder:{bad}"
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "dataset_unavailable" and "decompression bomb" in error["message"]


def test_special_files_are_never_opened(tmp_path: Path, cache_root: Path) -> None:
    """A FIFO named like an image would block a reader forever: it is refused from its stat."""
    root = tmp_path / "set"
    root.mkdir()
    (root / "ok.png").write_bytes(_png())
    os.mkfifo(root / "pipe.png")
    ds = open_dataset(f"folder:{root}", cache_root=cache_root)
    assert ds.ids == ["ok.png"]
    assert {s.source: s.reason for s in ds.skipped} == {"pipe.png": "empty file (0 bytes)"}
    path = root / "m.csv"
    path.write_text("image\nok.png\npipe.png\n")
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert len(ds) == 1 and {s.reason for s in ds.skipped} == {"file not found"}


# -- texts ------------------------------------------------------------------------------------
def test_huge_and_malformed_text_fields(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "MAX_TEXT_CHARS", 1000)
    huge = "word " * 400_000  # 2 MB in one cell
    csv = tmp_path / "big.csv"
    pd.DataFrame({"text": [huge, "short"], "label": ["a", "b"]}).to_csv(csv, index=False)
    ds = open_dataset(f"manifest:{csv}", cache_root=cache_root)
    assert ds.texts is not None and len(ds.texts[0]) <= 1000 and ds.texts[1] == "short"

    jsonl = tmp_path / "odd.jsonl"
    jsonl.write_text(
        '{"text": "lone \\ud800 surrogate"}\n{"text": "nul\\u0000byte"}\n'
        '{"text": 12345}\n{"text": ["a", "list"]}\n{"text": "   "}\n'
    )
    ds = open_dataset(f"manifest:{jsonl}", cache_root=cache_root)
    assert ds.texts is not None
    for text in ds.texts:  # every kept text is valid Unicode without NULs
        assert text is not None and "\x00" not in text
        text.encode("utf-8")  # raises on a lone surrogate
    assert ds.texts[:3] == ["lone ? surrogate", "nulbyte", "12345"]
    assert {s.reason for s in ds.skipped} == {"no image and no text"}  # the blank one

    raw = tmp_path / "bytes.parquet"
    cells = [b"caf\xe9 latin-1", b"ok", b"\xff\xfe\x00broken"]
    pd.DataFrame({"text": cells}).to_parquet(raw)
    ds = open_dataset(f"manifest:{raw}", cache_root=cache_root)
    assert ds.texts is not None and ds.texts[0] == "café latin-1" and ds.texts[1] == "ok"
    assert all("\x00" not in t for t in ds.texts if t)
    assert len(ds.fingerprint()) == 64


# -- manifest paths ---------------------------------------------------------------------------
def test_manifest_paths_cannot_leave_the_manifest_folder(tmp_path: Path, cache_root: Path) -> None:
    base = tmp_path / "set"
    (base / "img").mkdir(parents=True)
    (base / "img" / "ok.png").write_bytes(_png())
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png((5, 5)))
    (base / "linkdir").symlink_to(outside, target_is_directory=True)
    cells = {
        "img/ok.png": None,
        "../private/secret.png": "outside the manifest's folder",
        "img/../../private/secret.png": "outside the manifest's folder",
        "linkdir/secret.png": "outside the manifest's folder",
        "/etc/passwd": "absolute path not allowed",
        "\\\\server\\share\\x.png": "absolute path not allowed",
        "C:\\Windows\\win.ini": "absolute path not allowed",
        "file:///etc/passwd": "unsupported URL scheme 'file'",
        "data:image/png;base64,AAAA": "unsupported URL scheme 'data'",
        "ftp://example.com/a.png": "unsupported URL scheme 'ftp'",
        "img/nul\x00.png": "invalid path",
    }
    path = base / "m.jsonl"
    path.write_text("\n".join(json.dumps({"image": c}) for c in cells) + "\n")
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert ds.ids == ["0"]
    reasons = {s.source: s.reason for s in ds.skipped}
    for row, (cell, expected) in enumerate(cells.items()):
        if expected is not None:
            assert expected in reasons[f"row {row}"], (cell, reasons)
    # Swapped for an escaping link after opening: refused at read time as well.
    (base / "img" / "ok.png").unlink()
    (base / "img" / "ok.png").symlink_to(outside / "secret.png")
    with pytest.raises(ItemError, match="outside"):
        ds.load_image(0)


def test_manifest_in_a_zip_cannot_point_outside_the_extraction(
    tmp_path: Path, cache_root: Path
) -> None:
    secret = cache_root / "secret.png"  # inside the cache, but outside the extracted folder
    secret.write_bytes(_png())
    rows = "image,text\nimg/a.png,fine\n../../secret.png,\n/etc/passwd,\n../../../../etc/passwd,\n"
    archive = tmp_path / "m.zip"
    archive.write_bytes(_zip_bytes({"set/m.csv": rows.encode(), "set/img/a.png": _png()}))
    ds = open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert ds.ids == ["0"] and ds.texts == ["fine"]
    reasons = sorted(s.reason for s in ds.skipped)
    assert reasons == [
        "absolute path not allowed (paths are relative to the manifest)",
        "path points outside the manifest's folder",
        "path points outside the manifest's folder",
    ]


# -- archives ---------------------------------------------------------------------------------
def _set_declared_size(data: bytes, name: bytes, size: int) -> bytes:
    """Make the central directory (what zipfile trusts) lie about a member's size."""
    out = bytearray(data)
    at = out.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack("<H", out[at + 28 : at + 30])[0]
        if out[at + 46 : at + 46 + name_len] == name:
            out[at + 24 : at + 28] = struct.pack("<I", size)
            return bytes(out)
        at = out.index(b"PK\x01\x02", at + 4)


def test_zip_members_that_lie_or_collide(tmp_path: Path, cache_root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("s/ok.png", _png())
        zf.writestr("s/liar.png", b"\x01" * 300_000)  # declared below as 1,000 bytes
        link = zipfile.ZipInfo("s/link")
        link.external_attr = (0o120777 << 16) | 0x20
        zf.writestr(link, str(outside))  # a symlink to a folder outside ...
        zf.writestr("s/link/evil.png", _png())  # ... and a file "through" it
        zf.writestr("s/nested.tar.gz", b"\x1f\x8b" + b"\x00" * 30)
        zf.writestr("s/nested.7z", b"7z\xbc\xaf\x27\x1c" + b"\x00" * 30)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("s/ok.png", _png((3, 3)))
    archive = tmp_path / "lies.zip"
    archive.write_bytes(_set_declared_size(buf.getvalue(), b"s/liar.png", 1000))
    ds = open_dataset(f"zip:{archive}", cache_root=cache_root)
    reasons = {s.source.removeprefix("archive member "): s.reason for s in ds.skipped}
    assert reasons["s/link"] == "symlink member not extracted"
    assert "corrupt member" in reasons["s/liar.png"] or "larger than" in reasons["s/liar.png"]
    assert reasons["s/nested.tar.gz"] == reasons["s/nested.7z"] == "nested archive not extracted"
    assert reasons["s/ok.png"] == "duplicate member name"
    assert list(outside.iterdir()) == []  # nothing went through the link
    extracted = next(p for p in (cache_root / "extracted").iterdir() if not p.name.startswith("."))
    assert (extracted / "s" / "link").is_dir() and not (extracted / "s" / "link").is_symlink()
    assert not (extracted / "s" / "liar.png").exists()  # the partial output was removed
    assert sorted(ds.ids) == ["link/evil.png", "ok.png"]


def _tar_info(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.linkname = link
    return info, io.BytesIO(data) if kind == tarfile.REGTYPE else None


def test_tar_planner_is_at_least_as_strict_as_the_data_filter(
    tmp_path: Path, cache_root: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [
        _tar_info("s/ok.png", data=_png()),
        _tar_info("/etc/cron.d/evil", data=b"* * * * * root sh\n"),
        _tar_info("s/../../up.png", data=_png()),
        _tar_info("s/hard", tarfile.LNKTYPE, link="/etc/passwd"),
        _tar_info("s/soft", tarfile.SYMTYPE, link=str(outside)),
        _tar_info("s/soft/through.png", data=_png()),
        _tar_info("s/dev", tarfile.CHRTYPE),
        _tar_info("s/fifo", tarfile.FIFOTYPE),
        _tar_info("s/inner.zip", data=_zip_bytes({"a.png": _png()})),
    ]
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        for info, data in members:
            if info.name == "s/dev":
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info, data)
    ds = open_dataset(f"tar:{archive}", cache_root=cache_root)
    skipped = {s.source.removeprefix("archive member ") for s in ds.skipped}
    # Python's own "data" filter (PEP 706) must refuse nothing that our planner accepted.
    target = tmp_path / "filter-target"
    target.mkdir()
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            try:
                tarfile.data_filter(info, str(target))
                stdlib_ok = True
            except tarfile.FilterError:
                stdlib_ok = False
            if not stdlib_ok:
                assert info.name in skipped, info.name
    assert {"/etc/cron.d/evil", "s/../../up.png", "s/hard", "s/soft", "s/dev", "s/fifo"} <= skipped
    assert "s/inner.zip" in skipped
    assert sorted(ds.ids) == ["ok.png", "soft/through.png"]
    assert list(outside.iterdir()) == [] and not (tmp_path / "up.png").exists()
    extracted = next(p for p in (cache_root / "extracted").iterdir() if not p.name.startswith("."))
    assert not any(p.is_symlink() for p in extracted.rglob("*"))


def test_tar_member_count_limit(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tf:
        for i in range(6):
            info, data = _tar_info(f"{i}.png", data=_png())
            tf.addfile(info, data)
    monkeypatch.setattr(settings, "MAX_ARCHIVE_MEMBERS", 4)
    with pytest.raises(DatasetError, match="over the limit"):
        open_dataset(f"tar:{archive}", cache_root=cache_root)


# -- limits -----------------------------------------------------------------------------------
def test_item_count_limit_is_a_clear_error_for_every_kind(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.png").write_bytes(_png((4, 4), (i, 0, 0)))
    manifest = tmp_path / "t.csv"
    manifest.write_text("text\n" + "".join(f"line {i}\n" for i in range(5)))
    archive = tmp_path / "f.zip"
    archive.write_bytes(_zip_bytes({f"f/{i}.png": _png((4, 4), (i, 0, 0)) for i in range(5)}))
    monkeypatch.setattr(settings, "MAX_ITEMS", 3)
    for spec in (f"folder:{folder}", f"manifest:{manifest}", f"zip:{archive}"):
        with pytest.raises(DatasetError, match=r"over the limit of 3 .*PARALLAX_MAX_ITEMS") as e:
            open_dataset(spec, cache_root=cache_root)
        assert "\n" not in str(e.value)
    monkeypatch.setattr(settings, "MAX_ITEMS", 5)
    assert len(open_dataset(f"folder:{folder}", cache_root=cache_root)) == 5


def test_manifest_file_size_limit(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text('{"text": "x"}\n' * 100)
    monkeypatch.setattr(settings, "MAX_MANIFEST_BYTES", 500)
    with pytest.raises(DatasetError, match="PARALLAX_MAX_MANIFEST_BYTES"):
        open_dataset(f"manifest:{path}", cache_root=cache_root)


def test_limits_come_from_the_environment_and_bad_values_are_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PARALLAX_MAX_IMAGE_FILE_BYTES": "1k", "PARALLAX_MAX_ITEMS": "12"}
    code = "import engine.settings as c; print(c.MAX_IMAGE_FILE_BYTES, c.MAX_ITEMS)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.stdout.split() == ["1024", "12"], out.stderr
    env["PARALLAX_MAX_ITEMS"] = "lots"
    cmd = [sys.executable, "-m", "engine", "datasets", "--inspect", "demo:sentences"]
    out = subprocess.run([*cmd, "--cache-dir", str(tmp_path)], cwd=REPO, env=env, **_TEXT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "PARALLAX_MAX_ITEMS='lots' is not a number" in out.stderr


def test_upload_size_limit_is_set_and_sane() -> None:
    streamlit_config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    limit = streamlit_config["server"]["maxUploadSize"]  # MB per file
    assert isinstance(limit, int) and 1 <= limit <= 500
    # no tracebacks
    assert streamlit_config["client"]["showErrorDetails"] in ("type", "none", False)


def test_default_limits_are_sane() -> None:
    assert 1_000_000 <= settings.MAX_IMAGE_PIXELS <= 200_000_000
    assert settings.MAX_IMAGE_FILE_BYTES <= 200 * 1024**2
    assert settings.MAX_ARCHIVE_RATIO <= 1000 and settings.MAX_ARCHIVE_BYTES <= 64 * 1024**3
    assert 0 < settings.DOWNLOAD_TIMEOUT_S <= 30 and 0 < settings.DOWNLOAD_DEADLINE_S <= 600
    assert settings.cache_max_bytes() > 0 and settings.parse_size("20G") == 20 * 1024**3


# -- manifest URLs: SSRF guard, size and time limits -------------------------------------------
class _Server:
    """A loopback HTTP server whose handler is a plain function; counts requests."""

    def __init__(
        self, handle: Callable[[http.server.BaseHTTPRequestHandler], None], host="127.0.0.1"
    ):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                with contextlib.suppress(OSError):  # the client hung up: the limit tests do
                    handle(self)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., _Server]]:
    servers: list[_Server] = []

    def start(handle, host="127.0.0.1") -> _Server:
        servers.append(_Server(handle, host))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _send_png(h: http.server.BaseHTTPRequestHandler) -> None:
    body = _png((7, 3))
    h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def test_loopback_url_is_refused_by_default_without_any_request(
    tmp_path: Path, cache_root: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARALLAX_ALLOW_PRIVATE_URLS", raising=False)
    server = serve(_send_png)
    path = tmp_path / "u.csv"
    path.write_text(f"url,text\n{server.url}/a.png,kept as text\n{server.url}/b.png,\n")
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert server.requests == []  # refused before connecting
    assert ds.image_errors[0].startswith("URL refused: 127.0.0.1 is a loopback address")
    assert "PARALLAX_ALLOW_PRIVATE_URLS" in ds.skipped[0].reason
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")  # the explicit opt-in
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert len(ds) == 2 and ds.load_image(1).size == (7, 3) and len(server.requests) == 2


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("localhost", "loopback"),
        ("127.1.2.3", "loopback"),
        ("[::1]", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("169.254.169.254", "link-local"),  # cloud metadata endpoints
        ("[fe80::1]", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("[fd00::1]", "private"),
        ("224.0.0.1", "multicast"),
        ("2130706433", "loopback"),  # 127.0.0.1 written as one number
        ("0x7f000001", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped IPv6
        ("[64:ff9b::a9fe:a9fe]", "link-local"),  # NAT64 of 169.254.169.254
        ("[2002:c0a8:1::1]", "private"),  # 6to4 of 192.168.0.1
    ],
)
def test_private_addresses_are_refused_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, why: str
) -> None:
    monkeypatch.delenv("PARALLAX_ALLOW_PRIVATE_URLS", raising=False)
    connects: list[object] = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: connects.append(addr))
    for scheme in ("http", "https"):
        with pytest.raises(BlockedAddress, match=f"is a {why} address"):
            download_url(f"{scheme}://{host}:8080/x.png", tmp_path)
    assert connects == [] and list(tmp_path.iterdir()) == []


def test_public_addresses_pass_the_check() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.216.34"):
        assert blocked_reason(ipaddress.ip_address(text)) is None, text


def _fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Answer ``getaddrinfo`` for the names in ``table``; record every lookup."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def fake(host, port, *args, **kwargs):
        lookups.append(host)
        if host in table:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, int(port))) for ip in table[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


def test_a_name_with_any_private_address_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARALLAX_ALLOW_PRIVATE_URLS", raising=False)
    _fake_dns(monkeypatch, {"mixed.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(BlockedAddress, match=r"mixed.example is a private address \(10.0.0.5\)"):
        download_url("http://mixed.example/a.png", tmp_path)


def test_connection_uses_the_checked_address_no_second_lookup(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a name checked once must not be looked up again by the connect step."""
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")  # the server is on loopback
    server = serve(_send_png)
    port = server.url.rsplit(":", 1)[1]
    lookups = _fake_dns(monkeypatch, {"pinned.example": ["127.0.0.1"]})
    got = download_url(f"http://pinned.example:{port}/a.png", tmp_path)
    assert Image.open(got).size == (7, 3)
    assert lookups.count("pinned.example") == 1


def test_redirects_are_checked_too(tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLAX_ALLOW_PRIVATE_URLS", raising=False)
    inner = serve(_send_png, host="127.0.0.2")  # stands for a private service

    def redirect_to(location: str):
        def handle(h) -> None:
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        return handle

    outer = serve(redirect_to(f"{inner.url}/secret.png"))
    to_file = serve(redirect_to("file:///etc/passwd"))
    # Here only 127.0.0.2 counts as private, so the first hop is allowed and the second is not.
    monkeypatch.setattr(
        manifest_mod,
        "blocked_reason",
        lambda ip: "private" if str(ip) == "127.0.0.2" else None,
    )
    with pytest.raises(BlockedAddress, match=r"127\.0\.0\.2 is a private address"):
        download_url(f"{outer.url}/a.png", tmp_path)
    assert outer.requests == ["/a.png"] and inner.requests == []
    # urllib itself refuses a redirect to file:// (our handler refuses ftp:// and the rest too).
    with pytest.raises(ItemError, match=r"could not download URL: (HTTP 302|redirect to a non)"):
        download_url(f"{to_file.url}/b.png", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_oversized_downloads_stop_at_the_limit(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setattr(settings, "MAX_IMAGE_FILE_BYTES", 100_000)

    def declared(h) -> None:  # honest Content-Length over the limit
        h.send_response(200)
        h.send_header("Content-Length", "5000000")
        h.end_headers()

    def endless(h) -> None:  # no length at all, then more bytes than any limit
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(400):
            h.wfile.write(b"\x00" * 65536)

    for handle in (declared, endless):
        server = serve(handle)
        with pytest.raises(ItemError, match="file too large"):
            download_url(f"{server.url}/big.png", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stall", ["headers", "body"])
def test_a_trickling_server_cannot_hold_a_download(
    tmp_path: Path, serve, monkeypatch: pytest.MonkeyPatch, stall: str
) -> None:
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setattr(manifest_mod, "DOWNLOAD_DEADLINE_S", 1.0)

    def trickle(h) -> None:  # one byte every 0.1 s: each read succeeds, the whole never ends
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if stall == "headers":
            for _ in range(100):
                h.wfile.write(b"X")
                h.wfile.flush()
                time.sleep(0.1)
            return
        h.wfile.write(b"Content-Length: 100000\r\n\r\n")
        for _ in range(100):
            h.wfile.write(b"\x00")
            h.wfile.flush()
            time.sleep(0.1)

    server = serve(trickle)
    with pytest.raises(ItemError, match="took longer than 1 s"):
        download_url(f"{server.url}/slow.png", tmp_path)


def test_offline_failure_is_quick_and_per_host(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARALLAX_ALLOW_PRIVATE_URLS", raising=False)
    lookups: list[str] = []

    def offline(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    path = tmp_path / "many.csv"
    rows = [f"https://images.example.org/{i}.jpg,caption {i}" for i in range(40)]
    path.write_text("url,text\n" + "\n".join(rows) + "\n")
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert len(ds) == 40 and not ds.has_images  # texts kept, every image with a reason
    assert set(ds.image_errors.values()) == {
        "could not download URL: cannot resolve images.example.org (Temporary failure in "
        "name resolution)"
    }
    assert len(lookups) <= 4  # one per download thread at most: a dead host is remembered


# -- untrusted code and weights ---------------------------------------------------------------
_PICKLE_LOADERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("cPickle", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("shelve", "open"),
    ("marshal", "loads"),
}


def _python_files() -> list[Path]:
    files = [p for d in ("engine", "dashboard", "pages") for p in (REPO / d).rglob("*.py")]
    return [*files, *REPO.glob("*.py")]


def _calls(path: Path) -> Iterator[tuple[str, str, ast.Call]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                # "?" marks a method of a computed object (``self._model.eval()``, torch's
                # train/eval switch): never the builtin eval.
                owner = func.value.id if isinstance(func.value, ast.Name) else "?"
                yield owner, func.attr, node
            elif isinstance(func, ast.Name):
                yield "", func.id, node


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_no_code_path_unpickles_or_evaluates_input() -> None:
    problems = []
    for path in _python_files():
        where = path.relative_to(REPO)
        for owner, attr, call in _calls(path):
            line = f"{where}:{call.lineno}"
            if (owner, attr) in _PICKLE_LOADERS:
                problems.append(f"{line} {owner}.{attr}")
            if owner in ("", "builtins") and attr in ("eval", "exec"):
                problems.append(f"{line} {attr}()")
            if attr == "load" and owner in ("np", "numpy"):
                flag = _keyword(call, "allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and not flag.value):
                    problems.append(f"{line} np.load(allow_pickle=...)")
            if attr == "load" and owner == "torch":
                flag = _keyword(call, "weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{line} torch.load without weights_only=True")
            if attr == "load" and owner == "yaml":
                problems.append(f"{line} yaml.load (use yaml.safe_load)")
            code = _keyword(call, "trust_remote_code")
            if isinstance(code, ast.Constant) and code.value is True:
                problems.append(f"{line} trust_remote_code=True")
    assert problems == []


def test_trust_remote_code_is_never_switched_on_by_default() -> None:
    """Any ``trust_remote_code=`` keyword in the engine must be a literal False or a value
    passed through from the caller; never a default of True in a signature either."""
    found = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults))
                defaults += node.args.defaults + node.args.kw_defaults
                for arg, default in zip(args, defaults, strict=True):
                    if arg.arg == "trust_remote_code":
                        found.append(path.name)
                        assert isinstance(default, ast.Constant) and default.value is False, (
                            f"{path}:{node.lineno} trust_remote_code defaults to True"
                        )
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        assert not (isinstance(value, ast.Constant) and value.value is True), path


class _Payload:
    """Unpickling this would run code (create a marker file): the classic checkpoint attack."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_torch_checkpoints_load_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil)  # the installed torch's default is weights_only=True
    assert not marker.exists()
    factory = pytest.importorskip("open_clip.factory")  # what open_clip:ARCH/PATH.pt uses
    with pytest.raises(pickle.UnpicklingError):
        factory.load_state_dict(str(evil))
    assert not marker.exists()


def test_model_loading_does_not_trust_remote_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behavioural: whatever loader the adapter reaches is never asked to run hub code."""
    models = pytest.importorskip("engine.models")
    if not hasattr(models, "load_model"):
        pytest.skip("engine.models.load_model is not available yet")
    transformers = pytest.importorskip("transformers")
    seen: list[dict] = []

    class Stop(Exception):
        pass

    def record(*args, **kwargs):
        seen.append(kwargs)
        raise Stop

    for name in (
        "AutoConfig",
        "AutoModel",
        "AutoProcessor",
        "AutoTokenizer",
        "AutoImageProcessor",
        "CLIPModel",
        "CLIPProcessor",
        "SiglipModel",
        "PreTrainedModel",
    ):
        cls = getattr(transformers, name, None)
        if cls is not None:
            monkeypatch.setattr(cls, "from_pretrained", record, raising=False)
    st_mod = pytest.importorskip("sentence_transformers")
    monkeypatch.setattr(st_mod.SentenceTransformer, "__init__", record)
    folder = tmp_path / "hub-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "clip", "auto_map": {"AutoModel": "x.Y"}}')
    (folder / "modules.json").write_text("[]")
    for spec in (f"hf:{folder}", f"st:{folder}"):
        with contextlib.suppress(Exception):  # any refusal is fine: only the kwargs matter
            models.load_model(spec)
    if not seen:
        pytest.skip("the adapters refused these folders before reaching a loader")
    assert all(kwargs.get("trust_remote_code", False) is False for kwargs in seen), seen


# -- cache keys from untrusted input ----------------------------------------------------------
def test_cache_keys_cannot_traverse(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    for bad in ("../escape", "a/b", "..", "", "x" * 200, "a\x00b", "/abs"):
        with pytest.raises(CacheError, match="invalid cache key"):
            cache.put("vectors", bad, np.zeros((2, 2), np.float32), {})
        with pytest.raises(CacheError):
            check_key(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_hostile_bundle_cannot_write_outside_the_cache(tmp_path: Path) -> None:
    from engine.data.bundle import open_bundle
    from engine.outputs.bundle import write_bundle
    from tests.fakes import ArrayImageDataset, MeanColourModel

    good = tmp_path / "good.zip"
    producer = Cache(tmp_path / "producer")
    write_bundle(ArrayImageDataset(40), [MeanColourModel()], good, methods=("pca",), cache=producer)
    with zipfile.ZipFile(good) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["models"][0]["vectors_key"] = "../../escaped-vectors"
    manifest["projections"][0]["key"] = "../../escaped-map"
    members["manifest.json"] = json.dumps(manifest).encode()
    evil = tmp_path / "evil.zip"
    evil.write_bytes(_zip_bytes(members))
    victim = tmp_path / "victim"
    # Claimed keys are never used (issue 21): the bundle installs under keys recomputed from
    # its own content, so the lie lands nowhere and nothing leaves the cache.
    opened = open_bundle(evil, cache=Cache(victim / "cache"))
    assert sorted(p.name for p in victim.iterdir()) == ["cache"]
    keys = [e.key for e in Cache(victim / "cache").entries()]
    assert keys and all(len(k) == 64 and "." not in k for k in keys), keys
    assert opened.manifest["models"][0]["vectors_key"] in keys
    assert not list(tmp_path.rglob("escaped-*"))
    assert len(open_dataset(f"bundle:{evil}", cache_root=victim / "cache")) == 40


# -- dashboard: one user's uploads are not another's ------------------------------------------
def test_uploads_are_private_to_their_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("PARALLAX_CACHE", str(tmp_path / "cache"))
    page = str(REPO / "pages" / "data.py")
    alice, bob = (AppTest.from_file(page, default_timeout=120) for _ in range(2))
    alice.run()
    bob.run()
    assert not alice.exception and not bob.exception
    files = [(n, d, "image/png") for n, (d, _) in odd_good_files().items() if n.endswith("png")]
    files.append(("bomb.png", hostile_files()["bomb.png"][0], "image/png"))
    alice.file_uploader(key="data_upload_files").set_value(files)
    alice.run()
    assert not alice.exception, alice.exception
    from engine.store.cache import Cache
    from engine.store.links import resolve_link

    def staged(public: str) -> str:  # pages hold upload:<token>/<name>, never the path
        assert public.startswith("upload:") and str(tmp_path) not in public
        return resolve_link(public, Cache(tmp_path / "cache"))[0]

    spec = alice.session_state["dataset_spec"]
    assert staged(spec).startswith("folder:")
    items = next(m.value for m in alice.metric if m.label == "Items")
    assert items == str(len(files) - 1)  # the bomb is skipped, the rest loads
    uploads = (tmp_path / "cache").resolve() / "uploads"
    a_id = alice.session_state["_parallax_session"]
    assert Path(staged(spec).removeprefix("folder:")).is_relative_to(uploads / a_id)
    # Bob uploads his own file: his own folder, and nothing of Alice's shows on his page.
    bob.file_uploader(key="data_upload_files").set_value([("mine.png", _png((9, 9)), "image/png")])
    bob.run()
    assert not bob.exception, bob.exception
    b_id = bob.session_state["_parallax_session"]
    bob_spec = bob.session_state["dataset_spec"]
    assert a_id != b_id and bob_spec != spec
    assert Path(staged(bob_spec).removeprefix("folder:")).is_relative_to(uploads / b_id)
    assert next(m.value for m in bob.metric if m.label == "Items") == "1"
    shown = " ".join(str(e.value) for e in [*bob.code, *bob.markdown, *bob.caption, *bob.success])
    assert a_id not in shown and spec not in shown and "mine.png" in shown
    assert b_id not in shown and str(uploads) not in shown  # no server path, not even his own
    alice.run()  # and Alice still has her own dataset
    assert alice.session_state["dataset_spec"] == spec
