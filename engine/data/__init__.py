"""Datasets: ``open_dataset(spec)`` turns a spec string into an object following ``Dataset``.

Spec grammar (see docs/architecture.md)::

    demo:digits | demo:sentences | demo:shapes[?n=2000&seed=0]
    folder:PATH | manifest:PATH | zip:PATH | tar:PATH | bundle:PATH
    hfds:PATH | hfds:ORG/NAME [?split=NAME]   (Hugging Face datasets, optional dependency)

Every failure to open a spec is a ``DatasetError`` with one line meant for the user; problems
with single items never fail the dataset, they land in ``dataset.skipped`` with a reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from engine.data.base import (
    Dataset,
    DatasetBase,
    Item,
    SkippedItem,
    dataset_item,
    dataset_thumbnail,
)
from engine.errors import DatasetError
from engine.params import SHAPES
from engine.store.progress import ProgressCallback

__all__ = [
    "Dataset",
    "DatasetBase",
    "Item",
    "SkippedItem",
    "dataset_item",
    "dataset_thumbnail",
    "list_demos",
    "open_dataset",
    "parse_spec",
]

DEMOS = ("digits", "shapes", "sentences")
_SHAPES_DEFAULTS = {"n": SHAPES.n, "seed": SHAPES.seed}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``kind:rest[?query]`` into (kind, rest, params). Only demos take parameters, so a
    ``?`` in a path (a legal file-name character) is left alone."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("empty dataset spec (try demo:digits or folder:PATH)")
    text = spec.strip()
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if not sep or kind not in KINDS:
        hint = ""
        if Path(text).expanduser().exists():
            hint = f" (did you mean folder:{text}, manifest:{text} or zip:{text}?)"
        raise DatasetError(
            f"unknown dataset spec {text!r}: expected one of "
            f"{', '.join(k + ':' for k in KINDS)}{hint}"
        )
    params: dict[str, str] = {}
    if kind == "demo":
        rest, _, query = rest.partition("?")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as exc:
            raise DatasetError(f"bad parameters in {text!r}: {query!r}") from exc
        params = dict(pairs)
        rest = rest.strip().lower()
    elif not rest.strip():
        raise DatasetError(f"{kind}: needs a path, e.g. {kind}:/data/my-images")
    return kind, rest, params


def _int_param(spec: str, params: dict[str, str], key: str) -> int:
    raw = params.get(key)
    if raw is None:
        return _SHAPES_DEFAULTS[key]
    try:
        return int(raw)
    except ValueError:
        raise DatasetError(f"{spec}: {key} must be an integer, got {raw!r}") from None


def _open_demo_row(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
    _, name, params = parse_spec(spec)
    return _open_demo(spec.strip(), name, params)


def _open_demo(spec: str, name: str, params: dict[str, str]) -> Dataset:
    if name == "shapes":
        unknown = sorted(set(params) - set(_SHAPES_DEFAULTS))
        if unknown:
            raise DatasetError(f"{spec}: unknown parameter {unknown[0]!r} (use n and seed)")
        try:  # another module, imported only when asked for: its import cost is not ours
            from engine.data.shapes import open_shapes
        except ImportError as exc:
            raise DatasetError(f"demo:shapes is not available in this build ({exc})") from exc
        return open_shapes(n=_int_param(spec, params, "n"), seed=_int_param(spec, params, "seed"))
    if name not in DEMOS:
        raise DatasetError(f"unknown demo {name!r}: choose one of {', '.join(DEMOS)}")
    if params:
        raise DatasetError(f"demo:{name} takes no parameters")
    from engine.data import demos

    return demos.DigitsDataset() if name == "digits" else demos.SentencesDataset()


def open_dataset(
    spec: str,
    *,
    cache_root: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Open a dataset from its spec. Raises ``DatasetError`` (one line) if it cannot be opened.

    ``cache_root`` (default ``engine.settings.cache_dir()``) holds per-file check results,
    downloads and extracted archives. ``progress`` reports the up-front image checks of
    folders, manifests and archives. The kind's row in ``DATASET_KINDS`` opens it.
    """
    kind, rest, params = parse_spec(spec)
    row = DATASET_KINDS[kind]
    if kind == "demo":
        return _open_demo(spec.strip(), rest, params)

    from engine import settings
    from engine.store.cache import Cache

    root = Path(cache_root) if cache_root is not None else settings.cache_dir()
    spec = spec.strip()
    # A dataset read from inside the cache (an upload, say) keeps that entry from being pruned
    # while it is open (the lease is taken first: prune cannot remove it while it is scanned).
    path = row.path_of(rest)
    lease = Cache(root).lease_path(Path(path).expanduser()) if path is not None else None
    try:
        dataset = row.opener(spec, rest, root, progress)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    if lease is not None:
        lease.bind(dataset)
    return dataset


def as_dataset(dataset: Dataset | str, cache_root: Path) -> Dataset:
    """``dataset`` itself, or the dataset its spec names: what every pipeline that takes
    either (embed, compare, fusion, bundle) starts with."""
    return open_dataset(dataset, cache_root=cache_root) if isinstance(dataset, str) else dataset


# -- the kinds table ---------------------------------------------------------------------------
# Each opener takes (spec, rest, cache root, progress); heavy modules are imported on first use.
Opener = Callable[[str, str, Path, "ProgressCallback | None"], Dataset]


def _open_folder(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
    from engine.data.folder import FolderDataset

    path = Path(rest.strip()).expanduser()
    return FolderDataset(path, spec=spec, cache_root=root, progress=progress)


def _open_manifest(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
    from engine.data.manifest import ManifestDataset

    path = Path(rest.strip()).expanduser()
    return ManifestDataset(path, spec=spec, cache_root=root, progress=progress)


def _open_archive(kind: str) -> Opener:
    def opener(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
        from engine.data.archive import open_archive

        path = Path(rest.strip()).expanduser()
        return open_archive(spec, path, cache_root=root, kind=kind, progress=progress)

    return opener


def _open_bundle(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
    from engine.data.bundle import open_bundle_dataset  # opening it installs its maps

    return open_bundle_dataset(Path(rest.strip()).expanduser(), cache_root=root)


def _open_hfds(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
    from engine.data.hfds import open_hf_dataset

    return open_hf_dataset(spec, rest, cache_root=root, progress=progress)


def _hfds_path(rest: str) -> str | None:
    from engine.data.hfds import local_target

    return local_target(rest)


def _open_upload(spec: str, rest: str, root: Path, progress: ProgressCallback | None) -> Dataset:
    """``upload:<token>/<name>``: a staged upload by link (engine.store.links). The token is
    the capability: the staged upload's own spec is opened without asking the policy again."""
    from engine.store.cache import Cache
    from engine.store.links import resolve_link

    inner, _ = resolve_link(spec, Cache(root))
    dataset = open_dataset(inner, cache_root=root, progress=progress)
    with contextlib.suppress(AttributeError):
        dataset.spec = spec  # messages and reports name the link, never the server path
    return dataset


def _no_path(rest: str) -> str | None:
    return None


def _whole_path(rest: str) -> str | None:
    return rest.strip()


@dataclass(frozen=True)
class DatasetKind:
    """One dataset kind: how it opens, and what the visitor policy must check about it.

    ``path_of(rest)`` is the server path a spec of this kind reads (``None``: it names none,
    e.g. a demo, an upload link's token, a hub name); the policy checks every such path.
    ``visitor`` says whether a visitor may name the kind at all; a kind missing from this
    table, or not marked, is refused to visitors (deny by default).
    """

    name: str
    opener: Opener
    path_of: Callable[[str], str | None]
    visitor: bool
    holds: str


DATASET_KINDS: dict[str, DatasetKind] = {
    k.name: k
    for k in (
        DatasetKind("demo", _open_demo_row, _no_path, True, "built-in datasets"),
        DatasetKind("folder", _open_folder, _whole_path, True, "a folder of images"),
        DatasetKind("manifest", _open_manifest, _whole_path, True, "a CSV / Parquet / JSONL"),
        DatasetKind("zip", _open_archive("zip"), _whole_path, True, "a zip (or tar) archive"),
        DatasetKind("tar", _open_archive("tar"), _whole_path, True, "a tar archive"),
        DatasetKind("bundle", _open_bundle, _whole_path, True, "a view-only bundle"),
        DatasetKind("hfds", _open_hfds, _hfds_path, True, "a Hugging Face dataset"),
        DatasetKind("upload", _open_upload, _no_path, True, "a staged upload, by link"),
    )
}
KINDS: tuple[str, ...] = tuple(DATASET_KINDS)


def list_demos() -> list[dict[str, Any]]:
    """The built-in datasets, for the CLI's ``datasets`` command and the dashboard's picker."""
    from engine.data.demos import demo_sentences

    return [
        {
            "spec": "demo:digits",
            "description": "scikit-learn's 1,797 handwritten digits (8x8, shown at 64x64), "
            "labels 0-9",
            "modalities": ["image"],
            "size": 1797,
        },
        {
            "spec": "demo:shapes",
            "description": "generated captioned shapes (8 shapes x 8 colours x 3 sizes); "
            "demo:shapes?n=10000&seed=0 for 100..2,000,000 items",
            "modalities": ["image", "text"],
            "size": _SHAPES_DEFAULTS["n"],
        },
        {
            "spec": "demo:sentences",
            "description": "short sentences in 8 topics (sports, cooking, weather, space, "
            "music, finance, animals, technology), labels = topic",
            "modalities": ["text"],
            "size": len(demo_sentences()),
        },
    ]
