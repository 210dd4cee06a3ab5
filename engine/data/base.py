"""The dataset protocol every source (demo, folder, manifest, archive) implements.

A dataset is an ordered, fixed list of items. Row ``i`` always means the same item, so vectors
(``N x D`` arrays) and 2-D maps line up with ``ids``/``labels``/``texts``/``metadata`` by row.
Images are loaded lazily by index, which is what lets ``demo:shapes`` reach a million items.

Besides the protocol this module holds what every implementation shares: ``item``/``thumbnail``
helpers (usable on *any* object following the protocol), a small base class that provides them
as methods, and ``ContentHasher`` for full-content fingerprints.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.errors import ItemError

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


# -- helpers that work on any Dataset ---------------------------------------------------------
def _plain(value: Any) -> Any:
    """NumPy scalars -> Python scalars, so an ``Item`` can go straight into JSON."""
    to_python = getattr(value, "item", None)
    if callable(to_python) and type(value).__module__ == "numpy":
        return to_python()
    return value


def dataset_item(dataset: Dataset, index: int) -> Item:
    """Materialise row ``index`` of any dataset (metadata included)."""
    n = len(dataset)
    if not 0 <= index < n:
        raise ItemError(f"index {index} out of range 0..{n - 1}")
    meta = dataset.metadata()
    row = {str(k): _plain(v) for k, v in meta.iloc[index].items()} if len(meta.columns) else {}
    return Item(
        id=dataset.ids[index],
        label=dataset.labels[index],
        text=None if dataset.texts is None else dataset.texts[index],
        has_image=dataset.has_images,
        metadata=row,
    )


def dataset_thumbnail(dataset: Dataset, index: int, size: int = 64) -> Image.Image:
    """Item ``index`` scaled (up or down) to fit in ``size`` x ``size``, aspect kept, RGB."""
    from PIL import Image, ImageOps

    if not dataset.has_images:
        raise ItemError(f"{dataset.spec} has no images")
    image = dataset.load_image(index)
    # Small sources (8x8 digits, icons) stay crisp when blown up; photos are resampled smoothly.
    upscale = image.width < size and image.height < size
    method = Image.Resampling.NEAREST if upscale else Image.Resampling.BICUBIC
    return ImageOps.contain(image, (size, size), method=method)


ESTIMATE_SAMPLE = 20_000  # past this many rows, a dataset's size is estimated from a sample


def approx_nbytes(dataset: Any) -> int:
    """Roughly what an opened dataset holds in memory: its ids, labels and texts (with
    CPython's per-string overhead), its metadata table, and any image bytes it keeps (a
    bundle's thumbnails). For budgets (``PARALLAX_DATASET_CACHE_BYTES``), not accounting.
    A dataset that holds its columns as arrays says so itself (``held_nbytes()``): asking its
    ``ids`` here would turn them into Python strings."""
    own = getattr(dataset, "held_nbytes", None)
    if callable(own):
        return int(own())
    per_string = 56  # sys.getsizeof("") on CPython 3.11 (compact ASCII)

    def count(values: Any) -> int:
        return sum(per_string + len(v) for v in values if isinstance(v, str))

    def strings(values: Any) -> int:
        values = values or ()
        n = len(values) if isinstance(values, Sequence) else 0
        if n > ESTIMATE_SAMPLE:  # an even sample, scaled: a 10M-item count took ~10 s
            sample = values[:: -(-n // ESTIMATE_SAMPLE)]
            return int(count(sample) * n / len(sample))
        return count(values)

    total = strings(getattr(dataset, "ids", ())) + strings(getattr(dataset, "labels", ()))
    total += strings(getattr(dataset, "texts", None) or ())
    # A dataset without a table, or one that cannot say, counts nothing for it.
    with contextlib.suppress(Exception):
        table = dataset.metadata()
        rows = len(table)
        if rows > ESTIMATE_SAMPLE:
            sample = table.iloc[:: -(-rows // ESTIMATE_SAMPLE)]
            total += int(sample.memory_usage(deep=True, index=False).sum() * rows / len(sample))
        else:
            total += int(table.memory_usage(deep=True).sum())
    thumbs = getattr(dataset, "_thumbs", None) or ()
    total += sum(len(t) for t in thumbs if t is not None)
    return total


class DatasetBase:
    """Shared behaviour for the datasets of this package: ``__len__``, ``item``, ``thumbnail``.

    Subclasses set the protocol attributes and implement ``load_image``, ``_metadata_frame``
    and ``fingerprint``. ``metadata()`` hands out a shallow copy so a caller adding a column
    cannot change what the next caller sees.
    """

    spec: str
    name: str
    ids: list[str]
    labels: list[str | None]
    texts: list[str | None] | None
    has_images: bool
    skipped: list[SkippedItem]

    _meta_cache: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r}: {len(self)} items>"

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise ItemError(f"index {index} out of range 0..{len(self) - 1}")

    def _metadata_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(index=range(len(self)))

    def metadata(self) -> pd.DataFrame:
        if self._meta_cache is None:
            self._meta_cache = self._metadata_frame().reset_index(drop=True)
        return self._meta_cache.copy(deep=False)

    def item(self, index: int) -> Item:
        return dataset_item(self, index)  # type: ignore[arg-type]

    def thumbnail(self, index: int, size: int = 64) -> Image.Image:
        return dataset_thumbnail(self, index, size)  # type: ignore[arg-type]


# -- who opens: the operator's columnar allowance ---------------------------------------------
# ``PARALLAX_MAX_ITEMS`` bounds every dataset by default. A manifest without images holds its
# ids, texts and labels as Arrow columns (tens of bytes a row, no Python object per item), so the
# operator (``Workspace`` without a policy: the command line, scripts) may open one of up to
# ``PARALLAX_MAX_TABLE_ITEMS`` rows. Only the operator's workspace opens inside
# ``operator_tables()``; everything else, visitors included, keeps ``MAX_ITEMS`` (deny by default).
_TABLE_ITEMS: ContextVar[bool] = ContextVar("parallax_operator_tables", default=False)


@contextlib.contextmanager
def operator_tables(allowed: bool = True) -> Iterator[None]:
    """Datasets opened inside may be columnar manifests of up to ``MAX_TABLE_ITEMS`` rows
    (``allowed=False``: the default limit, for a visitor's workspace)."""
    token = _TABLE_ITEMS.set(allowed)
    try:
        yield
    finally:
        _TABLE_ITEMS.reset(token)


def decode_budget(columnar: bool) -> tuple[int, str]:
    """What one table being opened may decode to, and the setting that says so:
    ``TABLE_DECODE_BYTES`` for a ``columnar`` table opened by the operator (never below
    ``DECODE_BYTES``), else ``DECODE_BYTES``."""
    from engine import settings

    if columnar and _TABLE_ITEMS.get() and settings.TABLE_DECODE_BYTES > settings.DECODE_BYTES:
        return (
            settings.TABLE_DECODE_BYTES,
            "PARALLAX_TABLE_DECODE_BYTES, the operator's allowance over PARALLAX_DECODE_BYTES",
        )
    return settings.DECODE_BYTES, "PARALLAX_DECODE_BYTES"


def past_items_limit(dataset: Any) -> bool:
    """Whether ``dataset`` is a table of more rows than ``MAX_ITEMS``: only the operator's
    allowance (``operator_tables``) opens one."""
    from engine import settings

    rows = getattr(dataset, "table_rows", None)
    return isinstance(rows, int) and rows > settings.MAX_ITEMS


def visitor_refusal(dataset: Any) -> str | None:
    """Why a visitor may not have ``dataset`` (None when they may): a table of more rows than
    ``MAX_ITEMS``, which only the operator's allowance opens (and holds, for every caller of
    the same process)."""
    from engine import settings

    if past_items_limit(dataset):
        rows = dataset.table_rows
        return (
            f"{getattr(dataset, 'spec', 'the dataset')} has {rows:,} rows, over the limit of "
            f"{settings.MAX_ITEMS:,} for visitors of this deployment (PARALLAX_MAX_ITEMS)"
        )
    return None


def item_limit(columnar: bool) -> tuple[int, str]:
    """The most items a dataset being opened may have, and the setting that says so:
    ``MAX_TABLE_ITEMS`` for a ``columnar`` table opened by the operator (never below
    ``MAX_ITEMS``), else ``MAX_ITEMS``."""
    from engine import settings

    if columnar and _TABLE_ITEMS.get() and settings.MAX_TABLE_ITEMS > settings.MAX_ITEMS:
        return settings.MAX_TABLE_ITEMS, "PARALLAX_MAX_TABLE_ITEMS"
    return settings.MAX_ITEMS, "PARALLAX_MAX_ITEMS"


# -- fingerprints -----------------------------------------------------------------------------
class ContentHasher:
    """Feeds typed, length-prefixed fields into BLAKE2b so that no two different sequences of
    fields hash alike (``("ab", "c")`` vs ``("a", "bc")``, ``None`` vs ``""``)."""

    def __init__(self, kind: str) -> None:
        self._h = hashlib.blake2b(digest_size=32)
        self.add(f"parallax-dataset|{kind}")

    def add(self, value: str | bytes | int | None) -> None:
        if value is None:
            self._h.update(b"N;")
            return
        if isinstance(value, int):
            value = str(value)
            tag = b"I"
        else:
            tag = b"B" if isinstance(value, bytes) else b"S"
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        self._h.update(tag + str(len(data)).encode() + b":" + data)

    def add_row(self, *values: str | bytes | int | None) -> None:
        for value in values:
            self.add(value)
        self._h.update(b"|")

    def add_encoded(self, data: bytes | memoryview) -> None:
        """Bytes already laid out as ``add_row`` lays out its fields (rows encoded a block at
        a time by array code: ``engine.data.manifest``)."""
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()
