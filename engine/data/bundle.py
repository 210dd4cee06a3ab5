"""``bundle:PATH``: a Parallax bundle opened as a dataset source (the reader half of bundles).

A bundle is one zip file written by ``engine.outputs.bundle.write_bundle``; the layout::

    manifest.json            format, version, dataset, models, projections, checksums
    items.parquet            id, label, text and every metadata column, in dataset order
    thumbs.parquet           id, WebP thumbnail bytes (image datasets)
    vectors/<i>.npy          model i's vectors as float16 (halves the size; cosine error ~1e-3)
    coords/<i>-<method>.npy  2-D maps, float32
    neighbors/<i>.npy        each item's k nearest neighbours in model i's space, int32
    findings.json            optional: the findings under every model (``Findings.to_json``)

Opening a bundle validates it (format, version, declared sizes and ratios before inflating,
every member's SHA-256, row counts from the Parquet footers, shapes, finite values) and installs
its vectors and maps into a cache. A bundle is visitor input, so nothing it *claims* becomes a
key or a path: its dataset fingerprint is recomputed from the checksums of its members (its own
content), and its vectors and maps are installed under the engine's key recipes
(``engine.params``) applied to that fingerprint. Two copies of one bundle share entries; a bundle
claiming another dataset's fingerprint or keys lands in its own namespace and changes nothing
anyone else sees. Nothing here imports torch, and nothing here embeds or projects.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine import settings
from engine.data.base import DatasetBase, SkippedItem
from engine.errors import DatasetError, ItemError, ParallaxError
from engine.params import EmbedParams, ProjectionParams
from engine.store.cache import Cache, atomic_write_bytes, locked, make_key

BUNDLE_FORMAT = "parallax-bundle"
BUNDLE_VERSION = 1
THUMB_SIZE = 64
MAX_BUNDLE_MEMBERS = 10_000
MAX_MANIFEST_JSON_BYTES = 16 * 1024**2  # a real manifest is a few kB per model
RATIO_CHECK_FROM_BYTES = 1024**2  # tiny members may compress well; big ones must not balloon


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
class BundleDataset(DatasetBase):
    """A bundle's dataset snapshot: follows the Dataset protocol, images are the thumbnails."""

    def __init__(
        self,
        *,
        spec: str,
        name: str,
        ids: list[str],
        labels: list[str | None],
        texts: list[str | None] | None,
        has_images: bool,
        skipped: list[SkippedItem],
        fingerprint: str,
        metadata: Any,
        thumbs: list[bytes | None] | None = None,
    ) -> None:
        self.spec, self.name, self.ids, self.labels, self.texts = spec, name, ids, labels, texts
        self.has_images, self.skipped = has_images, skipped
        self._fingerprint, self._metadata, self._thumbs = fingerprint, metadata, thumbs

    def load_image(self, index: int) -> Any:
        from engine.data.images import open_image_safely

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

    def neighbours(self, model_index: int) -> np.ndarray:
        name = self.manifest["models"][model_index]["neighbors"]
        return np.load(self.cache.path("bundles", self._key) / name)

    @property
    def _key(self) -> str:
        # The recomputed fingerprint (all members), so no bundle can pre-fill another's folder.
        return self.dataset.fingerprint()[:32]


def _check_sizes(zf: zipfile.ZipFile, label: str) -> None:
    """Refuse a bundle by its declared sizes before inflating anything (zip bombs): total
    uncompressed bytes, and the ratio of each large member. ``zipfile`` never reads past a
    member's declared size, so these numbers bound what ``read`` can return."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > settings.MAX_ARCHIVE_BYTES:
        raise BundleError(
            f"{label} would inflate to {total / 1024**2:,.0f} MB, over the limit of "
            f"{settings.MAX_ARCHIVE_BYTES / 1024**2:,.0f} MB (PARALLAX_MAX_ARCHIVE_BYTES)"
        )
    for info in infos:
        if info.filename == "manifest.json" and info.file_size > MAX_MANIFEST_JSON_BYTES:
            raise BundleError(f"{label}: manifest.json is {info.file_size:,} bytes: not a bundle")
        if info.file_size > RATIO_CHECK_FROM_BYTES and (
            info.file_size > settings.MAX_ARCHIVE_RATIO * max(1, info.compress_size)
        ):
            ratio = info.file_size // max(1, info.compress_size)
            raise BundleError(
                f"{label}: member {info.filename} inflates {ratio:,}x (limit "
                f"{settings.MAX_ARCHIVE_RATIO}x, PARALLAX_MAX_ARCHIVE_RATIO): refused"
            )


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


def _parquet_rows(data: bytes, name: str) -> int:
    """Row count from a Parquet footer, without decoding a single value."""
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(io.BytesIO(data)).metadata.num_rows)
    except Exception as exc:  # pyarrow's errors vary by version: all mean "not Parquet"
        raise BundleError(f"bundle member {name} is not a Parquet table") from exc


def _read_table(data: bytes, name: str, n: int) -> Any:
    """A bundle table with exactly ``n`` rows, checked from its footer before decoding; text
    cells are capped while decoding (``engine.data.manifest.read_parquet_capped``)."""
    from engine.data.manifest import read_parquet_capped

    rows = _parquet_rows(data, name)
    if rows != n:
        raise BundleError(f"bundle table {name} has {rows:,} rows, expected {n:,}")
    try:
        return read_parquet_capped(io.BytesIO(data))
    except ParallaxError as exc:
        raise BundleError(f"bundle table {name}: {exc}") from exc


def bundle_fingerprint(files: dict[str, str]) -> str:
    """The dataset fingerprint of a bundle: a digest of its members' checksums, i.e. of its own
    verified content. Never the fingerprint the bundle claims."""
    blob = json.dumps(sorted(files.items()), separators=(",", ":"))
    return hashlib.sha256(f"parallax-bundle-dataset\0{blob}".encode()).hexdigest()


def _plan(manifest: dict[str, Any], names: list[str], label: str) -> dict[str, Any]:
    """The parts of a manifest this reader uses, type-checked: any malformed field is one
    ``BundleError`` line, never a ``KeyError`` or ``TypeError`` from deep inside."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise BundleError(f"{label}: malformed manifest ({what})")

    files = manifest.get("files")
    need(isinstance(files, dict) and all(isinstance(v, str) for v in files.values()), "files")
    for name, digest in files.items():
        if name.startswith("/") or ".." in Path(name).parts or name not in names:
            raise BundleError(f"{label}: bad or missing member {name!r}")
        need(len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), "checksum")
    need("items.parquet" in files, "no items.parquet")
    ds = manifest.get("dataset")
    need(isinstance(ds, dict), "dataset")
    n = ds.get("n")
    n_ok = isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= settings.MAX_ITEMS
    need(n_ok, "dataset n")
    models = manifest.get("models")
    need(isinstance(models, list) and models, "models")
    for m in models:
        need(isinstance(m, dict), "a model entry")
        need(isinstance(m.get("spec"), str) and 0 < len(m["spec"]) <= 300, "model spec")
        need(m.get("neighbors") in files, "model neighbours")
        need(m.get("vectors") is None or m.get("vectors") in files, "model vectors")
        dim = m.get("dim")
        need(isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim <= 65536, "dim")
        need(isinstance(m.get("vectors_manifest", {}), dict), "vectors manifest")
        need(isinstance(m.get("modality", ""), str), "modality")
    projections = manifest.get("projections", [])
    need(isinstance(projections, list), "projections")
    for pr in projections:
        need(isinstance(pr, dict) and pr.get("path") in files, "a projection")
        model = pr.get("model")
        need(isinstance(model, int) and 0 <= model < len(models), "projection model")
        need(pr.get("method") in ("umap", "pca"), "projection method")
        need(isinstance(pr.get("params", {}), dict), "projection params")
    thumbs = manifest.get("thumbs")
    need(thumbs is None or thumbs in files, "thumbs")
    found = manifest.get("findings")
    need(found is None or (isinstance(found, dict) and found.get("path") in files), "findings")
    skipped = ds.get("skipped", [])
    need(isinstance(skipped, list) and all(isinstance(x, dict) for x in skipped), "skipped")
    return {
        "files": files,
        "n": n,
        "models": models,
        "projections": projections,
        "findings": found,
    }


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
        _check_sizes(zf, path.name)
        try:
            manifest = json.loads(zf.read("manifest.json"))
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BundleError(f"{path.name}: manifest.json is unreadable") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path.name} is not a Parallax bundle (foreign manifest)")
        version = manifest.get("version")
        if not isinstance(version, int) or version > BUNDLE_VERSION:
            raise BundleError(
                f"{path.name} is bundle version {version}; this Parallax reads up to "
                f"{BUNDLE_VERSION}: upgrade Parallax"
            )
        plan = _plan(manifest, names, path.name)
        files, n = plan["files"], plan["n"]
        fingerprint = bundle_fingerprint(files)
        for model in plan["models"]:  # compact and ratio-checked: a lie about n shows here first
            nbr = _load_npy(_read_member(zf, model["neighbors"], files), model["neighbors"])
            if nbr.ndim != 2 or len(nbr) != n:
                raise BundleError(
                    f"{path.name}: neighbour lists do not have the {n:,} rows claimed"
                )

        items = _read_table(_read_member(zf, "items.parquet", files), "items.parquet", n)
        missing = {"id", "label", "text"} - set(items.columns)
        if missing:
            raise BundleError(f"{path.name}: items table lacks {', '.join(sorted(missing))}")
        thumbs = None
        if manifest.get("thumbs"):
            t = _read_table(_read_member(zf, manifest["thumbs"], files), manifest["thumbs"], n)
            if "thumb" not in t.columns:
                raise BundleError(f"{path.name}: thumbnails table lacks its thumb column")
            thumbs = list(t["thumb"])
        ds_meta = manifest["dataset"]
        texts = [_text_or_none(x) for x in items["text"]] if ds_meta.get("has_texts") else None
        dataset = BundleDataset(
            spec=f"bundle:{path}",
            name=f"{str(ds_meta.get('name', 'bundle'))[:200]} (bundle)",
            ids=[str(x) for x in items["id"]],
            labels=[None if pd.isna(x) else str(x) for x in items["label"]],
            texts=texts,
            has_images=bool(ds_meta.get("has_images")),
            skipped=[
                SkippedItem(str(s.get("source", "?"))[:500], str(s.get("reason", "?"))[:500])
                for s in ds_meta.get("skipped", [])
            ],
            fingerprint=fingerprint,
            metadata=items.drop(columns=["id", "label", "text"]).reset_index(drop=True),
            thumbs=thumbs,
        )
        bundle = Bundle(path, manifest, dataset, cache)
        install_key = make_key(kind="bundle-install", files=files)
        # The installed neighbour lists stay (prune skips them) while this bundle is open.
        cache.lease("bundles", bundle._key).bind(bundle)
        cache.touch(cache.path("bundles", bundle._key))
        with locked(cache.root, install_key):
            _install(zf, plan, files, cache, n, bundle)
    return bundle


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bundle_vectors_key(fingerprint: str, model: dict[str, Any]) -> str:
    """The engine's vectors-key recipe over the bundle's *recomputed* fingerprint: the claimed
    model identity can only name entries inside this bundle's own namespace."""
    vm = model.get("vectors_manifest") or {}
    return EmbedParams.vectors_key(
        fingerprint,
        str(vm.get("model_identity") or model["spec"]),
        str(model.get("modality") or vm.get("modality") or ""),
    )


def _install(
    zf: zipfile.ZipFile,
    plan: dict[str, Any],
    files: dict[str, str],
    cache: Cache,
    n: int,
    bundle: Bundle,
) -> None:
    """Write the bundle's arrays as cache entries under keys recomputed from its content."""
    fingerprint = bundle.dataset.fingerprint()
    keys: list[str] = []
    for i, model in enumerate(plan["models"]):
        key = _bundle_vectors_key(fingerprint, model)
        keys.append(key)
        model["vectors_key"] = key  # what the rest of the app reads: the recomputed key
        nbr = _load_npy(_read_member(zf, model["neighbors"], files), model["neighbors"])
        if (
            nbr.ndim != 2
            or len(nbr) != n
            or nbr.dtype.kind not in "iu"
            or (nbr.size and (nbr.min() < 0 or nbr.max() >= n))
        ):
            raise BundleError(f"bundle neighbour lists {i} are malformed")
        if model.get("vectors") and cache.get("vectors", key) is None:
            vectors = _load_npy(_read_member(zf, model["vectors"], files), model["vectors"])
            if vectors.shape != (n, int(model["dim"])) or vectors.dtype.kind != "f":
                raise BundleError(f"bundle vectors {i} have shape {vectors.shape}")
            if not np.isfinite(vectors).all():
                raise BundleError(f"bundle vectors {i} hold NaN or infinite values")
            vm = dict(model.get("vectors_manifest") or {})
            vm.update(
                dataset=bundle.dataset.spec,
                dataset_fingerprint=fingerprint,
                model=model["spec"],
                modality=str(model.get("modality") or vm.get("modality") or ""),
                n=n,
                dim=int(model["dim"]),
            )
            cache.put("vectors", key, vectors.astype(np.float32), vm)
        target = cache.path("bundles", bundle._key) / model["neighbors"]
        if not target.is_file():
            atomic_write_bytes(target, npy_bytes(nbr))
    for proj in plan["projections"]:
        coords = _load_npy(_read_member(zf, proj["path"], files), proj["path"])
        if coords.shape != (n, 2) or coords.dtype.kind != "f" or not np.isfinite(coords).all():
            raise BundleError(f"bundle map {proj['path']} is malformed")
        source = keys[proj["model"]]
        params = {str(k): v for k, v in (proj.get("params") or {}).items()}
        try:
            key = ProjectionParams(method=proj["method"], **params).cache_key(source)
        except (TypeError, ParallaxError) as exc:
            raise BundleError(f"bundle map {proj['path']} has unusable parameters") from exc
        proj["key"] = key
        if cache.get("projections", key) is None:
            cache.put(
                "projections",
                key,
                coords.astype(np.float32),
                {"source": source, "method": proj["method"], "params": params, "n": n},
            )
    if plan.get("findings"):
        _install_findings(zf, plan, files, cache, n, bundle, keys)


def _install_findings(
    zf: zipfile.ZipFile,
    plan: dict[str, Any],
    files: dict[str, str],
    cache: Cache,
    n: int,
    bundle: Bundle,
    keys: list[str],
) -> None:
    """The bundle's findings as the cache entry ``Workspace.find`` reads for this dataset and
    these models: checked field by field (rows in range, texts capped) and keyed, like the
    vectors, from the bundle's recomputed fingerprint and vectors keys. Findings of another
    findings version are left out (they would be keyed for nothing)."""
    from engine.analysis.findings import checked_findings
    from engine.analysis.findings_run import findings_key, labels_and_splits
    from engine.params import FINDINGS_VERSION
    from engine.store.cache import atomic_write_json

    name = plan["findings"]["path"]
    specs = [str(m["spec"]) for m in plan["models"]]
    try:
        found = checked_findings(json.loads(_read_member(zf, name, files)), n, specs)
        params = found.info["params"]
        if params.get("version") != FINDINGS_VERSION:
            return
        label_column = found.info.get("label_column")
        labels, splits, split_column = labels_and_splits(
            bundle.dataset, label_column, found.info.get("split_column")
        )
    except ValueError as exc:
        raise BundleError(f"bundle member {name} is not JSON") from exc
    except ParallaxError as exc:
        raise BundleError(f"bundle member {name}: {exc}") from exc
    columns = {"label_column": label_column, "split_column": split_column}
    key = findings_key(bundle.dataset, keys, labels, splits, columns, params)
    found.info.update(
        dataset=bundle.dataset.spec,
        **columns,
        key=key,
        vectors=dict(zip(specs, keys, strict=True)),
    )
    target = cache.path("findings", key)
    if not target.is_file():
        atomic_write_json(target, found.to_json())


def open_bundle_dataset(path: str | Path, cache_root: Path | None = None) -> BundleDataset:
    """``bundle:PATH`` as a dataset spec (used by ``engine.data.open_dataset``)."""
    try:
        return open_bundle(path, cache=Cache(cache_root)).dataset
    except BundleError as exc:
        raise DatasetError(str(exc)) from exc
