"""Every ``PARALLAX_*`` setting, once: name, type, default, help. The one reader of them.

``Environment`` (pydantic-settings) is the table. Each field is one variable
(``PARALLAX_<FIELD>``), with one parser per kind of value: sizes (``500M``, ``20G``, a plain
number), seconds, yes/no flags (``1/true/yes/on`` or ``0/false/no/off``), a few fixed words, and
lists. A value that does not parse is one ``ParallaxError`` line naming the variable.

Two moments of reading, as before the table existed:

- *at start*: the limits below (``MAX_ITEMS``, the quotas, ...) are read once, when this module
  is imported, into module attributes. Code reads the attribute at call time, so a test (or a
  launcher) can ``monkeypatch.setattr(settings, "MAX_ITEMS", 3)``.
- *per call*: the switches an operator or a test flips at run time (``allow_private_urls()``,
  ``server_paths()``, ``cache_dir()``, ...) are read from the environment on every call.

No other module reads a ``PARALLAX_*`` variable: it asks this one. ``docs/settings.md`` is
generated from the table (``python -m engine.settings --markdown > docs/settings.md``) and a
test keeps it equal. Resolution of the cache directory: an explicit argument (the CLI's
``--cache-dir``), then ``PARALLAX_CACHE``, then ``cache/`` at the repository root (or
``~/.cache/parallax`` when the engine was installed with ``pip install .``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.errors import CacheError, ParallaxError

log = logging.getLogger(__name__)

PREFIX = "PARALLAX_"
REPO_ROOT = Path(__file__).resolve().parent.parent
# A checkout has dashboard/ beside engine/; ``pip install .`` puts engine/ alone in site-packages,
# where neither a cache nor the shipped models can live next to it.
IN_CHECKOUT = (REPO_ROOT / "dashboard").is_dir()
DEFAULT_CACHE_DIR = (
    REPO_ROOT / "cache"
    if IN_CHECKOUT
    else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parallax"
)
# The small CLIPs trained here: models/ in a checkout, <prefix>/share/parallax/models installed.
SHIPPED_MODELS_DIR = (
    REPO_ROOT / "models" if IN_CHECKOUT else Path(sys.prefix) / "share" / "parallax" / "models"
)

# -- the parsers: one per kind of value ---------------------------------------------------------
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_size(text: str) -> int:
    """``"500M"``, ``"20G"``, ``"1.5g"``, ``"1048576"`` -> bytes (``ParallaxError`` if not)."""
    t = str(text).strip().lower().removesuffix("b").removesuffix("i")
    try:
        value = int(float(t[:-1]) * _UNITS[t[-1]]) if t and t[-1] in _UNITS else int(t)
    except ValueError:
        raise ParallaxError(f"cannot read size {text!r}: use e.g. 500M or 20G") from None
    if value < 0:
        raise ParallaxError(f"size {text!r} is negative")
    return value


def parse_flag(text: str) -> bool:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case), else ``ValueError``."""
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("a yes/no value (use 1/true/yes/on or 0/false/no/off)")


def _size(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_size(value)
        except ParallaxError:
            raise ValueError("a number (e.g. 1000 or 500M)") from None
    return value


def _number_of(unit: str) -> Callable[[object], object]:
    """A non-negative decimal number of ``unit`` (seconds, milliseconds)."""

    def number(value: object) -> object:
        if isinstance(value, str):
            try:
                parsed = float(value.strip())
            except ValueError:
                raise ValueError(f"a number of {unit}") from None
            if parsed < 0:
                raise ValueError(f"a number of {unit} (not negative)")
            return parsed
        return value

    return number


def _flag(value: object) -> object:
    return parse_flag(value) if isinstance(value, str) else value


def _words(*allowed: str, flags: bool = False) -> Callable[[object], object]:
    """One of ``allowed`` (lower-cased); with ``flags`` also the yes/no words for on/off."""

    def check(value: object) -> object:
        word = str(value).strip().lower()
        if flags and word in TRUE_WORDS:
            return "on"
        if flags and word in FALSE_WORDS:
            return "off"
        if word in allowed:
            return word
        raise ValueError(f"one of {', '.join(allowed)}")

    return check


def _split(separator: str) -> Callable[[object], object]:
    def split(value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(separator) if v.strip())
        return value

    return split


def _text(value: object) -> object:
    return (value.strip() or None) if isinstance(value, str) else value


Bytes = Annotated[int, BeforeValidator(_size)]  # shown as 50M / 1G in the docs
Count = Annotated[int, BeforeValidator(_size)]  # a plain number (``2M`` is read too)
Seconds = Annotated[float, BeforeValidator(_number_of("seconds"))]
Millis = Annotated[float, BeforeValidator(_number_of("milliseconds"))]
Flag = Annotated[bool, BeforeValidator(_flag)]
AutoFlag = Annotated[bool | None, BeforeValidator(_flag)]  # unset: decided by the engine
OnOffAuto = Annotated[str, BeforeValidator(_words("auto", "on", "off", flags=True))]
Precision = Annotated[str, BeforeValidator(_words("auto", "fp32", "bf16", "fp16"))]
Commas = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split(","))]
Paths = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split(os.pathsep))]
Text = Annotated[str | None, BeforeValidator(_text)]
DerivedBytes = Annotated[int | None, BeforeValidator(_size)]  # unset: derived from another

_WHAT = {  # how a bad value's error line names what was expected, per type
    "Bytes": "a number (e.g. 1000 or 500M)",
    "Count": "a number (e.g. 1000 or 500M)",
}


def _setting(default: Any, section: str, *, read: str = "start") -> Any:
    """A table row (its help is the docstring under it): ``read`` is "start" (at import, a module
    attribute), "call" (per call), "serve" (when the HTTP service starts) or "tests"."""
    return Field(default, json_schema_extra={"read": read, "section": section})


LIMITS, BUDGETS, STORE, ACCESS, COMPUTE, SERVICE, TESTS = (
    "Input limits",
    "Budgets of a shared deployment",
    "Cache and disk",
    "Deployment and access",
    "Compute",
    "HTTP service",
    "Tests",
)


class Environment(BaseSettings):
    """The table: field ``NAME`` is the environment variable ``PARALLAX_`` + ``NAME``; the
    docstring under a field is its help (pydantic's ``use_attribute_docstrings``)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    # -- input limits: what an untrusted dataset, upload or download may be ---------------------
    MAX_IMAGE_PIXELS: Count = _setting(64_000_000, LIMITS)
    """width x height of one image, checked from the header before any pixel is decoded; Pillow's
    own guard is set to the same value and its warning turned into an error"""
    MAX_IMAGE_FILE_BYTES: Bytes = _setting(50 * 1024**2, LIMITS)
    """one image file or download (empty files are refused too); the HTTP service's limit on one
    uploaded image"""
    MAX_TEXT_CHARS: Count = _setting(20_000, LIMITS)
    """one text: longer texts are truncated, NULs removed, lone surrogates replaced; Parquet text
    cells are cut to it while read, batch by batch; a CSV / JSONL cell longer than 50x this
    (at least 8,000,000 characters) refuses the manifest before it is held"""
    MAX_ITEMS: Count = _setting(2_000_000, LIMITS)
    """items in one folder / manifest / archive (one error naming this); what a visitor of a
    shared deployment may open of any kind"""
    MAX_TABLE_ITEMS: Count = _setting(20_000_000, LIMITS)
    """rows of a manifest without an image column opened by the operator (command line,
    scripts): its ids, texts and labels are held as Arrow columns, tens of bytes a row, not
    Python objects; never below MAX_ITEMS, and visitors keep MAX_ITEMS"""
    MAX_MANIFEST_BYTES: Bytes = _setting(1024**3, LIMITS)
    """the manifest file itself, checked before it is read; also what a Parquet table (manifest
    or bundle member) may decode to"""
    MAX_ARCHIVE_MEMBERS: Count = _setting(200_000, LIMITS)
    """members of one archive (the whole archive is refused)"""
    MAX_ARCHIVE_BYTES: Bytes = _setting(4 * 1024**3, LIMITS)
    """total uncompressed size of one archive or bundle, declared and actually written"""
    MAX_ARCHIVE_RATIO: Count = _setting(200, LIMITS)
    """uncompressed / compressed size per zip member (per stream for .tar.gz)"""
    DOWNLOAD_TIMEOUT_S: Seconds = _setting(5.0, LIMITS)
    """seconds to connect, and for each read, of a manifest URL"""
    DOWNLOAD_DEADLINE_S: Seconds = _setting(60.0, LIMITS)
    """seconds for one whole download (connect, headers and body); a watchdog shuts every socket
    the download opened, so a trickling server cannot hold it"""
    ALLOW_PRIVATE_URLS: Flag = _setting(False, LIMITS, read="call")
    """let manifest URLs reach loopback / private / link-local hosts (local use, tests); off,
    every address a name resolves to must be public, for the first request and each redirect,
    and the connection goes to the address that was checked"""

    # -- the cache and the disk it may take ------------------------------------------------------
    CACHE: Text = _setting(None, STORE, read="call")
    """the cache directory (`--cache-dir` wins); unset: `cache/` in a checkout,
    `~/.cache/parallax` when installed"""
    CACHE_MAX_BYTES: Bytes = _setting(20 * 1024**3, STORE, read="call")
    """what `python -m engine cache prune` keeps when `--max-bytes` is not given (every kind
    counts)"""
    QUOTA_UPLOADS: Bytes = _setting(1024**3, STORE)
    """disk for one owner's (session's / visitor's) uploads; past it, that owner's
    least-recently-used uploads not in use are removed, else one QuotaError line"""
    QUOTA_EXTRACTED: Bytes = _setting(20 * 1024**3, STORE)
    """disk for all extracted archives (checked against declared sizes before inflating); same
    rule"""
    QUOTA_DOWNLOADS: Bytes = _setting(5 * 1024**3, STORE)
    """disk for all manifest URL downloads; same rule"""
    ORPHAN_AGE_S: Seconds = _setting(3600.0, STORE)
    """`cache prune` removes temp names and unfinished jobs older than this (seconds) whose
    writer is gone"""
    DATASET_CACHE_BYTES: Bytes = _setting(1024**3, STORE)
    """opened datasets a long-lived process keeps for all sessions (approximate bytes; least
    recently used released first, the newest always kept)"""
    MODEL_CACHE_BYTES: Bytes = _setting(1024**3, STORE)
    """loaded models a long-lived process keeps (parameter bytes; least recently used first)"""
    IDLE_RELEASE_S: Seconds = _setting(300.0, STORE)
    """held datasets, models and prompt vectors unused this long (seconds) are released and the
    heap handed back to the operating system, so a shared server's memory comes back down
    after its visitors leave; 0 keeps them until the byte bounds push them out"""
    QUOTA_UPLOADS_TOTAL: Bytes = _setting(2 * 1024**3, STORE)
    """disk for every visitor's uploads together (the per-owner quota is QUOTA_UPLOADS)"""
    UPLOAD_TTL_S: Seconds = _setting(24 * 3600.0, STORE)
    """uploads not used for this long (seconds) are removed by `cache prune` and at the next
    upload"""

    # -- budgets: one deployment's memory, and what one request may take of it -----------------
    MEMORY_BYTES: Bytes = _setting(1024**3, BUDGETS)
    """the deployment's memory (default: a Community Cloud app, ~1 GiB); the decode, upload and
    model budgets below derive from it unless set on their own (docs/deploy.md)"""
    DECODE_BYTES: DerivedBytes = _setting(None, BUDGETS)
    """what one decode may materialise: one table (Parquet / CSV / JSON lines, decoded), one
    staged upload, one request's images at 4 bytes a pixel; unset: MEMORY_BYTES / 8"""
    TABLE_DECODE_BYTES: DerivedBytes = _setting(None, BUDGETS)
    """what a Parquet manifest without an image column that the operator opens (MAX_TABLE_ITEMS)
    may decode to, its columns held as Arrow arrays; never below DECODE_BYTES, and visitors keep
    DECODE_BYTES; unset: MEMORY_BYTES / 2"""
    MAX_UPLOAD_BYTES: DerivedBytes = _setting(None, BUDGETS)
    """one upload, refused past this in one line (Streamlit's server.maxUploadSize should match
    it); unset: DECODE_BYTES"""
    REQUEST_PIXELS: DerivedBytes = _setting(None, BUDGETS)
    """pixels (width x height, from the headers) one request or batch may decode in all; unset:
    MAX_IMAGE_PIXELS"""
    MAX_MODEL_BYTES: DerivedBytes = _setting(None, BUDGETS)
    """parameter bytes of the largest model a visitor may have built, known before it is built;
    unset: MEMORY_BYTES / 2"""
    VISITOR_MODELS: Commas = _setting((), BUDGETS)
    """model specs (comma-separated) the operator adds to what visitors may load, besides the
    shipped `demo:` models, the baselines and the catalogue's hub names"""

    # -- who may open what, and which app runs -------------------------------------------------
    SERVER_PATHS: Paths = _setting((), ACCESS, read="call")
    """roots (`:`-separated) under which a visitor's typed or linked server path, or local model
    path, may lie; unset = no server path at all. The cache and any folder holding it are
    refused whatever it says (docs/security.md)"""
    VIEW_ONLY: AutoFlag = _setting(None, ACCESS, read="call")
    """yes: the dashboard browses bundles only (no models); no: the full app; unset: view-only
    exactly when torch is not installed"""
    BUNDLE: Text = _setting(None, ACCESS, read="call")
    """the bundle a new dashboard session opens (a path, relative to the repository root or
    absolute); unset: the committed demo bundle in view-only mode"""
    OFFLINE: Flag = _setting(False, ACCESS, read="call")
    """never try the Hugging Face hub: models come from local paths or its cache only (as
    `HF_HUB_OFFLINE=1`, which is honoured too)"""

    # -- how forward passes and maps run ----------------------------------------------------------
    PRECISION: Precision = _setting("auto", COMPUTE, read="call")
    """precision of forward passes on CUDA: auto (bf16 where the GPU has it, else fp16), fp32,
    bf16 or fp16; the CPU always runs fp32. Part of the vectors' cache key"""
    DEVICE_DECODE: OnOffAuto = _setting("auto", COMPUTE, read="call")
    """decode and resize images on the device (nvJPEG): auto (on CUDA only), on (any device), off
    (Pillow)"""
    TORCH_COMPILE: Flag = _setting(False, COMPUTE, read="call")
    """torch.compile the image tower on CUDA (off: not measured to win end to end)"""
    GPU_UMAP: OnOffAuto = _setting("auto", COMPUTE, read="call")
    """UMAP fits on the GPU with cuML: auto (when cuML and a GPU are there), on (cuML or one
    error line), off"""
    MAP_DENSITY_ABOVE: Count = _setting(1_000_000, COMPUTE)
    """above this many points a map is drawn in the browser by the density renderer (density where
    points overlap, points when zoomed in) instead of regl-scatterplot"""

    # -- the HTTP service (read when it starts; its command-line flags win) -----------------------
    API_KEYS: Commas = _setting((), SERVICE, read="serve")
    """comma-separated keys; every route but `/v1/health` then needs `Authorization: Bearer KEY`;
    unset: no auth"""
    CORS_ORIGINS: Commas = _setting((), SERVICE, read="serve")
    """comma-separated origins allowed to call from a browser; unset: no CORS headers"""
    API_MAX_BATCH: Count = _setting(64, SERVICE, read="serve")
    """items in one batched forward pass (`--max-batch`)"""
    API_BATCH_WAIT_MS: Millis = _setting(5.0, SERVICE, read="serve")
    """milliseconds a batch waits for other requests once one arrived (`--batch-wait-ms`)"""
    API_MAX_IMAGES: Count = _setting(64, SERVICE, read="serve")
    """images in one request (413 above)"""
    API_MAX_TEXTS: Count = _setting(256, SERVICE, read="serve")
    """texts in one request (413 above)"""
    API_MAX_BODY_BYTES: Bytes = _setting(256 * 1024**2, SERVICE, read="serve")
    """one multipart request body, counted as it streams whatever the transfer encoding (413
    above)"""
    API_MAX_JSON_BYTES: Bytes = _setting(16 * 1024**2, SERVICE, read="serve")
    """one JSON request body (parsing expands it several times in memory; 413 above)"""
    API_MAX_LABELS: Count = _setting(1000, SERVICE, read="serve")
    """labels in one /v1/predict (413 above)"""
    API_MAX_LABEL_CHARS: Count = _setting(200, SERVICE, read="serve")
    """characters of one label (413 above)"""
    API_MAX_PREDICT_MODELS: Count = _setting(4, SERVICE, read="serve")
    """models in one /v1/predict (413 above)"""
    API_MAX_PREDICT_WORK: Count = _setting(4096, SERVICE, read="serve")
    """forward passes one /v1/predict may ask for: models x (labels x templates + inputs)"""
    API_MAX_REQUEST_PIXELS: DerivedBytes = _setting(None, SERVICE, read="serve")
    """pixels of all the images of one request together, from their headers; unset:
    MAX_IMAGE_PIXELS"""
    API_JOB_MAX_BYTES: Bytes = _setting(2 * 1024**3, SERVICE, read="serve")
    """one embed job's vectors (rows x dim x 4 bytes), estimated before it is queued"""
    API_MAX_JOBS: Count = _setting(16, SERVICE, read="serve")
    """queued + running embed jobs in all (429 above)"""
    API_MAX_JOBS_PER_CLIENT: Count = _setting(2, SERVICE, read="serve")
    """queued + running embed jobs of one client, by key or address (429 above)"""
    API_JOB_TTL_S: Seconds = _setting(7 * 24 * 3600.0, SERVICE, read="serve")
    """seconds after which a finished job's record is forgotten"""
    API_ALLOW_ANONYMOUS: Flag = _setting(False, SERVICE, read="serve")
    """let `serve` listen on a non-loopback host without API keys (it refuses otherwise)"""
    API_TRUSTED_CLIENTS: Flag = _setting(False, SERVICE, read="serve")
    """clients are the operator: no visitor policy on the specs they name (only for a service
    behind your own gate)"""

    # -- the test suite ---------------------------------------------------------------------------
    TEST_SEED: Annotated[int | None, BeforeValidator(_size)] = _setting(None, TESTS, read="tests")
    """replays a seeded run of tests/test_reliability.py (unset: a new seed, printed)"""


FIELDS: dict[str, FieldInfo] = dict(Environment.model_fields)
for _info in FIELDS.values():
    # pydantic reads the docstrings from this file's source (none without it: only the docs need
    # them, and tests/test_settings.py checks every row has one); one line for the docs' table.
    _info.description = " ".join((_info.description or "").split())
NAMES: tuple[str, ...] = tuple(PREFIX + name for name in FIELDS)


def _field_name(name: str) -> str:
    short = name.removeprefix(PREFIX)
    if short not in FIELDS:
        raise KeyError(f"{name} is not a Parallax setting (engine/settings.py)")
    return short


def _what(field: str) -> str:
    annotation = Environment.__annotations__.get(field, "")
    return _WHAT.get(str(annotation), "")


def _error_line(exc: ValidationError, field: str | None = None) -> ParallaxError:
    """The first problem of ``exc`` as one line naming the variable and its value (``field``
    when the error itself names none: a single-value check)."""
    err = exc.errors()[0]
    field = field or (str(err["loc"][0]) if err["loc"] else "")
    name = PREFIX + field
    raw = os.environ.get(name, err.get("input"))
    cause = err.get("ctx", {}).get("error")
    expected = str(cause) if isinstance(cause, ValueError) else (_what(field) or err["msg"])
    return ParallaxError(f"{name}={raw!r} is not {expected} (see docs/settings.md)")


def load() -> Environment:
    """Every setting from the environment now (``ParallaxError``, one line, on a bad value)."""
    try:
        return Environment()
    except ValidationError as exc:
        raise _error_line(exc) from None


@cache
def _adapter(field: str) -> TypeAdapter[Any]:
    info = FIELDS[field]
    return TypeAdapter(Annotated[info.annotation, *info.metadata])


def value(name: str) -> Any:
    """One setting (its variable name, or its field name) read from the environment now,
    parsed by the table's own type; its default when unset or empty."""
    field = _field_name(name)
    raw = os.environ.get(PREFIX + field, "")
    if raw == "":
        return FIELDS[field].default
    try:
        return _adapter(field).validate_python(raw)
    except ValidationError as exc:
        raise _error_line(exc, field) from None


def unknown_names() -> list[str]:
    """``PARALLAX_*`` variables set in the environment that no setting has (typos)."""
    return sorted(k for k in os.environ if k.startswith(PREFIX) and k not in NAMES)


# -- read at start: module attributes that code reads at call time -----------------------------
_START = load()
for _name in unknown_names():
    log.warning("%s is set but is not a Parallax setting (docs/settings.md lists them)", _name)

MAX_IMAGE_PIXELS: int = _START.MAX_IMAGE_PIXELS
MAX_IMAGE_FILE_BYTES: int = _START.MAX_IMAGE_FILE_BYTES
MAX_TEXT_CHARS: int = _START.MAX_TEXT_CHARS
MAX_ITEMS: int = _START.MAX_ITEMS
MAX_TABLE_ITEMS: int = _START.MAX_TABLE_ITEMS
MAP_DENSITY_ABOVE: int = _START.MAP_DENSITY_ABOVE
MAX_MANIFEST_BYTES: int = _START.MAX_MANIFEST_BYTES
MAX_ARCHIVE_MEMBERS: int = _START.MAX_ARCHIVE_MEMBERS
MAX_ARCHIVE_BYTES: int = _START.MAX_ARCHIVE_BYTES
MAX_ARCHIVE_RATIO: int = _START.MAX_ARCHIVE_RATIO
DATASET_CACHE_BYTES: int = _START.DATASET_CACHE_BYTES
MODEL_CACHE_BYTES: int = _START.MODEL_CACHE_BYTES
DOWNLOAD_TIMEOUT_S: float = _START.DOWNLOAD_TIMEOUT_S
DOWNLOAD_DEADLINE_S: float = _START.DOWNLOAD_DEADLINE_S
QUOTA_UPLOADS: int = _START.QUOTA_UPLOADS
QUOTA_EXTRACTED: int = _START.QUOTA_EXTRACTED
QUOTA_DOWNLOADS: int = _START.QUOTA_DOWNLOADS
ORPHAN_AGE_S: float = _START.ORPHAN_AGE_S
IDLE_RELEASE_S: float = _START.IDLE_RELEASE_S
QUOTA_UPLOADS_TOTAL: int = _START.QUOTA_UPLOADS_TOTAL
UPLOAD_TTL_S: float = _START.UPLOAD_TTL_S
# -- budgets (#27): the derived ones follow MEMORY_BYTES unless set on their own --
MEMORY_BYTES: int = _START.MEMORY_BYTES
DECODE_BYTES: int = _START.DECODE_BYTES or MEMORY_BYTES // 8
TABLE_DECODE_BYTES: int = _START.TABLE_DECODE_BYTES or MEMORY_BYTES // 2
MAX_UPLOAD_BYTES: int = _START.MAX_UPLOAD_BYTES or DECODE_BYTES
REQUEST_PIXELS: int = _START.REQUEST_PIXELS or MAX_IMAGE_PIXELS
MAX_MODEL_BYTES: int = _START.MAX_MODEL_BYTES or MEMORY_BYTES // 2
VISITOR_MODELS: tuple[str, ...] = _START.VISITOR_MODELS
# ``python -m engine cache prune`` keeps at most this much when ``--max-bytes`` is not given.
DEFAULT_CACHE_MAX_BYTES: int = FIELDS["CACHE_MAX_BYTES"].default


# -- read per call ------------------------------------------------------------------------------
def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root, creating it if needed (``CacheError`` if it cannot be)."""
    configured = value("CACHE") if override is None else None
    root = Path(override) if override is not None else Path(configured or DEFAULT_CACHE_DIR)
    root = root.expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a read-only or full disk, no permission
        raise CacheError(
            f"cannot use {root} as the cache directory: {exc.strerror or exc} (set "
            "PARALLAX_CACHE or --cache-dir to a writable directory)"
        ) from exc
    return root


def cache_max_bytes() -> int:
    """``PARALLAX_CACHE_MAX_BYTES`` (bytes, or ``20G`` style), default 20 GB."""
    return int(value("CACHE_MAX_BYTES"))


def allow_private_urls() -> bool:
    """``PARALLAX_ALLOW_PRIVATE_URLS``: manifest URLs may reach loopback, private and link-local
    addresses (off by default: a public deployment must not become a proxy into its own
    network). Read per call, so a test or a launcher can change it at run time."""
    return bool(value("ALLOW_PRIVATE_URLS"))


def server_paths() -> tuple[str, ...]:
    """``PARALLAX_SERVER_PATHS``: the operator's roots for visitors' server paths (unresolved)."""
    return tuple(value("SERVER_PATHS"))


def view_only() -> bool | None:
    """``PARALLAX_VIEW_ONLY``: True / False when the operator said so, None when unset."""
    return value("VIEW_ONLY")


def bundle() -> str | None:
    """``PARALLAX_BUNDLE`` as written (a path), or None."""
    return value("BUNDLE")


def offline() -> str | None:
    """The variable that forbids hub access now: ``PARALLAX_OFFLINE``, else the hub library's own
    ``HF_HUB_OFFLINE`` (read with the same yes/no words, never an error: it is not ours); None
    when neither is set."""
    if value("OFFLINE"):
        return PREFIX + "OFFLINE"
    hub = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return "HF_HUB_OFFLINE" if hub in TRUE_WORDS else None


def precision() -> str:
    """``PARALLAX_PRECISION``: auto, fp32, bf16 or fp16."""
    return str(value("PRECISION"))


def device_decode() -> str:
    """``PARALLAX_DEVICE_DECODE``: auto, on or off."""
    return str(value("DEVICE_DECODE"))


def torch_compile() -> bool:
    """``PARALLAX_TORCH_COMPILE``."""
    return bool(value("TORCH_COMPILE"))


def gpu_umap() -> str:
    """``PARALLAX_GPU_UMAP``: auto, on or off."""
    return str(value("GPU_UMAP"))


def service() -> dict[str, Any]:
    """The HTTP service's settings, by ``ServiceSettings`` field name (read now)."""
    return {
        "api_keys": value("API_KEYS"),
        "cors_origins": value("CORS_ORIGINS"),
        "max_batch": value("API_MAX_BATCH"),
        "batch_wait_ms": value("API_BATCH_WAIT_MS"),
        "max_images": value("API_MAX_IMAGES"),
        "max_texts": value("API_MAX_TEXTS"),
        "max_body_bytes": value("API_MAX_BODY_BYTES"),
        "max_json_bytes": value("API_MAX_JSON_BYTES"),
        "max_image_bytes": MAX_IMAGE_FILE_BYTES,
        "models": VISITOR_MODELS,
        "max_labels": value("API_MAX_LABELS"),
        "max_label_chars": value("API_MAX_LABEL_CHARS"),
        "max_predict_models": value("API_MAX_PREDICT_MODELS"),
        "max_predict_work": value("API_MAX_PREDICT_WORK"),
        "max_request_pixels": value("API_MAX_REQUEST_PIXELS") or MAX_IMAGE_PIXELS,
        "job_max_bytes": value("API_JOB_MAX_BYTES"),
        "max_jobs": value("API_MAX_JOBS"),
        "max_jobs_per_client": value("API_MAX_JOBS_PER_CLIENT"),
        "job_ttl_s": value("API_JOB_TTL_S"),
        "allow_anonymous": value("API_ALLOW_ANONYMOUS"),
        "trusted_clients": value("API_TRUSTED_CLIENTS"),
    }


# -- logging -------------------------------------------------------------------------------------
def configure_logging(verbosity: int = 0) -> None:
    """One stderr handler for the ``engine`` loggers: WARNING by default, INFO with ``-v``
    (prune, evictions, policy refusals, cache misses), DEBUG with ``-vv``. Idempotent: calling it
    again only changes the level. Library users who configure logging themselves need not call
    it; the CLI and the HTTP service do."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger(__name__.partition(".")[0])  # "engine": every engine logger
    logger.setLevel(level)
    ours = [h for h in logger.handlers if getattr(h, "_parallax", False)]
    if not ours:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._parallax = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        ours = [handler]
    for handler in ours:
        handler.setLevel(level)


# -- the documentation --------------------------------------------------------------------------
_READ = {
    "start": "at start",
    "call": "per call",
    "serve": "at `serve`",
    "tests": "by the tests",
}


def _shown(field: str, default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, tuple):
        return "unset" if not default else ",".join(default)
    if isinstance(default, bool):
        return "yes" if default else "no"
    if "Bytes" in str(Environment.__annotations__.get(field, "")) and default:
        for unit, size in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
            if default % size == 0:
                return f"{default // size}{unit}"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, int):
        return f"{default:,}"
    return str(default)


def markdown() -> str:
    """``docs/settings.md``: every setting, grouped, with its default and meaning."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from engine/settings.py by `python -m engine.settings --markdown`;",
        "     tests/test_settings.py checks that this file equals it: edit the table. -->",
        "",
        "Every `PARALLAX_*` environment variable Parallax reads. The operator sets them (the",
        "environment, Streamlit secrets, `docker run -e`); a visitor cannot. Sizes take `500M` /",
        "`20G` or a plain number of bytes; yes/no values take `1/true/yes/on` or `0/false/no/off`.",
        "A value that does not parse stops the program with one line naming the variable.",
        "",
        "*Read*: **at start** means once, when the engine is imported (restart to change it);",
        "**per call** means every time it is needed; **at `serve`** when the HTTP service starts.",
        "docs/security.md explains the threat each limit answers.",
    ]
    sections: dict[str, list[str]] = {}
    for field, info in FIELDS.items():
        extra = info.json_schema_extra or {}
        assert isinstance(extra, dict)
        rows = sections.setdefault(str(extra["section"]), [])
        rows.append(
            f"| `{PREFIX}{field}` | {_shown(field, info.default)} | {_READ[str(extra['read'])]} "
            f"| {info.description} |"
        )
    for section, rows in sections.items():
        lines += ["", f"## {section}", "", "| variable | default | read | meaning |"]
        lines += ["|---|---|---|---|", *rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.settings [--markdown | --check]``: the docs page, or check the
    environment now (one line per problem, status 2)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    try:
        current = load()
    except ParallaxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for field in FIELDS:
        print(f"{PREFIX}{field}={getattr(current, field)!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
