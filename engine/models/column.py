"""The ``column:`` row of the adapter table: a dataset's own vectors are no model to load.

``engine.embed.local`` reads them from the dataset (``engine.data.column_vectors``); anything that
would
need to embed *new* inputs with them (zero-shot prompts, predictions on uploads, text search)
gets this one line instead.
"""

from __future__ import annotations

from engine.errors import ModelUnavailable
from engine.models.spec import ModelSpec


def load(spec: ModelSpec, device: str) -> None:
    raise ModelUnavailable(
        f"{spec.display} is the dataset's own precomputed vectors: it maps, compares and "
        "searches its items, but cannot embed new images or texts"
    )
