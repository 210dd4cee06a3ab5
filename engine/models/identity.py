"""A model's identity without building the model (so cached work never imports torch).

The identity that keys every cached vector (``base.make_identity`` of the spec, the weights and
the preprocessing) is set by the adapter when it builds the model, because its preprocessing
part is what the model library resolves (open_clip's merged image config, the transformers
image processor, the tokenizer class): only the library can say. What can be known without it
is the model's *source*: its spec, the content hash of the files the adapter would read (the
same ``weights`` string the adapter hashes: a folder digest, a hub snapshot commit, a file
digest) and the versions of the libraries that resolve the preprocessing.

So the first time a model is built for the engine, ``remember`` records the identity the
adapter produced under that source (the cache's ``identities`` namespace); afterwards ``recall``
hashes the files again and reads the identity back, with no model library imported. Any
change to a weight or config file, or to a library version, is a new source: the model is
built once more and its identity recorded again. Baselines have no files: their identity
comes from their parameters directly. An ``open_clip:ARCH/TAG`` spec names weights through
open_clip's own table, so it has no torch-free source and is always built.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from engine.errors import ModelUnavailable
from engine.models.registry import adapter_for
from engine.models.spec import ModelSpec, parse_spec
from engine.store.memo import json_entry

if TYPE_CHECKING:
    from engine.models.base import EmbeddingModel
    from engine.store.cache import Cache

log = logging.getLogger(__name__)

IDENTITIES = "identities"  # the cache namespace of the records
RECORD_VERSION = 1


@dataclass(frozen=True)
class KnownModel:
    """What the engine knows of a model without building it: enough to find its cached vectors
    (``spec``, ``modalities`` and ``identity`` are the loaded model's own)."""

    spec: str
    modalities: frozenset[str]
    identity: str
    dim: int | None = None
    cpu_only: bool = False  # always runs on the CPU (baselines), whatever device is asked for


def runs_on_cpu(device: str | None) -> bool:
    """Will a model asked for on ``device`` surely run on the CPU? Answered without torch: an
    explicit ``cpu``, or the default device on a machine with no NVIDIA driver (where
    ``resolve_device`` cannot pick CUDA). On a GPU machine the answer is "not sure": False."""
    name = (device or "").strip().lower()
    if name == "cpu":
        return True
    if name not in ("", "auto"):
        return False
    return not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0"))


def _versions(distributions: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def source_key(spec: ModelSpec) -> str | None:
    """The hash of everything the adapter's identity depends on that is readable from disk
    without a model library; None when there is no such source (see the module docstring)."""
    module = importlib.import_module(adapter_for(spec).module)
    weights = module.weights_source(spec)
    if weights is None:
        return None
    blob = json.dumps(
        {
            "version": RECORD_VERSION,
            "spec": spec.identity_key,
            "weights": weights,
            "libraries": _versions(tuple(module.LIBRARIES)),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _parse(spec: str | ModelSpec) -> ModelSpec | None:
    if isinstance(spec, ModelSpec):
        return spec
    try:
        return parse_spec(spec)
    except ModelUnavailable:
        return None  # not a registry spec (e.g. a test fake): the caller builds the model


def recall(spec: str | ModelSpec, cache: Cache) -> KnownModel | None:
    """The model's identity without building it, or None when it is not known yet.

    Cheap and torch-free: parses the spec, hashes the model's files (memoised per file) and
    reads one small JSON record. A spec that does not parse gives None; loading it will say why.
    """
    parsed = _parse(spec)
    if parsed is None:
        return None
    adapter = adapter_for(parsed)
    module = importlib.import_module(adapter.module)
    exact = getattr(module, "identity_from_parameters", None)
    if exact is not None:
        return KnownModel(
            parsed.display,
            adapter.modalities(parsed),
            exact(parsed),
            cpu_only=not adapter.needs_torch,
        )
    key = source_key(parsed)
    if key is None:
        return None
    path = cache.path(IDENTITIES, key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # a torn or foreign file: rebuilt on the next load
        log.warning("ignoring unreadable model identity record %s: %s", path, exc)
        return None
    return KnownModel(
        parsed.display,
        frozenset(record["modalities"]),
        str(record["identity"]),
        record.get("dim"),
    )


def remember(spec: str | ModelSpec, model: EmbeddingModel, cache: Cache) -> None:
    """Record the identity a freshly built ``model`` (loaded from ``spec``) reported."""
    parsed = _parse(spec)
    if parsed is None or parsed.kind == "baseline":
        return
    key = source_key(parsed)
    if key is None:
        return
    record = {
        "spec": parsed.canonical,
        "identity": model.identity,
        "modalities": sorted(model.modalities),
        "dim": int(model.dim),
    }
    if not json_entry(cache, IDENTITIES, key, lambda: record).cached:
        log.info("recorded the identity of %s (source %s)", parsed.display, key[:12])
