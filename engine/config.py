"""Where the cache lives and the limits that guard it.

Resolution order for the cache directory: an explicit argument (the CLI's ``--cache-dir``),
then the ``PARALLAX_CACHE`` environment variable, then ``cache/`` at the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE_DIR = REPO_ROOT / "cache"


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the cache root, creating it if needed."""
    if override is not None:
        root = Path(override)
    elif os.environ.get("PARALLAX_CACHE"):
        root = Path(os.environ["PARALLAX_CACHE"])
    else:
        root = DEFAULT_CACHE_DIR
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# Limits applied to untrusted input. Each can be raised through the environment.
MAX_IMAGE_PIXELS = _int_env("PARALLAX_MAX_IMAGE_PIXELS", 64_000_000)  # refused before decoding
MAX_IMAGE_FILE_BYTES = _int_env("PARALLAX_MAX_IMAGE_FILE_BYTES", 50 * 1024**2)
MAX_TEXT_CHARS = _int_env("PARALLAX_MAX_TEXT_CHARS", 20_000)  # longer texts are truncated
MAX_ITEMS = _int_env("PARALLAX_MAX_ITEMS", 2_000_000)
MAX_ARCHIVE_MEMBERS = _int_env("PARALLAX_MAX_ARCHIVE_MEMBERS", 200_000)
MAX_ARCHIVE_BYTES = _int_env("PARALLAX_MAX_ARCHIVE_BYTES", 4 * 1024**3)  # total uncompressed
MAX_ARCHIVE_RATIO = _int_env(
    "PARALLAX_MAX_ARCHIVE_RATIO", 200
)  # per member, uncompressed/compressed
