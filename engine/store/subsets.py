"""Named subsets: a selection (or a filter's result) kept with its dataset, in the cache.

Subsets belong to whoever kept them. The operator's (``owner=None``: the command line) live in
``cache/subsets/<dataset fingerprint>.json``; a visitor's in their own namespace,
``cache/subsets/v<hash of the owner>-<fingerprint>.json``, so one visitor never lists,
overwrites or fills another's (the cap ``MAX_SUBSETS`` is per owner and dataset). A subset is
shared only by link: each one gets a random, unguessable token (``Subset.token``, 128 bits)
when it is kept; ``open_link(dataset, token)`` finds it for whoever holds the link (the token
is the capability, as with ``upload:`` links), and deleting the subset kills its link.
Files are written atomically; rows are stored with their ids, and a subset whose ids no longer
match the dataset's rows is refused rather than applied to the wrong items.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import ParallaxError
from engine.store.cache import Cache

KIND = "subsets"
LINKS = "links"  # token -> (owner key, fingerprint): ``sub-<token>`` entries
MAX_NAME = 60
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_SUBSETS = 200
_NAME = re.compile(r"^[\w][\w .,:()+-]*$", re.UNICODE)


@dataclass(frozen=True)
class Subset:
    name: str
    rows: np.ndarray  # int64, sorted, unique
    created: float
    filter: list[dict[str, Any]] | None = None  # the filter it came from, if any
    token: str = ""  # the link's capability ("" for subsets kept before links existed)

    def to_json(self, ids: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows.tolist(),
            "ids": [str(ids[int(r)]) for r in self.rows],
            "created": self.created,
            "filter": self.filter,
            "token": self.token,
        }


def check_name(name: str) -> str:
    """A subset name: 1..60 characters, letters, digits, spaces and a little punctuation."""
    name = str(name).strip()
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise ParallaxError(
            f"a subset name is 1-{MAX_NAME} letters, digits, spaces or . , : ( ) + - _"
        )
    return name


def owner_key(owner: str | None) -> str:
    """The namespace a subset's owner keeps them in: ``""`` for the operator, else a digest
    of the visitor id (a fixed-length cache key, the id itself never becomes a name)."""
    if owner is None:
        return ""
    from engine.policy import check_owner

    digest = hashlib.sha256(check_owner(owner).encode()).hexdigest()[:24]
    return f"v{digest}"


def _key(ns: str, fingerprint: str) -> str:
    return f"{ns}-{fingerprint}" if ns else fingerprint


def _path(cache: Cache, dataset: Any, owner: str | None = None) -> Any:
    return cache.path(KIND, _key(owner_key(owner), dataset.fingerprint()))


def _read_file(path: Any) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged file reads as no subsets; the next save rewrites it
    return data if isinstance(data, dict) else {}


def _read(cache: Cache, dataset: Any, owner: str | None = None) -> dict[str, Any]:
    return _read_file(_path(cache, dataset, owner))


def _checked(dataset: Any, raw: dict[str, Any]) -> Subset | None:
    """A stored subset, if its ids still sit at its rows in this dataset (else None)."""
    rows = np.asarray(raw.get("rows", []), dtype=np.int64)
    ids = [str(x) for x in raw.get("ids", [])]
    n = len(dataset)
    if len(rows) != len(ids) or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
        return None
    if any(str(dataset.ids[int(r)]) != i for r, i in zip(rows, ids, strict=True)):
        return None
    token = raw.get("token")
    return Subset(
        str(raw.get("name")),
        rows,
        float(raw.get("created", 0.0)),
        raw.get("filter"),
        token if isinstance(token, str) and _TOKEN.match(token) else "",
    )


def list_subsets(
    dataset: Any, cache: Cache | None = None, *, owner: str | None = None
) -> list[Subset]:
    """The subsets ``owner`` kept with ``dataset`` (the operator's for ``owner=None``), newest
    first (any that no longer match it left out). Nobody else's are ever listed."""
    stored = _read(cache or Cache(), dataset, owner)
    found = [s for s in (_checked(dataset, raw) for raw in stored.values()) if s is not None]
    return sorted(found, key=lambda s: -s.created)


def get_subset(
    dataset: Any, name: str, cache: Cache | None = None, *, owner: str | None = None
) -> Subset:
    """One of ``owner``'s subsets of ``dataset`` by name (one line when there is none)."""
    for s in list_subsets(dataset, cache, owner=owner):
        if s.name == name:
            return s
    raise ParallaxError(f"no subset named {name!r} is kept with this dataset")


def _link_path(cache: Cache, token: str) -> Any:
    return cache.path(LINKS, f"sub-{token}")


def open_link(dataset: Any, token: str, cache: Cache | None = None) -> Subset:
    """The subset a link's token names, for whoever holds the link (one line when the token
    is malformed, unknown here, deleted, or for another dataset)."""
    cache = cache or Cache()
    token = str(token).strip()
    if not _TOKEN.match(token):
        raise ParallaxError("this subset link is not valid (ask for a new link)")
    link = _read_file(_link_path(cache, token))
    ns, fingerprint = link.get("owner"), link.get("fingerprint")
    if not isinstance(ns, str) or fingerprint != dataset.fingerprint():
        raise ParallaxError("this subset link is not kept for this dataset on this deployment")
    stored = _read_file(cache.path(KIND, _key(ns, fingerprint)))
    for raw in stored.values():
        if isinstance(raw, dict) and raw.get("token") == token:
            found = _checked(dataset, raw)
            if found is not None:
                return found
    raise ParallaxError("the subset of this link was deleted or no longer matches the dataset")


def save_subset(
    dataset: Any,
    name: str,
    rows: Sequence[int] | np.ndarray,
    cache: Cache | None = None,
    filter_spec: list[dict[str, Any]] | None = None,
    *,
    owner: str | None = None,
) -> Subset:
    """Keep ``rows`` of ``dataset`` as ``owner``'s ``name`` (replacing their subset of that
    name, whose link then selects the new rows: the same owner's choice). The subset gets a
    link token (``Subset.token``; kept when a subset is replaced)."""
    from engine.store.atomic import atomic_write_json

    cache = cache or Cache()
    ns = owner_key(owner)
    name = check_name(name)
    r = np.unique(np.asarray(rows, dtype=np.int64))
    if len(r) == 0:
        raise ParallaxError("a subset needs at least one item: select some first")
    if r.min() < 0 or r.max() >= len(dataset):
        raise ParallaxError(f"subset rows must be between 0 and {len(dataset) - 1}")
    stored = _read(cache, dataset, owner)
    if name not in stored and len(stored) >= MAX_SUBSETS:
        raise ParallaxError(f"at most {MAX_SUBSETS} subsets per dataset: delete one first")
    old = stored.get(name)
    token = old.get("token") if isinstance(old, dict) else None
    if not isinstance(token, str) or not _TOKEN.match(token):
        token = secrets.token_urlsafe(16)
    subset = Subset(name, r, time.time(), filter_spec, token)
    stored[name] = subset.to_json(dataset.ids)
    link = _link_path(cache, token)
    link.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(link, {"owner": ns, "fingerprint": dataset.fingerprint()})
    path = _path(cache, dataset, owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, stored)
    return subset


def delete_subset(
    dataset: Any, name: str, cache: Cache | None = None, *, owner: str | None = None
) -> bool:
    """Forget ``owner``'s subset ``name`` and its link; False when they had none by that name
    (another owner's subset of that name is never touched)."""
    from engine.store.atomic import atomic_write_json

    cache = cache or Cache()
    stored = _read(cache, dataset, owner)
    raw = stored.pop(name, None)
    if raw is None:
        return False
    atomic_write_json(_path(cache, dataset, owner), stored)
    token = raw.get("token") if isinstance(raw, dict) else None
    if isinstance(token, str) and _TOKEN.match(token):
        _link_path(cache, token).unlink(missing_ok=True)
    return True


def subset_frame(dataset: Any, subset: Subset) -> pd.DataFrame:
    """The subset as a table for export: row, id, label (and text where the dataset has it)."""
    rows = subset.rows
    frame = pd.DataFrame(
        {
            "row": rows,
            "id": [str(dataset.ids[int(r)]) for r in rows],
            "label": [dataset.labels[int(r)] for r in rows],
        }
    )
    if dataset.texts is not None:
        frame["text"] = [dataset.texts[int(r)] for r in rows]
    return frame
