"""Named subsets: a selection (or a filter's result) kept with its dataset, in the cache.

Subsets live in ``cache/subsets/<dataset fingerprint>.json`` (one file per dataset, written
atomically), so they come back with the dataset whoever opens it on this deployment, and never
attach to another dataset: rows are stored with their ids, and a subset whose ids no longer
match the dataset's rows is refused rather than applied to the wrong items.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from engine.errors import ParallaxError
from engine.store.cache import Cache

KIND = "subsets"
MAX_NAME = 60
MAX_SUBSETS = 200
_NAME = re.compile(r"^[\w][\w .,:()+-]*$", re.UNICODE)


@dataclass(frozen=True)
class Subset:
    name: str
    rows: np.ndarray  # int64, sorted, unique
    created: float
    filter: list[dict[str, Any]] | None = None  # the filter it came from, if any

    def to_json(self, ids: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows": self.rows.tolist(),
            "ids": [str(ids[int(r)]) for r in self.rows],
            "created": self.created,
            "filter": self.filter,
        }


def check_name(name: str) -> str:
    """A subset name: 1..60 characters, letters, digits, spaces and a little punctuation."""
    name = str(name).strip()
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise ParallaxError(
            f"a subset name is 1-{MAX_NAME} letters, digits, spaces or . , : ( ) + - _"
        )
    return name


def _path(cache: Cache, dataset: Any) -> Any:
    return cache.path(KIND, dataset.fingerprint())


def _read(cache: Cache, dataset: Any) -> dict[str, Any]:
    try:
        data = json.loads(_path(cache, dataset).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # a damaged file reads as no subsets; the next save rewrites it
    return data if isinstance(data, dict) else {}


def _checked(dataset: Any, raw: dict[str, Any]) -> Subset | None:
    """A stored subset, if its ids still sit at its rows in this dataset (else None)."""
    rows = np.asarray(raw.get("rows", []), dtype=np.int64)
    ids = [str(x) for x in raw.get("ids", [])]
    n = len(dataset)
    if len(rows) != len(ids) or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
        return None
    if any(str(dataset.ids[int(r)]) != i for r, i in zip(rows, ids, strict=True)):
        return None
    return Subset(str(raw.get("name")), rows, float(raw.get("created", 0.0)), raw.get("filter"))


def list_subsets(dataset: Any, cache: Cache | None = None) -> list[Subset]:
    """The subsets kept with ``dataset``, newest first (any that no longer match it left out)."""
    stored = _read(cache or Cache(), dataset)
    found = [s for s in (_checked(dataset, raw) for raw in stored.values()) if s is not None]
    return sorted(found, key=lambda s: -s.created)


def get_subset(dataset: Any, name: str, cache: Cache | None = None) -> Subset:
    """One named subset of ``dataset`` (one-line error when there is none by that name)."""
    for s in list_subsets(dataset, cache):
        if s.name == name:
            return s
    raise ParallaxError(f"no subset named {name!r} is kept with this dataset")


def save_subset(
    dataset: Any,
    name: str,
    rows: Sequence[int] | np.ndarray,
    cache: Cache | None = None,
    filter_spec: list[dict[str, Any]] | None = None,
) -> Subset:
    """Keep ``rows`` of ``dataset`` as ``name`` (replacing a subset of that name)."""
    from engine.store.atomic import atomic_write_json

    cache = cache or Cache()
    name = check_name(name)
    r = np.unique(np.asarray(rows, dtype=np.int64))
    if len(r) == 0:
        raise ParallaxError("a subset needs at least one item: select some first")
    if r.min() < 0 or r.max() >= len(dataset):
        raise ParallaxError(f"subset rows must be between 0 and {len(dataset) - 1}")
    stored = _read(cache, dataset)
    if name not in stored and len(stored) >= MAX_SUBSETS:
        raise ParallaxError(f"at most {MAX_SUBSETS} subsets per dataset: delete one first")
    subset = Subset(name, r, time.time(), filter_spec)
    stored[name] = subset.to_json(dataset.ids)
    path = _path(cache, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, stored)
    return subset


def delete_subset(dataset: Any, name: str, cache: Cache | None = None) -> bool:
    """Forget a subset; False when there was none by that name."""
    from engine.store.atomic import atomic_write_json

    cache = cache or Cache()
    stored = _read(cache, dataset)
    if stored.pop(name, None) is None:
        return False
    atomic_write_json(_path(cache, dataset), stored)
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
