"""Session state and shared resources for every page.

Datasets and models are shared across sessions with ``st.cache_resource``: the engine's own
model registry is already thread-safe, and datasets are read-only once opened. Anything a user
uploads lives under ``cache/uploads/<session id>/`` so one session never sees another's files.

Every shared resource is keyed by the cache root as well as by its spec, so a process whose
``PARALLAX_CACHE`` changes (tests do this) never reuses a dataset extracted into another cache.
Derived data goes through ``st.cache_data`` keyed by the engine's own content-hash keys (a
projection's cache key, a vectors entry's key), never by hashing large arrays in Streamlit.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from dashboard import urlstate, viewonly
from engine.cache import Cache, Entry
from engine.config import REPO_ROOT, cache_dir
from engine.errors import DatasetError, ParallaxError

DEFAULT_DATASET = "demo:digits"
DEFAULT_MODELS = ["baseline:pixels"]
# The home page's map needs no weights and no network: it works on a fresh, offline install.
HOME_DATASET = "demo:digits"
HOME_MODEL = "baseline:pixels"
PAGES_DIR = REPO_ROOT / "pages"


def page_file(name: str) -> Path:
    """Absolute path of a page script (``"data.py"``): what st.Page / st.page_link accept."""
    return PAGES_DIR / name


# -- shared resources ---------------------------------------------------------------------------
@st.cache_resource(show_spinner=False, max_entries=4)
def _engine_cache(root: str) -> Cache:
    return Cache(root)


def engine_cache() -> Cache:
    """The engine cache under the current cache root (``PARALLAX_CACHE`` or ``./cache``)."""
    return _engine_cache(str(cache_dir()))


class DatasetRegistry:
    """Opened datasets shared by every session: a small LRU keyed by (spec, cache root).

    Not ``st.cache_resource`` itself, because opening reports progress into the calling page
    (a cached function must not draw). One lock per key: two sessions asking for the same new
    folder wait for one scan instead of running two. Failures are not remembered.
    """

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    def get(self, spec: str, root: Path, progress=None):  # -> Dataset
        key = (spec, str(root))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            from engine.datasets import open_dataset

            ds = open_dataset(spec, cache_root=root, progress=progress)
            with self._lock:
                self._items[key] = ds
                while len(self._items) > self.max_entries:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
            return ds


@st.cache_resource(show_spinner=False)
def dataset_registry() -> DatasetRegistry:
    return DatasetRegistry()


def get_dataset(spec: str, progress=None):  # -> Dataset
    """One opened dataset per spec, shared by all sessions (datasets are read-only).

    ``progress`` (an engine progress callback, e.g. ``ui.ProgressBar``) reports the up-front
    image checks of a folder / manifest / archive the first time it is opened. Raises the
    engine's ``DatasetError`` (a ``ParallaxError``) for a spec that cannot be opened; failures
    are not cached, so a fixed folder opens on the next try.
    """
    return dataset_registry().get(spec, engine_cache().root, progress)


def get_model(spec: str):  # -> EmbeddingModel
    """One loaded model per spec, shared by all sessions (forward passes are locked inside).

    In view-only mode only the weight-free baselines load; anything else raises
    ``viewonly.ViewOnlyError`` (a one-line ``ParallaxError``) without importing torch.
    """
    viewonly.require_model(spec, f"{spec} cannot be loaded here")
    return _load_model(spec)


@st.cache_resource(show_spinner="Loading model…", max_entries=8)
def _load_model(spec: str):  # -> EmbeddingModel
    from engine.models import load_model

    return load_model(spec)


def view_only() -> bool:
    """True on a host with no models (or with ``PARALLAX_VIEW_ONLY=1``): browse bundles only."""
    return viewonly.is_view_only()


def view_only_notice(what: str | None = None) -> None:
    """The one plain line every model-needing feature shows in view-only mode."""
    text = f"{what}: {viewonly.MESSAGE}" if what else viewonly.sentence()
    st.info(text, icon=":material/visibility:")


@st.cache_data(show_spinner=False, ttl=300)
def known_models() -> list[dict[str, Any]]:
    """The engine's model registry (spec, kind, modalities, description, available_offline)."""
    from engine.models import known_models as _known

    return [dict(m) for m in _known()]


@st.cache_data(show_spinner=False, ttl=300)
def list_demos() -> list[dict[str, Any]]:
    from engine.datasets import list_demos as _list

    return [dict(d) for d in _list()]


# -- session ------------------------------------------------------------------------------------
def session_id() -> str:
    if "_parallax_session" not in st.session_state:
        st.session_state["_parallax_session"] = uuid.uuid4().hex
    return st.session_state["_parallax_session"]


def session_upload_dir() -> Path:
    """This session's private upload folder, inside the cache."""
    path = engine_cache().root / "uploads" / session_id()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_dataset() -> str:
    """``bundle:PATH`` of the configured bundle (``PARALLAX_BUNDLE``, or the demo bundle in
    view-only mode), else ``DEFAULT_DATASET``."""
    bundle = viewonly.configured_bundle()
    return viewonly.bundle_spec(bundle) if bundle is not None else DEFAULT_DATASET


def default_models() -> list[str]:
    bundle = viewonly.configured_bundle()
    specs = viewonly.bundle_model_specs(bundle) if bundle is not None else []
    return specs or list(DEFAULT_MODELS)


def dataset_spec() -> str:
    return st.session_state.get("dataset_spec") or default_dataset()


def set_dataset_spec(spec: str) -> None:
    st.session_state["dataset_spec"] = spec


def model_specs() -> list[str]:
    specs = st.session_state.get("model_specs")
    return list(specs) if specs is not None else default_models()


def set_model_specs(specs: list[str]) -> None:
    st.session_state["model_specs"] = list(dict.fromkeys(specs))


def current_dataset():  # -> Dataset
    """The dataset every page works on (raises ``ParallaxError`` if it cannot be opened)."""
    return get_dataset(dataset_spec())


# -- cached vectors and maps --------------------------------------------------------------------
def cached_vectors(dataset, model_spec: str, modality: str | None = None) -> Entry | None:
    """The newest finished vectors entry for (dataset, model[, modality]), or None.

    Loads no model: pages use it to tell what is already embedded and to find the vectors
    the Embed page made.
    """
    from engine.embed import find_cached

    entries = find_cached(dataset, model_spec, engine_cache())
    if modality is not None:
        entries = [e for e in entries if e.manifest.get("modality") == modality]
    return entries[0] if entries else None


@st.cache_data(show_spinner=False, max_entries=32)
def load_coords(projection_key: str, path: str) -> np.ndarray:
    """A finished projection's N x 2 coordinates, keyed by the projection's cache key."""
    return np.load(path, allow_pickle=False)


@dataclass
class Job:
    """A background job shared by every session that asks for the same key."""

    key: str
    label: str
    future: Future
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class JobRunner:
    """Runs long, page-independent work (UMAP maps) off the script thread.

    The script thread stays free, so a user can switch page while a map is computed; a
    ``st.fragment(run_every=...)`` polls the job and reruns the page when it is done. One
    worker: two UMAP fits at once on a 2-core box only make both slower. Thread-safe.
    """

    def __init__(self, workers: int = 1) -> None:
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parallax-job")
        self._jobs: dict[str, Job] = {}

    def submit(self, key: str, label: str, fn: Callable[[], Any]) -> Job:
        """The job for ``key``: the running or finished one, else a new one running ``fn``."""
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                job = Job(key, label, self._pool.submit(fn))
                self._jobs[key] = job
            return job

    def get(self, key: str) -> Job | None:
        with self._lock:
            return self._jobs.get(key)

    def forget(self, key: str) -> None:
        """Drop a finished job (e.g. a failed one, so that a retry starts afresh)."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.future.done():
                del self._jobs[key]


@st.cache_resource(show_spinner=False)
def job_runner() -> JobRunner:
    return JobRunner()


def projection_job(entry: Entry, method: str = "umap", seed: int = 0) -> Job:
    """A (possibly finished) background job computing the cached map of a vectors entry.

    The job's result is the engine's ``ProjectionResult``; a map already in the cache finishes
    in milliseconds.
    """
    from engine.project import project

    cache = engine_cache()
    key = f"{cache.root}:{entry.key}:{method}:{seed}"
    return job_runner().submit(
        key, f"{method.upper()} map", lambda: project(entry, method, seed=seed, cache=cache)
    )


def cached_projection_key(entry: Entry, method: str, seed: int = 0) -> str:
    """The cache key ``engine.project.project(entry, method, seed=seed)`` would use (with the
    engine's default parameters), computed without loading anything."""
    from engine.params import ProjectionParams

    return ProjectionParams(method=method, seed=seed).cache_key(entry.key)


def umap_in_cache(entry: Entry, seed: int = 0) -> bool:
    return engine_cache().get("projections", cached_projection_key(entry, "umap", seed)) is not None


def umap_allowed(entry: Entry, seed: int = 0) -> bool:
    """Whether a UMAP map of ``entry`` may be asked for: always, except in view-only mode,
    where only a map already in the cache (e.g. from a bundle) is used: never computed."""
    return not view_only() or umap_in_cache(entry, seed)


def projection_coords(entry: Entry, method: str = "pca", seed: int = 0) -> np.ndarray:
    """The map of a vectors entry computed in the calling thread (for fast methods: PCA)."""
    from engine.project import project

    result = project(entry, method, seed=seed, cache=engine_cache())
    return load_coords(result.key, str(result.path))


# -- uploads ------------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson", ".json")
ARCHIVE_SUFFIXES = (".zip",)
UPLOAD_TYPES = [s.lstrip(".") for s in IMAGE_SUFFIXES + MANIFEST_SUFFIXES + ARCHIVE_SUFFIXES]
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "file") -> str:
    """A name that is safe to join to a folder: basename only, no ``..``, safe characters.

    ``"../../etc/passwd"`` -> ``"passwd"``; ``"C:\\x\\My Photo (1).JPG"`` -> ``"My_Photo_1_.JPG"``.
    """
    base = re.split(r"[/\\]", name or "")[-1]
    base = _SAFE_CHARS.sub("_", base).strip("._ ")
    base = base.replace("..", "_")
    if len(base) > 120:
        stem, dot, suffix = base.rpartition(".")
        base = (
            (stem[: 110 - len(suffix)] + dot + suffix) if dot and len(suffix) <= 8 else (base[:120])
        )
    return base or default


def unique_names(names: list[str]) -> list[str]:
    """Safe names with duplicates made distinct (``a.png``, ``a-1.png``, ...)."""
    seen: set[str] = set()
    out = []
    for name in names:
        safe = safe_filename(name)
        stem, dot, suffix = safe.rpartition(".")
        if not dot:
            stem, suffix = safe, ""
        candidate, k = safe, 1
        while candidate.lower() in seen:
            candidate = f"{stem}-{k}{dot}{suffix}"
            k += 1
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def unpack_zip_into(archive: Path, dest: Path) -> list:  # -> list[SkippedItem]
    """Unpack an untrusted zip's files into ``dest`` (e.g. beside an uploaded manifest).

    Extraction is the engine's (``engine.datasets.archive.extract_archive``: members checked
    before inflating, traversal / links / bombs refused or skipped, content-addressed under the
    cache); its files are then hard-linked (or copied) into ``dest`` keeping the archive's
    layout, so relative paths in a manifest resolve. Returns the skipped members.
    """
    import os
    import shutil
    import zipfile

    from engine.datasets.archive import COMPLETE_MARKER, SKIPPED_FILE, extract_archive
    from engine.errors import DatasetError

    if not zipfile.is_zipfile(archive):
        raise DatasetError(f"{archive.name} is not a zip archive")
    folder, skipped = extract_archive(archive, engine_cache().root, "zip")

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(
        folder,
        dest,
        ignore=shutil.ignore_patterns(COMPLETE_MARKER, SKIPPED_FILE),
        copy_function=link_or_copy,
        symlinks=False,
        dirs_exist_ok=True,
    )
    return skipped


# -- server paths (security) --------------------------------------------------------------------
SERVER_PATHS_ENV = "PARALLAX_SERVER_PATHS"
PATH_KINDS = ("folder", "manifest", "zip", "tar", "bundle")


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except (OSError, RuntimeError):
        return path.expanduser().absolute()


def server_path_roots() -> list[Path] | None:
    """``PARALLAX_SERVER_PATHS`` (``os.pathsep``-separated roots) resolved, or None if unset:
    then any path the server can read may be opened (local use)."""
    import os

    raw = os.environ.get(SERVER_PATHS_ENV, "").strip()
    if not raw:
        return None
    return [_resolved(Path(p)) for p in raw.split(os.pathsep) if p.strip()]


def check_spec_allowed(spec: str) -> None:
    """Refuse a user-given path spec that reaches into another session's uploads, or (with
    ``PARALLAX_SERVER_PATHS`` set) lies outside the allowed roots. Raises ``DatasetError``.

    This session's own upload folder and the configured bundle are always allowed; demo specs
    carry no path. Paths are resolved first, so ``..`` and symlinks cannot sneak past.
    """
    from engine.datasets import parse_spec

    kind, rest, _ = parse_spec(spec)
    if kind not in PATH_KINDS:
        return
    path = _resolved(Path(rest.strip()))
    own = _resolved(session_upload_dir())
    if path.is_relative_to(own):
        return
    if path.is_relative_to(_resolved(engine_cache().root / "uploads")):
        raise DatasetError(
            f"{kind}:{rest.strip()} is refused: it is inside another session's uploads"
        )
    bundle = viewonly.configured_bundle()
    if bundle is not None and path == _resolved(bundle):
        return
    roots = server_path_roots()
    if roots is not None and not any(path.is_relative_to(r) for r in roots):
        raise DatasetError(
            f"{kind}:{rest.strip()} is refused: this deployment only opens server paths under "
            f"{SERVER_PATHS_ENV} ({', '.join(str(r) for r in roots)})"
        )


# -- shareable URLs -------------------------------------------------------------------------------
URL_RESTORED = "_url_restored"
URL_SELECTION = "_url_selection"  # rows from a link, applied by the Map page once it knows N
URL_ERROR = "_url_error"


def url_params() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in st.query_params}


def restore_from_url() -> None:
    """Once per session: apply the view in the page URL (``urlstate``) to the session state.

    A dataset spec from a link goes through ``check_spec_allowed`` like a typed one; a refused
    one leaves the default dataset and is reported by ``url_error``.
    """
    if st.session_state.get(URL_RESTORED):
        return
    st.session_state[URL_RESTORED] = True
    view = urlstate.decode_view(url_params())
    if view.dataset:
        try:
            check_spec_allowed(view.dataset)
        except ParallaxError as exc:
            st.session_state[URL_ERROR] = f"The link's dataset was not opened: {exc}"
        else:
            set_dataset_spec(view.dataset)
    if view.models:
        st.session_state["map_models"] = list(view.models)
        specs = [m.split(" · ")[0] for m in view.models]
        set_model_specs([*specs, *[s for s in model_specs() if s not in specs]])
    if view.colour:
        st.session_state["map_colour"] = view.colour
    if view.method:
        st.session_state["map_method"] = view.method
        st.session_state["home_method"] = view.method
    if view.selection is not None:
        st.session_state[URL_SELECTION] = view.selection


def url_error() -> str | None:
    return st.session_state.pop(URL_ERROR, None)


def sync_url(view: urlstate.View) -> None:
    """Make the page URL describe ``view`` (only when it differs: no needless URL churn)."""
    params = urlstate.encode_view(view)
    if params != url_params():
        st.query_params.from_dict(params)
