"""The dataset protocol every source (demo, folder, manifest, archive) implements.

A dataset is an ordered, fixed list of items. Row ``i`` always means the same item, so vectors
(``N x D`` arrays) and 2-D maps line up with ``ids``/``labels``/``texts``/``metadata`` by row.
Images are loaded lazily by index, which is what lets ``demo:shapes`` reach a million items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image


@dataclass(frozen=True)
class SkippedItem:
    """An item that was left out of the dataset, and why (shown to the user as-is)."""

    source: str  # file name, manifest row, archive member ... whatever locates it for the user
    reason: str


@dataclass(frozen=True)
class Item:
    """One row, materialised (for galleries and hover previews; bulk code uses the columns)."""

    id: str
    label: str | None
    text: str | None
    has_image: bool
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Dataset(Protocol):
    spec: str  # the string that opened it, e.g. "demo:digits" or "folder:/data/pets"
    name: str  # short display name
    ids: list[str]  # unique, stable
    labels: list[str | None]
    texts: list[str | None] | None  # None when the dataset has no text at all
    has_images: bool
    skipped: list[SkippedItem]

    def __len__(self) -> int: ...

    def load_image(self, index: int) -> Image.Image:
        """Decode item ``index`` as an RGB image. Raises ``ItemError`` if it cannot."""
        ...

    def metadata(self) -> pd.DataFrame:
        """Extra columns, one row per item in dataset order (may have no columns)."""
        ...

    def fingerprint(self) -> str:
        """A full content hash (hex) of everything a model would see: image bytes, texts.

        Two datasets with the same fingerprint give identical vectors under the same model.
        Never computed from a sample of the content.
        """
        ...
