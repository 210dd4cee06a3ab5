"""What the cache already holds, answered from the cache alone: no model is built, no torch.

The one place that says which embeddings exist for a dataset (the Embed, Map and Compare pages,
the CLI and the HTTP service all ask it), whether a map is cached and whether a comparison is.
A vectors entry belongs to a dataset when its dataset fingerprint matches *and* it has one row
per item (an entry of another size is stale and never offered).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.analysis.compare import comparison_key
from engine.embed.local import choose_modality, vectors_key
from engine.models.identity import recall
from engine.params import ProjectionParams
from engine.store.cache import Cache, Entry

if TYPE_CHECKING:
    from engine.analysis.compare import ComparisonReport
    from engine.data.base import Dataset
    from engine.params import CompareParams


def embeddings(dataset: Dataset, cache: Cache | None = None) -> dict[str, dict[str, Entry]]:
    """``{model spec: {modality: newest finished vectors entry}}`` of this dataset."""
    cache = cache or Cache()
    fp = dataset.fingerprint()
    n = len(dataset)
    out: dict[str, dict[str, Entry]] = {}
    for e in cache.entries("vectors"):  # newest first
        m = e.manifest
        if m.get("dataset_fingerprint") != fp or int(m.get("n", -1)) != n:
            continue
        out.setdefault(str(m.get("model")), {}).setdefault(str(m.get("modality")), e)
    return out


def embeddings_by(dataset: Dataset, model_spec: str, cache: Cache | None = None) -> list[Entry]:
    """This dataset's finished vectors entries made by ``model_spec`` (as it was written when
    they were embedded), one per modality, newest first."""
    found = embeddings(dataset, cache).get(model_spec, {})
    return sorted(found.values(), key=lambda e: e.manifest.get("created", ""), reverse=True)


def cached_vectors(
    dataset: Dataset,
    model_spec: str,
    modality: str | None = None,
    cache: Cache | None = None,
) -> Entry | None:
    """The entry ``embed_dataset(dataset, model_spec, modality=...)`` would return as cached,
    found through the model's identity (``engine.models.identity``); None when it is not
    cached or the identity is not known without building the model."""
    cache = cache or Cache()
    known = recall(model_spec, cache)
    if known is None:
        return None
    return cache.get(
        "vectors", vectors_key(dataset, known, choose_modality(dataset, known, modality))
    )


def cached_map(
    vectors: Entry | str, params: ProjectionParams | None = None, cache: Cache | None = None
) -> Entry | None:
    """The finished 2-D map of these vectors (an entry or its key) with ``params``, or None."""
    cache = cache or Cache()
    source = vectors.key if isinstance(vectors, Entry) else vectors
    return cache.get("projections", (params or ProjectionParams()).cache_key(source))


def cached_comparison(
    dataset: Dataset,
    vectors_keys: Sequence[str],
    params: CompareParams | Mapping[str, Any],
    cache: Cache | None = None,
) -> dict[str, Any] | None:
    """The stored comparison (its JSON) of these vectors with these settings, or None."""
    cache = cache or Cache()
    path = cache.path("compare", comparison_key(dataset, vectors_keys, params))
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def comparison_modality(
    dataset: Dataset, entries: Mapping[str, Entry], requested: str | None = None
) -> str | None:
    """The modality ``compare_models`` uses for a model whose cached entries are ``entries``
    (``{modality: entry}``), from the cache alone: images when the dataset has them and the
    model embedded them, else texts (as ``engine.embed.local.choose_modality``). None when the
    entry it needs is not cached."""
    if requested is not None:
        return requested if requested in entries else None
    if dataset.has_images and "image" in entries:
        return "image"
    if dataset.texts is not None and "text" in entries:
        return "text"
    return None


def cached_report(
    dataset: Dataset,
    embedded: Mapping[str, Mapping[str, Entry]],
    model_specs: Sequence[str],
    params: CompareParams,
    cache: Cache | None = None,
) -> ComparisonReport | None:
    """The report ``compare_models(dataset, model_specs, **params)`` would return from the
    cache, found without loading a model: each model's vectors from ``embedded`` (what
    ``embeddings`` returned), then the comparison of exactly those vectors and settings.
    None when a model's vectors or the comparison are not cached (or the entry is unreadable).
    """
    from engine.analysis.compare import ComparisonReport

    keys = []
    for spec in model_specs:
        entries = embedded.get(spec, {})
        modality = comparison_modality(dataset, entries)
        if modality is None:
            return None
        keys.append(entries[modality].key)
    data = cached_comparison(dataset, keys, params, cache)
    if data is None:
        return None
    try:
        return ComparisonReport.from_json(data, cached=True)
    except (KeyError, TypeError, ValueError):
        return None  # an entry of an older layout: compared afresh and overwritten
