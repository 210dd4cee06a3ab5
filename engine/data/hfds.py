"""Hugging Face ``datasets`` as a dataset source: ``hfds:PATH`` and ``hfds:ORG/NAME``.

``PATH`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a
folder of Parquet / Arrow files. ``ORG/NAME`` is a dataset repository on the hub: it opens from
the local hub cache, downloads when the hub can be reached, and otherwise fails within seconds
with one line saying how to supply it (the same rule as hub models, engine/models/offline.py).
A split is chosen with ``?split=NAME`` (default: ``train`` when there is one, else the first).

Columns are mapped onto the manifest contract (engine/data/manifest.py), which then does
the checking, the safe decoding and the fingerprint: an ``Image`` feature becomes the image
column (raw bytes, never decoded by ``datasets``), a ``ClassLabel`` the label (its names, not
its integers), a string column the text; every other column is kept as metadata, so vector
columns stay usable as ``column:NAME`` models. ``datasets`` is an optional dependency
(requirements-hf.txt).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import settings
from engine.errors import DatasetError, ParallaxError
from engine.store.progress import ProgressCallback

if TYPE_CHECKING:
    import pandas as pd

    from engine.data.manifest import ManifestDataset

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-hf.txt"
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_DATA_PATTERNS = ["*.parquet", "**/*.parquet", "*.arrow", "**/*.arrow", "*.json", "**/*.json"]


def _datasets_module() -> Any:
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"hfds: datasets need the Hugging Face 'datasets' package ({INSTALL_HINT})"
        ) from None
    return datasets


def split_spec_target(rest: str) -> tuple[str, str | None]:
    """``"PATH?split=test"`` -> (``PATH``, ``"test"``); only a trailing ``?split=`` is read, so a
    ``?`` elsewhere in a path is left alone."""
    match = re.search(r"\?split=([A-Za-z0-9_.\-]+)$", rest)
    if match is None:
        return rest, None
    return rest[: match.start()], match.group(1)


# ``hfds:PATH`` looks for data files at most this deep and this many entries into PATH: a
# dataset folder is small and shallow, and ``hfds:/`` must never walk the whole disk.
MAX_WALK_DEPTH = 4
MAX_WALK_ENTRIES = 10_000


def local_target(rest: str) -> str | None:
    """The server path ``hfds:rest`` reads, or None for a hub name (``ORG/NAME``). The opener
    and the visitor policy both read this, so they can never disagree about a spec."""
    target, _ = split_spec_target(rest.strip())
    if _REPO_RE.match(target) and not Path(target).expanduser().exists():
        return None
    return target


def _data_files(folder: Path, spec: str) -> tuple[str, list[str]] | None:
    """The Parquet (else Arrow) files under ``folder``, found by a bounded walk."""
    import os

    found: dict[str, list[str]] = {".parquet": [], ".arrow": []}
    seen = 0
    base_depth = len(folder.parts)
    for root, dirs, files in os.walk(folder):
        seen += len(dirs) + len(files)
        if seen > MAX_WALK_ENTRIES:
            raise DatasetError(
                f"{spec}: more than {MAX_WALK_ENTRIES:,} files and folders under it: not a "
                "dataset folder (name the folder that holds the .parquet / .arrow files)"
            )
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if len(Path(root).parts) - base_depth >= MAX_WALK_DEPTH:
            dirs[:] = []
        for name in files:
            suffix = Path(name).suffix.lower()
            if suffix in found and (Path(root) / name).is_file():
                found[suffix].append(str(Path(root) / name))
    for suffix, builder in ((".parquet", "parquet"), (".arrow", "arrow")):
        if found[suffix]:
            return builder, sorted(found[suffix])
    return None


def _from_tables(tables: list[Any], spec: str) -> Any:
    """A ``datasets.Dataset`` over already-bounded Arrow tables, held in memory: nothing is
    written to a ``datasets`` cache (``load_dataset`` would copy the files into
    ``~/.cache/huggingface``, outside Parallax's cache and its quota)."""
    import pyarrow as pa

    datasets = _datasets_module()
    try:
        table = tables[0]
        if len(tables) > 1:
            table = pa.concat_tables(tables, promote_options="default")
        return datasets.Dataset(table)
    except (pa.ArrowInvalid, ValueError, TypeError, KeyError) as exc:
        raise DatasetError(f"cannot open {spec}: {str(exc).splitlines()[0][:300]}") from exc


def _load_local(folder: Path, spec: str) -> Any:
    from engine.data.manifest import read_parquet_capped

    datasets = _datasets_module()
    saved = any((folder / name).is_file() for name in ("dataset_dict.json", "state.json"))
    try:
        if saved:  # memory-mapped Arrow files: nothing is decoded or copied here
            return datasets.load_from_disk(str(folder), keep_in_memory=False)
        found = _data_files(folder, spec)
        if found is None:
            raise DatasetError(
                f"{spec}: {folder.name} is neither a save_to_disk folder nor holds "
                ".parquet / .arrow files"
            )
        builder, files = found
        if builder == "parquet":  # read by row group under the decode budget, as manifests are
            budget = settings.DECODE_BYTES
            tables = []
            for name in files:
                table = read_parquet_capped(Path(name), budget=budget, as_arrow=True)
                budget -= table.nbytes
                tables.append(table)
            return _from_tables(tables, spec)
        parts = [datasets.Dataset.from_file(name, in_memory=False) for name in files]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:  # corrupt or foreign files
        raise DatasetError(f"cannot open {spec}: {str(exc).splitlines()[0][:300]}") from exc


def hub_cache_dir(cache_root: Path) -> Path:
    """Where ``hfds:ORG/NAME`` snapshots are kept: inside Parallax's cache (the downloads
    namespace, under its quota), never ``~/.cache/huggingface``."""
    from engine.store.cache import Cache

    return Cache(cache_root).path("downloads", "hfds")


def _hub_snapshot(repo: str, spec: str, cache_root: Path) -> Path:
    """The local snapshot of a hub dataset repo: from the cache, else downloaded, else one line."""
    from engine.models import offline
    from engine.store.space import tree_size

    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets
        raise DatasetError(f"{spec}: needs huggingface_hub ({INSTALL_HINT})") from None
    where = hub_cache_dir(cache_root)
    try:
        return Path(
            snapshot_download(
                repo,
                repo_type="dataset",
                local_files_only=True,
                allow_patterns=_DATA_PATTERNS,
                cache_dir=str(where),
            )
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if offline.offline_forced() or not offline.hub_reachable():
        raise DatasetError(
            f"{spec}: not in this deployment's cache and the hub cannot be reached; on a "
            f"machine with internet run `hf download {repo} --repo-type dataset`, save it "
            "with save_to_disk and open hfds:PATH"
        )
    from engine.store.cache import Cache

    budget = Cache(cache_root).budget(
        "downloads", settings.QUOTA_DOWNLOADS, setting="PARALLAX_QUOTA_DOWNLOADS"
    )
    try:
        got = Path(
            snapshot_download(
                repo, repo_type="dataset", allow_patterns=_DATA_PATTERNS, cache_dir=str(where)
            )
        )
    except Exception as exc:  # network and hub errors of several libraries: one line
        raise DatasetError(f"{spec}: download failed: {offline.one_line(exc)}") from exc
    try:  # charged after the fact (the hub's sizes are not known up front): over, it goes
        budget.charge(tree_size(where) - budget.used, f"downloading {repo}")
    except ParallaxError:
        import shutil

        shutil.rmtree(where, ignore_errors=True)
        raise
    return got


def _pick_split(loaded: Any, split: str | None, spec: str) -> tuple[Any, str | None]:
    datasets = _datasets_module()
    if not isinstance(loaded, datasets.DatasetDict):
        if split not in (None, "train"):
            raise DatasetError(f"{spec}: has a single split, not {split!r}")
        return loaded, None
    names = list(loaded.keys())
    if not names:
        raise DatasetError(f"{spec}: has no splits")
    chosen = split or ("train" if "train" in names else names[0])
    if chosen not in loaded:
        raise DatasetError(f"{spec}: no split {chosen!r} (it has {', '.join(names)})")
    return loaded[chosen], chosen


def _first(names: list[str], candidates: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[c] for c in candidates if c in lower), None)


def to_manifest_table(ds: Any, spec: str) -> pd.DataFrame:
    """One HF ``Dataset`` -> a manifest table with ``image`` / ``text`` / ``label`` columns
    (when found) followed by every other column as metadata."""
    import pandas as pd

    from engine.data.manifest import LABEL_COLUMNS, TEXT_COLUMNS

    datasets = _datasets_module()
    if len(ds) > settings.MAX_ITEMS:
        raise DatasetError(
            f"{spec}: {len(ds):,} rows, over the limit of {settings.MAX_ITEMS:,} "
            "(raise PARALLAX_MAX_ITEMS to allow more)"
        )
    features = ds.features
    names = list(features)
    images = [n for n in names if isinstance(features[n], datasets.Image)]
    class_labels = [n for n in names if isinstance(features[n], datasets.ClassLabel)]
    strings = [
        n
        for n in names
        if isinstance(features[n], datasets.Value)
        and features[n].dtype in ("string", "large_string")
    ]
    image_col = images[0] if images else None
    label_col = class_labels[0] if class_labels else _first(names, LABEL_COLUMNS)
    text_col = _first(strings, TEXT_COLUMNS)
    if text_col is None:
        others = [n for n in strings if n not in (label_col, "id")]
        text_col = others[0] if len(others) == 1 else None
    if image_col is None and text_col is None:
        raise DatasetError(
            f"{spec}: no Image column and no text column (features: {', '.join(names[:12])})"
        )
    if image_col is not None:  # raw bytes: decoding is the engine's (limits, safe decoding)
        ds = ds.cast_column(image_col, datasets.Image(decode=False))
    decoded = _decoded_nbytes(ds)
    if decoded > settings.DECODE_BYTES:
        from engine.errors import BudgetError

        raise BudgetError(
            f"{spec}: decodes to {decoded / 1024**2:,.0f} MB, over this deployment's budget of "
            f"{settings.DECODE_BYTES / 1024**2:,.0f} MB for one dataset (PARALLAX_DECODE_BYTES)"
        )
    frame = ds.to_pandas()

    out: dict[str, Any] = {}
    if image_col is not None:
        out["image"] = frame[image_col]
    if text_col is not None:
        out["text"] = frame[text_col]
    if label_col is not None:
        column = frame[label_col]
        if label_col in class_labels:
            label_names = features[label_col].names
            column = column.map(
                lambda v: (
                    label_names[int(v)]
                    if v is not None and 0 <= int(v) < len(label_names)
                    else None
                )
            )
        out["label"] = column
    used = {image_col, text_col, label_col}
    for name in names:
        if name in used:
            continue
        key = name if name not in out else f"meta_{name}"
        out[key] = frame[name]
    return pd.DataFrame(out)


def _decoded_nbytes(ds: Any) -> int:
    """Bytes ``ds`` takes once converted (its Arrow data; dictionary columns expanded)."""
    from engine.data.manifest import expanded_nbytes

    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    # A selection (``_indices``) converts only its rows: estimated by its share.
    selected = getattr(ds, "_indices", None) is not None
    share = len(ds) / max(table.num_rows, 1) if selected else 1.0
    total = sum(expanded_nbytes(col) for col in table.columns)
    return int(total * share)


def open_hf_dataset(
    spec: str,
    rest: str,
    *,
    cache_root: Path,
    progress: ProgressCallback | None = None,
) -> ManifestDataset:
    """Open ``hfds:PATH`` or ``hfds:ORG/NAME`` (``DatasetError`` with one line if it cannot)."""
    from engine.data.manifest import ManifestDataset

    target, split = split_spec_target(rest.strip())
    local = Path(target).expanduser()
    if local_target(rest) is None:  # a hub name (the policy read the same rule)
        folder = _hub_snapshot(target, spec, cache_root)
        loaded = _load_local(folder, spec)
        name = target.split("/")[-1]
    elif local.is_dir():
        folder = local.resolve()
        loaded = _load_local(folder, spec)
        name = folder.name
    else:
        raise DatasetError(
            f"{spec}: {target!r} is not a folder (save_to_disk or Parquet/Arrow files) "
            "nor a hub name ORG/NAME"
        )
    ds, chosen = _pick_split(loaded, split, spec)
    table = to_manifest_table(ds, spec)
    log.info("opened %s: %d rows (split %s)", spec, len(table), chosen)
    return ManifestDataset(
        folder,
        spec=spec,
        name=f"{name}/{chosen}" if chosen else name,
        cache_root=cache_root,
        progress=progress,
        table=table,
    )
