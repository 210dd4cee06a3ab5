"""Uploads by link: ``upload:<token>/<file name>`` stands for a staged upload, with no path.

A staged upload lives at ``<cache>/uploads/<owner>/upload-<digest>/...``; its spec names that
server path, which must not be shown on a shared deployment nor put in a link. Linking an
upload gives it a public spec instead: a random, unguessable token (128 bits) and the name the
visitor gave the file. The token is the capability: whoever holds the link reopens the same
dataset on this deployment (after a reload, or in another browser); nobody can list tokens, so
an upload never appears in another session's lists. The mapping is one small JSON entry per
token in the cache's ``links`` namespace; a link whose upload was pruned says so in one line.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from engine.errors import DatasetError
from engine.store.atomic import atomic_write_json
from engine.store.cache import Cache

KIND = "links"
PREFIX = "upload:"
MAX_NAME = 80
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_UNSAFE = re.compile(r"[^\w .()+-]+", re.UNICODE)


def display_name(name: str) -> str:
    """The file name a visitor gave, made safe to show and to put in a spec (no separators)."""
    base = Path(str(name).replace("\\", "/")).name.strip()
    clean = _UNSAFE.sub("_", base).strip(" ._") or "upload"
    return clean[:MAX_NAME]


# Streamlit's Markdown (CommonMark + GitHub extensions): every ASCII punctuation character may
# be backslash-escaped, so all of those that start syntax are: links and images ``[]()!``,
# autolinks and HTML ``<>``, emphasis ``*_~``, code `````, headings and lists ``#+-.|``,
# the backslash itself, and Streamlit's own ``:material/icons:`` and ``$math$``.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")


def escape_markdown(text: object) -> str:
    """``text`` made literal for Markdown: whatever a visitor or a bundle wrote (a subset name,
    a file name, an item's text, an error line quoting them) shows as typed and can never
    become a link, an image, HTML or formatting. Newlines become spaces (one line)."""
    one_line = " ".join(str(text).splitlines())
    return _MARKDOWN.sub(r"\\\1", one_line)


def _entry(cache: Cache, token: str) -> Path:
    return cache.path(KIND, token)


def _read(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("spec"), str):
        return None
    return data


def link_upload(spec: str, name: str, cache: Cache | None = None) -> str:
    """The public spec (``upload:<token>/<name>``) of a staged upload's ``spec``; the same
    upload linked again gets the same token (one link per upload, reload after reload)."""
    cache = cache or Cache()
    shown = display_name(name)
    folder = cache.kind_dir(KIND)
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            data = _read(path)
            if data is not None and data["spec"] == spec and data.get("name") == shown:
                return f"{PREFIX}{path.stem}/{shown}"
    token = secrets.token_urlsafe(16)
    path = _entry(cache, token)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"spec": spec, "name": shown})
    return f"{PREFIX}{token}/{shown}"


def is_upload_link(spec: str) -> bool:
    return isinstance(spec, str) and spec.strip().lower().startswith(PREFIX)


def resolve_link(spec: str, cache: Cache | None = None) -> tuple[str, str]:
    """(the staged upload's own spec, its display name) for ``upload:<token>/<name>``; one
    ``DatasetError`` line when the token is malformed or unknown here."""
    rest = spec.strip()[len(PREFIX) :]
    token, _, name = rest.partition("/")
    shown = display_name(name) if name else "upload"
    if not _TOKEN.match(token):
        raise DatasetError(f"upload link {shown!r} is not valid: open the upload again")
    cache = cache or Cache()
    data = _read(_entry(cache, token))
    if data is None:
        raise DatasetError(
            f"upload {shown!r} is not on this deployment (removed, or the link is from "
            "elsewhere): upload the file again"
        )
    return data["spec"], str(data.get("name") or shown)


def source_kind(spec: str, cache: Cache | None = None) -> str:
    """The kind of dataset behind ``spec`` (``bundle``, ``zip``, ...): for an upload link the
    staged upload's, else the spec's own; ``""`` for a link that no longer resolves."""
    if is_upload_link(spec):
        try:
            spec = resolve_link(spec, cache)[0]
        except DatasetError:
            return ""
    return spec.strip().partition(":")[0].lower()
