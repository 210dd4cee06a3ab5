"""Where the cache lives and the limits that guard it.

Resolution order for the cache directory: an explicit argument (the CLI's ``--cache-dir``),
then the ``PARALLAX_CACHE`` environment variable, then ``cache/`` at the repository root (or
``~/.cache/parallax`` when the engine was installed with ``pip install .``).

Every limit below can be changed through the environment variable named beside it (read once,
at import). docs/security.md lists them with the threat each one answers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine.errors import CacheError, ParallaxError

T = TypeVar("T")

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


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root, creating it if needed (``CacheError`` if it cannot be)."""
    if override is not None:
        root = Path(override)
    elif os.environ.get("PARALLAX_CACHE"):
        root = Path(os.environ["PARALLAX_CACHE"])
    else:
        root = DEFAULT_CACHE_DIR
    root = root.expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a read-only or full disk, no permission
        raise CacheError(
            f"cannot use {root} as the cache directory: {exc.strerror or exc} (set "
            "PARALLAX_CACHE or --cache-dir to a writable directory)"
        ) from exc
    return root


_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


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


def _number_env(name: str, default: T, parse: Callable[[str], T], example: str) -> T:
    """``$name`` read by ``parse`` (``default`` when unset); one line naming it when unreadable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return parse(value)
    except (ValueError, ParallaxError):
        raise ParallaxError(f"{name}={value!r} is not a number {example}") from None


def _int_env(name: str, default: int) -> int:
    return _number_env(name, default, parse_size, "(e.g. 1000 or 500M)")


def _float_env(name: str, default: float) -> float:
    return _number_env(name, default, float, "of seconds")


def _flag_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# Limits applied to untrusted input. Each can be raised through the environment.
MAX_IMAGE_PIXELS = _int_env("PARALLAX_MAX_IMAGE_PIXELS", 64_000_000)  # refused before decoding
MAX_IMAGE_FILE_BYTES = _int_env("PARALLAX_MAX_IMAGE_FILE_BYTES", 50 * 1024**2)
MAX_TEXT_CHARS = _int_env("PARALLAX_MAX_TEXT_CHARS", 20_000)  # longer texts are truncated
MAX_ITEMS = _int_env("PARALLAX_MAX_ITEMS", 2_000_000)
MAX_MANIFEST_BYTES = _int_env("PARALLAX_MAX_MANIFEST_BYTES", 1024**3)  # the table file itself
MAX_ARCHIVE_MEMBERS = _int_env("PARALLAX_MAX_ARCHIVE_MEMBERS", 200_000)
MAX_ARCHIVE_BYTES = _int_env("PARALLAX_MAX_ARCHIVE_BYTES", 4 * 1024**3)  # total uncompressed
MAX_ARCHIVE_RATIO = _int_env(
    "PARALLAX_MAX_ARCHIVE_RATIO", 200
)  # per member, uncompressed/compressed
# Opened datasets a long-lived server keeps for every session, in (approximate) bytes.
DATASET_CACHE_BYTES = _int_env("PARALLAX_DATASET_CACHE_BYTES", 1024**3)
# Loaded models a long-lived process keeps (parameter bytes); the least recently used goes first.
MODEL_CACHE_BYTES = _int_env("PARALLAX_MODEL_CACHE_BYTES", 1024**3)
# Held datasets and models unused this long are released and the heap handed back to the OS,
# so a shared server's memory comes back down after its visitors leave.
IDLE_RELEASE_S = _float_env("PARALLAX_IDLE_RELEASE_S", 300.0)
DOWNLOAD_TIMEOUT_S = _float_env("PARALLAX_DOWNLOAD_TIMEOUT_S", 5.0)  # connect, and each read
DOWNLOAD_DEADLINE_S = _float_env("PARALLAX_DOWNLOAD_DEADLINE_S", 60.0)  # one whole download

# Disk quotas per cache namespace (engine.store.space). Going over one first removes that
# namespace's least-recently-used entries not in use; if still over, one QuotaError line.
QUOTA_UPLOADS = _int_env("PARALLAX_QUOTA_UPLOADS", 1024**3)  # per owner (session / visitor)
QUOTA_EXTRACTED = _int_env("PARALLAX_QUOTA_EXTRACTED", 20 * 1024**3)  # all unpacked archives
QUOTA_DOWNLOADS = _int_env("PARALLAX_QUOTA_DOWNLOADS", 5 * 1024**3)  # all URL downloads
# Temp names and unfinished jobs older than this, whose writer is gone, are removed by prune.
ORPHAN_AGE_S = _float_env("PARALLAX_ORPHAN_AGE_S", 3600.0)

# -- budgets (#27) --
# One deployment's memory (default: a Community Cloud app, ~1 GiB); the per-decode and upload
# budgets below derive from it unless set on their own. docs/deploy.md sizes them.
MEMORY_BYTES = _int_env("PARALLAX_MEMORY_BYTES", 1024**3)
# What one decode may materialise: one table (Parquet / CSV / JSON lines, decoded), one
# visitor's upload staged, one request's images (x 4 bytes per pixel).
DECODE_BYTES = _int_env("PARALLAX_DECODE_BYTES", MEMORY_BYTES // 8)
# One upload, refused past this in one line (Streamlit's server.maxUploadSize should match it).
MAX_UPLOAD_BYTES = _int_env("PARALLAX_MAX_UPLOAD_BYTES", DECODE_BYTES)
# Pixels (width x height, from the headers) that one request or one batch may decode in total.
REQUEST_PIXELS = _int_env("PARALLAX_REQUEST_PIXELS", MAX_IMAGE_PIXELS)
# Parameter bytes of the largest model a visitor may have built (known before it is built).
MAX_MODEL_BYTES = _int_env("PARALLAX_MAX_MODEL_BYTES", MEMORY_BYTES // 2)
# Every visitor's uploads together (the per-owner quota is QUOTA_UPLOADS), and their lifetime:
# uploads not used for this long are removed by ``cache prune`` (and at the next upload).
QUOTA_UPLOADS_TOTAL = _int_env("PARALLAX_QUOTA_UPLOADS_TOTAL", 2 * 1024**3)
UPLOAD_TTL_S = _float_env("PARALLAX_UPLOAD_TTL_S", 24 * 3600.0)
# Model specs (comma-separated) the operator adds to what visitors may load (besides the
# shipped ``demo:`` models, the baselines and the catalogue's hub names).
VISITOR_MODELS = tuple(
    s.strip() for s in os.environ.get("PARALLAX_VISITOR_MODELS", "").split(",") if s.strip()
)
# -- end budgets (#27) --

# ``python -m engine cache prune`` keeps at most this much when ``--max-bytes`` is not given.
DEFAULT_CACHE_MAX_BYTES = 20 * 1024**3


def cache_max_bytes() -> int:
    """``PARALLAX_CACHE_MAX_BYTES`` (bytes, or ``20G`` style), default 20 GB; read per call."""
    return _int_env("PARALLAX_CACHE_MAX_BYTES", DEFAULT_CACHE_MAX_BYTES)


def allow_private_urls() -> bool:
    """``PARALLAX_ALLOW_PRIVATE_URLS=1`` lets manifest URLs reach loopback, private and
    link-local addresses (off by default: a public deployment must not become a proxy into
    its own network). Read per call, so a test or a launcher can change it at run time."""
    return _flag_env("PARALLAX_ALLOW_PRIVATE_URLS")
