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
from engine.errors import DatasetError
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


def _data_files(folder: Path) -> tuple[str, list[str]] | None:
    for suffix, builder in ((".parquet", "parquet"), (".arrow", "arrow")):
        files = sorted(str(p) for p in folder.rglob(f"*{suffix}") if p.is_file())
        if files:
            return builder, files
    return None


def _load_local(folder: Path, spec: str) -> Any:
    datasets = _datasets_module()
    saved = any((folder / name).is_file() for name in ("dataset_dict.json", "state.json"))
    try:
        if saved:
            return datasets.load_from_disk(str(folder))
        found = _data_files(folder)
        if found is None:
            raise DatasetError(
                f"{spec}: {folder.name} is neither a save_to_disk folder nor holds "
                ".parquet / .arrow files"
            )
        builder, files = found
        return datasets.load_dataset(
            builder, data_files=files, split="train", cache_dir=None, keep_in_memory=False
        )
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:  # corrupt or foreign files
        raise DatasetError(f"cannot open {spec}: {str(exc).splitlines()[0][:300]}") from exc


def _hub_snapshot(repo: str, spec: str) -> Path:
    """The local snapshot of a hub dataset repo: from the cache, else downloaded, else one line."""
    from engine.models import offline

    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with datasets
        raise DatasetError(f"{spec}: needs huggingface_hub ({INSTALL_HINT})") from None
    try:
        return Path(
            snapshot_download(
                repo, repo_type="dataset", local_files_only=True, allow_patterns=_DATA_PATTERNS
            )
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if offline.offline_forced() or not offline.hub_reachable():
        raise DatasetError(
            f"{spec}: not in the Hugging Face cache ({offline.hf_cache_dir()}) and the hub "
            f"cannot be reached; on a machine with internet run `hf download {repo} "
            "--repo-type dataset` and copy its HF_HOME here, or save the dataset with "
            "save_to_disk and open hfds:PATH"
        )
    try:
        return Path(snapshot_download(repo, repo_type="dataset", allow_patterns=_DATA_PATTERNS))
    except Exception as exc:  # network and hub errors of several libraries: one line
        raise DatasetError(f"{spec}: download failed: {offline.one_line(exc)}") from exc


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
    if local.is_dir():
        folder = local.resolve()
        loaded = _load_local(folder, spec)
        name = folder.name
    elif _REPO_RE.match(target) and not local.exists():
        folder = _hub_snapshot(target, spec)
        loaded = _load_local(folder, spec)
        name = target.split("/")[-1]
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
