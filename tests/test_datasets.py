"""engine.data: spec parsing, demos, safe image decoding, folders, manifests, archives.

Every hostile input (truncated files, decompression bombs, escaping paths, zip-slip members,
zip bombs) is generated here, inside ``tmp_path``.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import socket
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from engine import settings
from engine.data import Dataset, dataset_item, dataset_thumbnail, list_demos, open_dataset
from engine.data import images as images_mod
from engine.data.archive import safe_member_name
from engine.data.images import open_image_safely
from engine.data.manifest import ManifestDataset
from engine.errors import DatasetError, ItemError
from engine.store.progress import Progress

MakeImage = Callable[..., Path]


# -- helpers ----------------------------------------------------------------------------------
def png_bytes(size: tuple[int, int] = (8, 8), colour: object = (10, 200, 10), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def huge_header_png(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares ``width`` x ``height`` greyscale pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def reasons(ds: Dataset) -> dict[str, str]:
    return {s.source: s.reason for s in ds.skipped}


def no_decoding(*_: object, **__: object) -> None:
    raise AssertionError("an image was decoded again although its check was cached")


# -- specs and demos --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty dataset spec"),
        ("nosuchkind:whatever", "unknown dataset spec"),
        ("demo:nope", "unknown demo"),
        ("demo:digits?n=3", "takes no parameters"),
        ("folder:", "needs a path"),
    ],
)
def test_bad_specs_raise_one_line(spec: str, message: str, cache_root: Path) -> None:
    with pytest.raises(DatasetError, match=message) as info:
        open_dataset(spec, cache_root=cache_root)
    assert "\n" not in str(info.value)


def test_missing_paths_raise_dataset_error(tmp_path: Path, cache_root: Path) -> None:
    for kind in ("folder", "manifest", "zip", "tar"):
        with pytest.raises(DatasetError, match="not found"):
            open_dataset(f"{kind}:{tmp_path / 'missing'}", cache_root=cache_root)


def test_bare_path_gets_a_hint(tmp_path: Path, cache_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"did you mean folder:"):
        open_dataset(str(tmp_path), cache_root=cache_root)


def test_list_demos_describes_every_demo() -> None:
    demos = {d["spec"]: d for d in list_demos()}
    assert set(demos) == {"demo:digits", "demo:shapes", "demo:sentences"}
    assert demos["demo:digits"]["modalities"] == ["image"]
    assert demos["demo:sentences"]["modalities"] == ["text"]
    assert demos["demo:sentences"]["size"] >= 300
    assert all(d["description"] for d in demos.values())


def test_digits_demo(cache_root: Path) -> None:
    ds = open_dataset("demo:digits", cache_root=cache_root)
    assert isinstance(ds, Dataset)
    assert len(ds) == 1797 and ds.ids[0] == "digits-0000" and ds.ids[-1] == "digits-1796"
    assert ds.texts is None and ds.has_images and ds.skipped == []
    assert set(ds.labels) == {str(d) for d in range(10)}
    meta = ds.metadata()
    assert list(meta.columns) == ["digit"] and meta["digit"].dtype == np.int64
    assert [str(d) for d in meta["digit"]] == ds.labels
    image = ds.load_image(0)
    assert image.mode == "RGB" and image.size == (64, 64)
    pixels = np.asarray(image)
    # Nearest upscale: every 8x8 block is one flat value; ink is darker than the page.
    assert (pixels[:8, :8] == pixels[0, 0]).all()
    assert pixels.min() < 100 and pixels.max() > 200
    with pytest.raises(ItemError):
        ds.load_image(1797)
    again = open_dataset("demo:digits", cache_root=cache_root)
    assert again.fingerprint() == ds.fingerprint() and len(ds.fingerprint()) == 64


def test_sentences_demo(cache_root: Path) -> None:
    ds = open_dataset("demo:sentences", cache_root=cache_root)
    assert isinstance(ds, Dataset)
    assert len(ds) >= 300 and not ds.has_images
    assert ds.texts is not None and len(set(ds.texts)) == len(ds)  # no duplicates
    topics = set(ds.labels)
    assert 6 <= len(topics) <= 8
    assert ds.ids[0] == "sentences-0000"
    assert all(t and t.endswith(".") and t[0].isupper() for t in ds.texts)
    with pytest.raises(ItemError):
        ds.load_image(0)
    assert ds.item(3).text == ds.texts[3] and ds.item(3).label == ds.labels[3]
    assert open_dataset("demo:sentences").fingerprint() == ds.fingerprint()


def test_shapes_spec_is_wired(cache_root: Path) -> None:
    shapes = pytest.importorskip("engine.data.shapes")
    assert hasattr(shapes, "open_shapes")
    ds = open_dataset("demo:shapes?n=150&seed=2", cache_root=cache_root)
    assert len(ds) == 150 and ds.has_images and ds.texts is not None
    default = open_dataset("demo:shapes", cache_root=cache_root)
    assert len(default) == 2000
    assert default.fingerprint() == open_dataset("demo:shapes?n=2000&seed=0").fingerprint()
    with pytest.raises(DatasetError, match="must be an integer"):
        open_dataset("demo:shapes?n=lots", cache_root=cache_root)
    with pytest.raises(DatasetError, match="unknown parameter"):
        open_dataset("demo:shapes?colour=red", cache_root=cache_root)
    # The shared helpers work on any Dataset, including ones not built on DatasetBase.
    item = dataset_item(ds, 3)
    assert item.id == ds.ids[3] and item.text == ds.texts[3] and "colour" in item.metadata
    assert dataset_thumbnail(ds, 3, size=16).size == (16, 16)


# -- safe image decoding ----------------------------------------------------------------------
def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a jpeg at all\n" * 20)
    with pytest.raises(ItemError, match="not an image"):
        open_image_safely(fake, name="photo.jpg")


def test_format_comes_from_content_not_extension(tmp_path: Path) -> None:
    misnamed = tmp_path / "really_png.jpg"
    misnamed.write_bytes(png_bytes((5, 7)))
    assert open_image_safely(misnamed, name="x").size == (5, 7)


def test_empty_and_oversized_files_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ItemError, match="empty file"):
        open_image_safely(empty, name="empty.png")
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes((64, 64)))
    monkeypatch.setattr(settings, "MAX_IMAGE_FILE_BYTES", 50)
    with pytest.raises(ItemError, match="file too large"):
        open_image_safely(big, name="big.png")


def test_truncated_png_is_reported(tmp_path: Path) -> None:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    with pytest.raises(ItemError, match="truncated or corrupt image"):
        open_image_safely(data[: len(data) // 2], name="cut.png")


def test_decompression_bomb_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # Far past every limit: Pillow's own guard or ours must refuse it without decoding.
    with pytest.raises(ItemError, match="decompression bomb"):
        open_image_safely(huge_header_png(100_000, 100_000), name="bomb.png")
    # Just past our (lowered) limit: our own pre-decode check names the dimensions.
    monkeypatch.setattr(settings, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ItemError, match=r"40x40 = .*decompression bomb"):
        open_image_safely(png_bytes((40, 40)), name="medium.png")
    assert open_image_safely(png_bytes((30, 30)), name="small.png").size == (30, 30)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = open_image_safely(path, name="rotated.jpg")
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 3)), upright.getpixel((10, 36))
    assert top[0] > 200 and top[2] < 60  # the red half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path, make_image: MakeImage) -> None:
    path = make_image(tmp_path / "cmyk.jpg", colour=(0, 255, 255, 0), mode="CMYK")
    assert Image.open(path).mode == "CMYK"
    rgb = open_image_safely(path, name="cmyk.jpg")
    r, g, b = rgb.getpixel((8, 8))
    assert rgb.mode == "RGB" and r > 230 and g < 30 and b < 30


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = open_image_safely(path, name="deep.png")
    grey = np.asarray(rgb)[0, :, 0]
    assert rgb.mode == "RGB" and grey.tolist() == [0, 128, 255, 4]


def test_palette_and_alpha_modes(tmp_path: Path, make_image: MakeImage) -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 250] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert open_image_safely(tmp_path / "palette.png", name="p").getpixel((0, 0)) == (10, 20, 250)

    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # fully transparent red ...
    rgba.putpixel((1, 0), (0, 0, 255, 255))  # ... next to opaque blue
    rgba.save(tmp_path / "alpha.png")
    flat = open_image_safely(tmp_path / "alpha.png", name="a")
    assert flat.mode == "RGB"
    assert flat.getpixel((0, 0)) == (255, 255, 255) and flat.getpixel((1, 0)) == (0, 0, 255)

    make_image(tmp_path / "la.png", colour=(0, 128), mode="LA")
    grey = open_image_safely(tmp_path / "la.png", name="la").getpixel((0, 0))
    assert grey[0] == grey[1] == grey[2] and 120 < grey[0] < 135  # black at half alpha on white

    transparent_p = Image.new("P", (3, 3), 0)
    transparent_p.putpalette([9, 9, 9] * 256)
    transparent_p.save(tmp_path / "tp.png", transparency=0)
    assert open_image_safely(tmp_path / "tp.png", name="tp").getpixel((1, 1)) == (255, 255, 255)


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    r, _, b = open_image_safely(path, name="anim.gif").getpixel((5, 5))
    assert r > 200 and b < 50


def test_dataset_helpers_item_and_thumbnail(cache_root: Path) -> None:
    ds = open_dataset("demo:digits", cache_root=cache_root)
    item = ds.item(7)  # type: ignore[attr-defined]
    assert item.id == "digits-0007" and item.label == ds.labels[7]
    assert item.metadata == {"digit": int(ds.labels[7])} and item.has_image
    assert ds.thumbnail(7, size=32).size == (32, 32)  # type: ignore[attr-defined]


# -- folders ----------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path: Path, make_image: MakeImage) -> Path:
    root = tmp_path / "pets"
    make_image(root / "cats" / "a.png", size=(10, 6))
    make_image(root / "cats" / "b.jpg", size=(12, 12))
    make_image(root / "dogs" / "deep" / "c.webp", size=(7, 9))
    make_image(root / "dogs" / "d.bmp", size=(4, 4))
    make_image(root / "top.gif", size=(5, 5), colour=3, mode="P")
    (root / "notes.txt").write_text("not an image, ignored")
    (root / ".hidden.png").write_bytes(png_bytes())
    # Broken items, each with its own reason.
    (root / "cats" / "empty.png").write_bytes(b"")
    (root / "cats" / "text.jpg").write_text("hello, I am text")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)).save(
        noisy, "PNG"
    )
    (root / "dogs" / "cut.png").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])
    (root / "dogs" / "bomb.png").write_bytes(huge_header_png(50_000, 50_000))
    # Links: one escaping the folder, one staying inside.
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes())
    (root / "cats" / "escape.png").symlink_to(outside)
    (root / "cats" / "alias.png").symlink_to(root / "cats" / "a.png")
    (root / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    return root


def test_folder_lists_labels_and_skips_bad_items(image_folder: Path, cache_root: Path) -> None:
    ds = open_dataset(f"folder:{image_folder}", cache_root=cache_root)
    assert isinstance(ds, Dataset) and ds.has_images and ds.texts is None
    assert ds.ids == [  # sorted by path components: deterministic whatever the filesystem
        "cats/a.png",
        "cats/alias.png",
        "cats/b.jpg",
        "dogs/d.bmp",
        "dogs/deep/c.webp",
        "top.gif",
    ]
    assert ds.labels == ["cats", "cats", "cats", "dogs", "dogs", None]
    why = reasons(ds)
    assert why["cats/empty.png"] == "empty file (0 bytes)"
    assert "not an image" in why["cats/text.jpg"]
    assert why["dogs/cut.png"] == "truncated or corrupt image"
    assert "decompression bomb" in why["dogs/bomb.png"]
    assert why["cats/escape.png"] == "symlink points outside the folder"
    assert why["linked_dir"] == "symlink points outside the folder"
    assert "notes.txt" not in why and ".hidden.png" not in why
    meta = ds.metadata()
    assert list(meta.columns) == ["path", "width", "height"]
    assert meta.loc[0].tolist() == ["cats/a.png", 10, 6]
    assert meta.loc[4].tolist() == ["dogs/deep/c.webp", 7, 9]
    assert ds.load_image(4).size == (7, 9) and ds.load_image(5).mode == "RGB"


def test_folder_checks_are_cached_and_fingerprint_is_stable(
    image_folder: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = open_dataset(f"folder:{image_folder}", cache_root=cache_root)
    assert list((cache_root / "checks").glob("*.json"))
    monkeypatch.setattr(images_mod, "open_image_safely", no_decoding)
    second = open_dataset(f"folder:{image_folder}", cache_root=cache_root)  # no decode at all
    assert second.ids == first.ids and reasons(second) == reasons(first)
    assert second.fingerprint() == first.fingerprint()
    monkeypatch.undo()
    fresh = open_dataset(f"folder:{image_folder}", cache_root=cache_root / "other")
    assert fresh.fingerprint() == first.fingerprint()


def test_folder_fingerprint_changes_with_one_byte(
    tmp_path: Path, make_image: MakeImage, cache_root: Path
) -> None:
    root = tmp_path / "imgs"
    bmp = make_image(root / "x.bmp", size=(4, 4), colour=(10, 10, 10))
    make_image(root / "y.png")
    before = open_dataset(f"folder:{root}", cache_root=cache_root).fingerprint()
    data = bytearray(bmp.read_bytes())
    data[-1] ^= 0x01  # one pixel byte: still a valid BMP, same size
    bmp.write_bytes(bytes(data))
    stat = bmp.stat()
    os.utime(bmp, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    after = open_dataset(f"folder:{root}", cache_root=cache_root)
    assert len(after) == 2 and after.fingerprint() != before


def test_folder_open_reports_progress(image_folder: Path, cache_root: Path) -> None:
    seen: list[Progress] = []
    open_dataset(f"folder:{image_folder}", cache_root=cache_root, progress=seen.append)
    assert seen and seen[-1].done == seen[-1].total == 10  # 6 usable + 4 broken image files
    assert seen[-1].stage == "checking images"
    seen.clear()  # reopening from the cache still reports completion
    open_dataset(f"folder:{image_folder}", cache_root=cache_root, progress=seen.append)
    assert [(p.done, p.total) for p in seen] == [(10, 10)]


def test_folder_without_usable_images_is_an_error(tmp_path: Path, cache_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        open_dataset(f"folder:{tmp_path / 'empty'}", cache_root=cache_root)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_text("nope")
    with pytest.raises(DatasetError, match="no usable images"):
        open_dataset(f"folder:{tmp_path / 'bad'}", cache_root=cache_root)


# -- manifests --------------------------------------------------------------------------------
@pytest.fixture
def manifest_dir(tmp_path: Path, make_image: MakeImage) -> Path:
    base = tmp_path / "set"
    make_image(base / "imgs" / "one.png", size=(6, 6))
    make_image(base / "imgs" / "two.jpg", size=(9, 3))
    (base / "imgs" / "broken.png").write_text("not a png")
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (base / "imgs" / "sneaky.png").symlink_to(secret)
    return base


def _manifest_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "Image": [
                "imgs/one.png",
                "imgs/two.jpg",
                "../secret.png",
                "/etc/passwd",
                "imgs/sneaky.png",
                "imgs/missing.png",
                "ftp://example.com/x.png",
                "imgs/broken.png",
            ],
            "Label": ["x", "y", "x", "y", "x", "y", "x", "y"],
            "score": [1, 2, 3, 4, 5, 6, 7, 8],
            "weight": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5],
        }
    )


def _check_manifest(ds: Dataset) -> None:
    assert isinstance(ds, ManifestDataset)
    assert ds.ids == ["a", "b"] and ds.labels == ["x", "y"]
    assert ds.has_images and ds.texts is None
    why = reasons(ds)
    assert why["row 2 (c)"] == "path points outside the manifest's folder"
    assert why["row 3 (d)"].startswith("absolute path not allowed")
    assert why["row 4 (e)"] == "path points outside the manifest's folder"
    assert why["row 5 (f)"] == "file not found"
    assert why["row 6 (g)"].startswith("unsupported URL scheme 'ftp'")
    assert "not an image" in why["row 7 (h)"]
    meta = ds.metadata()
    assert list(meta.columns) == ["score", "weight"]
    assert meta["score"].tolist() == [1, 2] and meta["score"].dtype == np.int64
    assert meta["weight"].dtype == np.float64
    assert ds.load_image(1).size == (9, 3)


def test_csv_manifest(manifest_dir: Path, cache_root: Path) -> None:
    path = manifest_dir / "data.csv"
    _manifest_frame().to_csv(path, index=False)
    _check_manifest(open_dataset(f"manifest:{path}", cache_root=cache_root))


def test_parquet_manifest(manifest_dir: Path, cache_root: Path) -> None:
    path = manifest_dir / "data.parquet"
    _manifest_frame().to_parquet(path, index=False)
    _check_manifest(open_dataset(f"manifest:{path}", cache_root=cache_root))


def test_jsonl_manifest_skips_bad_lines(manifest_dir: Path, cache_root: Path) -> None:
    path = manifest_dir / "data.jsonl"
    lines = _manifest_frame().to_json(orient="records", lines=True).strip().splitlines()
    path.write_text("\n".join([*lines[:4], "{broken json", *lines[4:]]) + "\n")
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    _check_manifest(ds)
    assert reasons(ds)["data.jsonl line 5"] == "invalid JSON"


def test_text_manifest_latin1_and_truncation(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "MAX_TEXT_CHARS", 12)
    path = tmp_path / "texts.csv"
    body = "caption,category,id\ncafé crème brûlée,food,1\n,empty,2\nshort,x,3\n"
    path.write_bytes(body.encode("latin-1"))  # not UTF-8
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert not ds.has_images
    assert ds.texts == ["café crème b", "short"]
    assert ds.ids == ["1", "3"] and ds.labels == ["food", "x"]
    assert reasons(ds) == {"row 1 (2)": "no image and no text"}
    with pytest.raises(ItemError):
        ds.load_image(0)


def test_manifest_keeps_text_rows_whose_image_failed(manifest_dir: Path, cache_root: Path) -> None:
    path = manifest_dir / "mixed.csv"
    pd.DataFrame(
        {
            "file": ["imgs/one.png", "imgs/missing.png", "imgs/missing.png"],
            "text": ["a red square", "lost picture", None],
        }
    ).to_csv(path, index=False)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert ds.ids == ["0", "1"] and ds.texts == ["a red square", "lost picture"]
    assert ds.has_images and ds.load_image(0).size == (6, 6)
    with pytest.raises(ItemError, match="file not found"):
        ds.load_image(1)
    assert reasons(ds) == {"row 2": "file not found"}


def test_parquet_inline_image_bytes(tmp_path: Path, cache_root: Path) -> None:
    path = tmp_path / "inline.parquet"
    cells = [{"bytes": png_bytes((3, 5)), "path": "a.png"}, {"bytes": b"junk", "path": None}]
    pd.DataFrame({"image": cells, "label": [1, 2]}).to_parquet(path)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert ds.ids == ["0"] and ds.labels == ["1"] and ds.load_image(0).size == (3, 5)
    assert "not an image" in reasons(ds)["row 1"]


def test_manifest_fingerprint_tracks_texts(tmp_path: Path, cache_root: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "alpha"}\n{"text": "beta"}\n')
    first = open_dataset(f"manifest:{path}", cache_root=cache_root).fingerprint()
    assert open_dataset(f"manifest:{path}", cache_root=cache_root).fingerprint() == first
    path.write_text('{"text": "alpha"}\n{"text": "betA"}\n')
    assert open_dataset(f"manifest:{path}", cache_root=cache_root).fingerprint() != first


def test_manifest_without_known_columns(tmp_path: Path, cache_root: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(DatasetError, match="no image column"):
        open_dataset(f"manifest:{path}", cache_root=cache_root)


@pytest.fixture
def http_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over a temp folder (no internet needed). Loopback URLs are
    refused by default (SSRF guard), so this fixture opts in with PARALLAX_ALLOW_PRIVATE_URLS."""
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_manifest_urls_download_once_and_fail_per_item(
    tmp_path: Path, cache_root: Path, http_folder: tuple[str, Path]
) -> None:
    url_base, served = http_folder
    (served / "pic.png").write_bytes(png_bytes((11, 4)))
    good = f"{url_base}/pic.png"
    dead = f"http://127.0.0.1:{_closed_port()}/x.png"
    path = tmp_path / "urls.csv"
    pd.DataFrame({"url": [good, f"{url_base}/nothing.png", dead]}).to_csv(path, index=False)
    ds = open_dataset(f"manifest:{path}", cache_root=cache_root)
    assert len(ds) == 1 and ds.load_image(0).size == (11, 4)
    # One entry of the downloads namespace per manifest, one file per URL in it.
    group = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    stored = cache_root / "downloads" / group / hashlib.sha256(good.encode()).hexdigest()
    assert stored.read_bytes() == (served / "pic.png").read_bytes()
    why = reasons(ds)
    assert why["row 1"] == "could not download URL: HTTP 404"
    assert why["row 2"].startswith("could not download URL:")
    (served / "pic.png").unlink()  # reopening reuses the download
    assert open_dataset(f"manifest:{path}", cache_root=cache_root).fingerprint() == ds.fingerprint()


# -- archives ---------------------------------------------------------------------------------
def _zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0x20  # S_IFLNK | rwx: a Unix symlink
            zf.writestr(info, target)
    return path


def test_zip_of_a_folder_is_extracted_once(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip(
        tmp_path / "pets.zip",
        {
            "pets/cats/a.png": png_bytes((3, 3)),
            "pets/dogs/b.png": png_bytes((4, 4)),
            "pets/dogs/c.png": png_bytes((5, 5)),
            "__MACOSX/pets/._a.png": b"resource fork junk",
        },
    )
    ds = open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert ds.spec == f"zip:{archive}" and ds.name == "pets"
    assert ds.ids == ["cats/a.png", "dogs/b.png", "dogs/c.png"]
    assert ds.labels == ["cats", "dogs", "dogs"] and ds.skipped == []
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (cache_root / "extracted" / digest / ".complete").is_file()
    import engine.data.archive as archive_mod

    monkeypatch.setattr(archive_mod, "unpack_members", no_decoding)  # reuse, never re-extract
    again = open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert again.fingerprint() == ds.fingerprint() and again.load_image(2).size == (5, 5)


def test_hostile_zip_members_are_skipped(tmp_path: Path, cache_root: Path) -> None:
    archive = _zip(
        tmp_path / "evil.zip",
        {
            "ok/good.png": png_bytes((6, 6)),
            "../evil.png": png_bytes(),
            "../../escape.png": png_bytes(),
            "/tmp/absolute.png": png_bytes(),
            "C:/windows.png": png_bytes(),
            "ok/bomb.png": b"\x00" * (10 * 1024 * 1024),  # ~10 kB compressed: ratio ~1000
            "ok/inner.zip": b"PK\x05\x06" + b"\x00" * 18,
        },
        symlinks={"ok/link.png": "/etc/passwd"},
    )
    ds = open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert ds.ids == ["good.png"]  # the single top folder "ok/" is the dataset root
    why = reasons(ds)
    assert why["archive member ../evil.png"] == "path escapes the archive ('..')"
    assert why["archive member ../../escape.png"] == "path escapes the archive ('..')"
    assert why["archive member /tmp/absolute.png"] == "absolute path in archive"
    assert why["archive member C:/windows.png"] == "drive letter in archive path"
    assert "possible zip bomb" in why["archive member ok/bomb.png"]
    assert why["archive member ok/inner.zip"] == "nested archive not extracted"
    assert why["archive member ok/link.png"] == "symlink member not extracted"
    # Nothing landed outside the extraction folder, and the bomb was never inflated.
    names = {p.name for p in tmp_path.rglob("*")}
    assert not names & {"evil.png", "escape.png", "absolute.png", "windows.png"}
    extracted = next((cache_root / "extracted").iterdir())
    files = {p.relative_to(extracted).as_posix() for p in extracted.rglob("*") if p.is_file()}
    assert files == {"ok/good.png", ".complete", ".skipped.json"}


def test_zip_limits_refuse_the_whole_archive(
    tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _zip(tmp_path / "many.zip", {f"{i}.png": png_bytes() for i in range(5)})
    monkeypatch.setattr(settings, "MAX_ARCHIVE_MEMBERS", 3)
    with pytest.raises(DatasetError, match="5 members, over the limit of 3"):
        open_dataset(f"zip:{archive}", cache_root=cache_root)
    monkeypatch.setattr(settings, "MAX_ARCHIVE_MEMBERS", 100)
    monkeypatch.setattr(settings, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(DatasetError, match="over the limit"):
        open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert list((cache_root / "extracted").iterdir()) == []  # nothing half-extracted kept


def test_zip_with_a_manifest_opens_as_manifest(tmp_path: Path, cache_root: Path) -> None:
    archive = _zip(
        tmp_path / "captions.zip",
        {
            "set/captions.csv": b"image,caption\nimgs/a.png,a green square\nimgs/b.png,blue\n",
            "set/imgs/a.png": png_bytes((4, 4)),
            "set/imgs/b.png": png_bytes((5, 5), (0, 0, 255)),
        },
    )
    ds = open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert isinstance(ds, ManifestDataset) and ds.spec == f"zip:{archive}"
    assert ds.texts == ["a green square", "blue"] and ds.has_images
    assert ds.load_image(1).getpixel((0, 0)) == (0, 0, 255)


def test_not_a_zip(tmp_path: Path, cache_root: Path) -> None:
    fake = tmp_path / "fake.zip"
    fake.write_text("plain text")
    with pytest.raises(DatasetError, match="not a zip archive"):
        open_dataset(f"zip:{fake}", cache_root=cache_root)


def test_tar_archive_with_hostile_members(tmp_path: Path, cache_root: Path) -> None:
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add("a/one.png", png_bytes((3, 2)))
        add("../up.png", png_bytes())
        link = tarfile.TarInfo("a/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    ds = open_dataset(f"tar:{archive}", cache_root=cache_root)
    assert ds.ids == ["one.png"] and ds.name == "set"
    why = reasons(ds)
    assert why["archive member ../up.png"] == "path escapes the archive ('..')"
    assert why["archive member a/link.png"] == "link member not extracted"
    assert not (tmp_path / "up.png").exists()
    # zip: accepts a tar as well, and reuses the same extraction.
    assert open_dataset(f"zip:{archive}", cache_root=cache_root).fingerprint() == ds.fingerprint()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a/b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        ("./a//b.png", "a/b.png"),
        ("a/../../b", "path escapes the archive ('..')"),
        ("/x", "absolute path in archive"),
        ("\\\\server\\share", "absolute path in archive"),
        ("D:evil", "drive letter in archive path"),
        ("a\x00b", "name contains a NUL character"),
    ],
)
def test_safe_member_name(raw: str, expected: str) -> None:
    assert str(safe_member_name(raw)) == expected


def test_tar_bomb_is_refused(tmp_path: Path, cache_root: Path) -> None:
    archive = tmp_path / "bomb.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.png")
        info.size = 20 * 1024 * 1024
        tf.addfile(info, io.BytesIO(b"\x00" * info.size))
    assert archive.stat().st_size < 100_000
    with pytest.raises(DatasetError, match="possible archive bomb"):
        open_dataset(f"tar:{archive}", cache_root=cache_root)
    assert not any(p.is_file() for p in (cache_root / "extracted").rglob("*"))
