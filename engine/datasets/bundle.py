"""``bundle:PATH``: a Parallax bundle opened as a dataset source (the reader half of bundles).

A bundle is one zip file written by ``engine.bundle.write_bundle``; the layout::

    manifest.json            format, version, dataset, models, projections, checksums
    items.parquet            id, label, text and every metadata column, in dataset order
    thumbs.parquet           id, WebP thumbnail bytes (image datasets)
    vectors/<i>.npy          model i's vectors as float16 (halves the size; cosine error ~1e-3)
    coords/<i>-<method>.npy  2-D maps, float32
    neighbors/<i>.npy        each item's k nearest neighbours in model i's space, int32

Opening a bundle validates it (format, version, every member's SHA-256, shapes) and installs
its vectors and maps into a cache under the same keys the engine would have used, so every page
finds them exactly as if they had been computed here. Nothing here imports torch, and nothing
here embeds or projects: reading needs no model.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.cache import Cache, atomic_write_bytes, locked, make_key
from engine.datasets.base import SkippedItem
from engine.errors import DatasetError, ItemError, ParallaxError

BUNDLE_FORMAT = "parallax-bundle"
BUNDLE_VERSION = 1
THUMB_SIZE = 64
MAX_BUNDLE_MEMBERS = 10_000


class BundleError(ParallaxError):
    """A file is not a valid Parallax bundle (corrupt, foreign, or from a newer version)."""


def peek_manifest(source: str | Path | IO[bytes]) -> dict[str, Any] | None:
    """A bundle's ``manifest.json`` (not validated: ``open_bundle`` does that), or None when
    ``source`` (a path or a binary file object) is not a zip with a Parallax manifest. Reads
    only that one member, and only when it is small."""
    try:
        with zipfile.ZipFile(source) as zf:
            info = zf.getinfo("manifest.json")
            if info.file_size > 16 * 1024 * 1024:
                return None
            manifest = json.loads(zf.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        return None
    return manifest


def member_digest(data: bytes) -> str:
    """The SHA-256 a bundle's manifest records for each member."""
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (no pickles)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# -- reading ---------------------------------------------------------------------------------
@dataclass
class BundleDataset:
    """A bundle's dataset snapshot: follows the Dataset protocol, images are the thumbnails."""

    spec: str
    name: str
    ids: list[str]
    labels: list[str | None]
    texts: list[str | None] | None
    has_images: bool
    skipped: list[SkippedItem]
    _fingerprint: str
    _metadata: Any
    _thumbs: list[bytes | None] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def load_image(self, index: int) -> Any:
        from engine.datasets.images import open_image_safely

        if not self._thumbs or self._thumbs[index] is None:
            raise ItemError("this bundle has no image for this item")
        # Same format allow-list and size checks as any user file: a bundle is user input.
        return open_image_safely(bytes(self._thumbs[index]), name=self.ids[index])

    def thumbnail(self, index: int, size: int = THUMB_SIZE) -> Any:
        image = self.load_image(index)
        image.thumbnail((size, size))
        return image

    def metadata(self) -> Any:
        return self._metadata

    def fingerprint(self) -> str:
        return self._fingerprint


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    dataset: BundleDataset
    cache: Cache

    @property
    def model_specs(self) -> list[str]:
        return [m["spec"] for m in self.manifest["models"]]

    def neighbors(self, model_index: int) -> np.ndarray:
        name = self.manifest["models"][model_index]["neighbors"]
        return np.load(self.cache.path("bundles", self._key) / name)

    @property
    def _key(self) -> str:
        return self.manifest["files"]["items.parquet"][:32]


def _read_member(zf: zipfile.ZipFile, name: str, files: dict[str, str]) -> bytes:
    if name not in files:
        raise BundleError(f"bundle manifest does not list {name}")
    try:
        data = zf.read(name)
    except KeyError as exc:
        raise BundleError(f"bundle is missing {name}") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleError(f"bundle member {name} is corrupt: {exc}") from exc
    if member_digest(data) != files[name]:
        raise BundleError(f"bundle member {name} does not match its checksum (corrupt file)")
    return data


def _load_npy(data: bytes, name: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BundleError(f"bundle member {name} is not a NumPy array: {exc}") from exc


def open_bundle(path: str | Path, *, cache: Cache | None = None) -> Bundle:
    """Validate a bundle and install its vectors and maps into ``cache``.

    Raises ``BundleError`` with one line for anything that is not a valid bundle of a version
    this code reads. Installing is idempotent and guarded by the cache's file lock.
    """
    import pandas as pd

    path = Path(path)
    cache = cache or Cache()
    if not path.is_file():
        raise BundleError(f"no bundle file at {path}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path.name} is not a Parallax bundle (not a zip file)") from exc
    with zf:
        names = zf.namelist()
        if len(names) > MAX_BUNDLE_MEMBERS:
            raise BundleError(f"{path.name} has too many members to be a bundle")
        if "manifest.json" not in names:
            raise BundleError(f"{path.name} is not a Parallax bundle (no manifest.json)")
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise BundleError(f"{path.name}: manifest.json is unreadable") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path.name} is not a Parallax bundle (foreign manifest)")
        version = manifest.get("version")
        if not isinstance(version, int) or version > BUNDLE_VERSION:
            raise BundleError(
                f"{path.name} is bundle version {version}; this Parallax reads up to "
                f"{BUNDLE_VERSION}: upgrade Parallax"
            )
        files = manifest.get("files") or {}
        for name in files:
            if name.startswith("/") or ".." in Path(name).parts or name not in names:
                raise BundleError(f"{path.name}: bad or missing member {name!r}")

        items = pd.read_parquet(io.BytesIO(_read_member(zf, "items.parquet", files)))
        ds_meta = manifest["dataset"]
        n = int(ds_meta["n"])
        if len(items) != n:
            raise BundleError(f"{path.name}: items table has {len(items)} rows, expected {n}")
        thumbs = None
        if manifest.get("thumbs"):
            t = pd.read_parquet(io.BytesIO(_read_member(zf, manifest["thumbs"], files)))
            thumbs = list(t["thumb"])
        texts = list(items["text"]) if ds_meta.get("has_texts") else None
        dataset = BundleDataset(
            spec=f"bundle:{path}",
            name=f"{ds_meta.get('name', 'bundle')} (bundle)",
            ids=[str(x) for x in items["id"]],
            labels=[None if pd.isna(x) else str(x) for x in items["label"]],
            texts=texts,
            has_images=bool(ds_meta.get("has_images")),
            skipped=[SkippedItem(s["source"], s["reason"]) for s in ds_meta.get("skipped", [])],
            _fingerprint=str(ds_meta["fingerprint"]),
            _metadata=items.drop(columns=["id", "label", "text"]).reset_index(drop=True),
            _thumbs=thumbs,
        )
        bundle = Bundle(path, manifest, dataset, cache)
        install_key = make_key(kind="bundle-install", files=files)
        # The installed neighbour lists stay (prune skips them) while this bundle is open.
        cache.lease("bundles", bundle._key).bind(bundle)
        cache.touch(cache.path("bundles", bundle._key))
        with locked(cache.root, install_key):
            _install(zf, manifest, files, cache, n, bundle)
    return bundle


def _install(
    zf: zipfile.ZipFile,
    manifest: dict[str, Any],
    files: dict[str, str],
    cache: Cache,
    n: int,
    bundle: Bundle,
) -> None:
    """Write the bundle's arrays as cache entries under the keys the engine itself uses."""
    for i, model in enumerate(manifest["models"]):
        key = model["vectors_key"]
        if model.get("vectors") and cache.get("vectors", key) is None:
            vectors = _load_npy(_read_member(zf, model["vectors"], files), model["vectors"])
            if vectors.shape != (n, int(model["dim"])):
                raise BundleError(f"bundle vectors {i} have shape {vectors.shape}")
            cache.put("vectors", key, vectors.astype(np.float32), model["vectors_manifest"])
        nbr = _load_npy(_read_member(zf, model["neighbors"], files), model["neighbors"])
        if nbr.ndim != 2 or len(nbr) != n or (nbr.size and (nbr.min() < 0 or nbr.max() >= n)):
            raise BundleError(f"bundle neighbour lists {i} are malformed")
        target = cache.path("bundles", bundle._key) / model["neighbors"]
        if not target.is_file():
            atomic_write_bytes(target, npy_bytes(nbr))
    for proj in manifest["projections"]:
        coords = _load_npy(_read_member(zf, proj["path"], files), proj["path"])
        if coords.shape != (n, 2) or not np.isfinite(coords).all():
            raise BundleError(f"bundle map {proj['path']} is malformed")
        if cache.get("projections", proj["key"]) is None:
            source = manifest["models"][proj["model"]]["vectors_key"]
            cache.put(
                "projections",
                proj["key"],
                coords,
                {"source": source, "method": proj["method"], "params": proj["params"], "n": n},
            )


def open_bundle_dataset(path: str | Path, cache_root: Path | None = None) -> BundleDataset:
    """``bundle:PATH`` as a dataset spec (used by ``engine.datasets.open_dataset``)."""
    try:
        return open_bundle(path, cache=Cache(cache_root)).dataset
    except BundleError as exc:
        raise DatasetError(str(exc)) from exc
