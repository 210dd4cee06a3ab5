"""Every engine default, and the cache-key material made from it, in one place.

Each job the engine caches takes a small frozen parameter object. The object's field defaults
are *the* defaults: the engine's function signatures, the CLI's flags and the dashboard's widgets
all read them from here (``ProjectionParams.fit_sample`` is the class attribute holding the
default), so a default is written once. Each object also produces the material its cache key is
made of (``key_material``) or the key itself, so a page can tell whether a result is cached
without restating the recipe.

Key material must not change for the same parameters: finished cache entries are found by these
keys (``tests/test_params.py`` pins them). This module imports nothing heavy and nothing from the
engine except the key hash, so every module may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from engine.errors import ParallaxError
from engine.store.cache import make_key

# -- embedding ----------------------------------------------------------------------------------
IMAGE = "image"
TEXT = "text"


@dataclass(frozen=True)
class EmbedParams:
    """How a dataset is embedded. None means "decide at run time": the modality from what the
    model and dataset offer, the batch size from the model, decode threads from the cores, the
    device from what is present. None of these change the vectors, so none is in the key."""

    modality: str | None = None
    batch_size: int | None = None
    workers: int | None = None
    device: str | None = None

    @staticmethod
    def vectors_key(
        fingerprint: str, model_identity: Any, modality: str, compute: dict[str, str] | None = None
    ) -> str:
        """The ``vectors/<key>`` of (dataset content, model identity, modality), plus how they
        were computed when that is not fp32 with Pillow decoding (``compute``: precision, GPU
        decoder; ``engine.models.device.compute_material``). Empty ``compute`` adds nothing, so
        CPU keys are the same as before the GPU path existed."""
        extra = {"compute": dict(compute)} if compute else {}
        return make_key(
            kind="vectors", dataset=fingerprint, model=model_identity, modality=modality, **extra
        )


# -- generated demo data -------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapesParams:
    """``demo:shapes?n=N&seed=S``: how many captioned shapes, from which seed (both are part of
    the dataset's fingerprint). The allowed range of ``n`` is ``engine.data.shapes``'."""

    n: int = 2000
    seed: int = 0


# -- projection ---------------------------------------------------------------------------------
PROJECTION_METHODS = ("umap", "pca")


@dataclass(frozen=True)
class ProjectionParams:
    """A 2-D map: the method, its seed, and (UMAP only) the neighbours, spread and fit sample.

    Above ``fit_sample`` points UMAP is fitted on a seeded sample and the rest are placed by
    their nearest sample points (``engine.maps.project``). PCA's key holds only the seed.
    """

    method: str = "umap"
    seed: int = 0
    n_neighbors: int = 15
    min_dist: float = 0.1
    fit_sample: int = 50_000

    def __post_init__(self) -> None:
        if self.method not in PROJECTION_METHODS:
            raise ParallaxError(
                f"unknown projection method {self.method!r}: choose from {PROJECTION_METHODS}"
            )

    def key_material(self) -> dict[str, Any]:
        """The settings that change the map (the ``params`` of its manifest)."""
        material: dict[str, Any] = {"seed": self.seed}
        if self.method == "umap":
            material |= {
                "n_neighbors": self.n_neighbors,
                "min_dist": self.min_dist,
                "fit_sample": self.fit_sample,
            }
        return material

    def cache_key(self, source_key: str) -> str:
        """The ``projections/<key>`` of this map of the vectors whose key is ``source_key``."""
        return make_key(
            kind="projection", source=source_key, method=self.method, **self.key_material()
        )


# -- zero-shot prompts --------------------------------------------------------------------------
# A short ensemble in the spirit of CLIP's prompt engineering; the bare "{}" keeps models trained
# on terse captions (like the demo shapes CLIP) on familiar ground.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a {}.",
    "an image of a {}.",
    "a picture of a {}.",
    "a close-up photo of a {}.",
    "{}",
)


def check_templates(templates: Sequence[str]) -> list[str]:
    """The templates as a list, each holding exactly one ``{}`` (else ``ParallaxError``)."""
    out = [str(t) for t in templates]
    if not out:
        raise ParallaxError("no prompt templates given (use e.g. 'a photo of a {}.')")
    for t in out:
        if t.count("{}") != 1:
            raise ParallaxError(f"prompt template {t!r} must contain '{{}}' exactly once")
    return out


@dataclass(frozen=True)
class PredictParams:
    """Zero-shot predictions on uploads: prompts, whether to average them, answers per input."""

    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    ensemble: bool = False
    top_k: int = 5


# -- comparison ---------------------------------------------------------------------------------
COMPARE_VERSION = 1  # part of every comparison key: bump when a metric's definition changes


@dataclass(frozen=True)
class CompareParams:
    """A comparison of models on one dataset (``engine.analysis.compare.compare_models``).

    ``max_items``: past this many rows a seeded sample is compared (exact kNN is O(N^2 D));
    None compares every row. ``max_train``: the linear probe's training rows are capped here.
    """

    k: int = 10
    seed: int = 0
    templates: tuple[str, ...] | None = None  # None: DEFAULT_TEMPLATES
    ensemble: bool = True
    test_size: float = 0.25
    max_items: int | None = 10_000
    max_train: int | None = 20_000

    def checked_templates(self) -> list[str]:
        return check_templates(DEFAULT_TEMPLATES if self.templates is None else self.templates)

    def key_material(self) -> dict[str, Any]:
        """The ``params`` a comparison is keyed and reported with."""
        return {
            "k": int(self.k),
            "seed": int(self.seed),
            "templates": self.checked_templates(),
            "ensemble": bool(self.ensemble),
            "test_size": float(self.test_size),
            "max_items": self.max_items,
            "max_train": self.max_train,
            "version": COMPARE_VERSION,
        }

    def items_compared(self, n: int) -> int:
        """How many of ``n`` rows a comparison uses."""
        return n if self.max_items is None else min(int(self.max_items), n)


# -- fusion heads -------------------------------------------------------------------------------
HEAD_VARIANTS: tuple[str, ...] = ("image", "text", "concat", "gated")
HEAD_VERSION = 1  # part of every head key: bump when architecture or training changes


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a fusion head; small and fixed so that a head trains in seconds on a
    CPU. All of them are part of the head's cache key (``to_json``)."""

    hidden: int = 256
    dropout: float = 0.1
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 8  # epochs without a better validation loss before stopping
    val_size: float = 0.15  # of the training rows, held out for early stopping

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def head_uses(variant: str) -> tuple[bool, bool]:
    """(needs image vectors, needs text vectors) for a head variant."""
    return variant != "text", variant != "image"


@dataclass(frozen=True)
class HeadParams:
    """Fusion heads trained on cached vectors: which variants, the split, the training."""

    variants: tuple[str, ...] = HEAD_VARIANTS
    seed: int = 0
    test_size: float = 0.25
    train: TrainConfig = field(default_factory=TrainConfig)

    def with_epochs(self, max_epochs: int, hidden: int | None = None) -> HeadParams:
        train = replace(self.train, max_epochs=int(max_epochs))
        if hidden is not None:
            train = replace(train, hidden=int(hidden))
        return replace(self, train=train)

    def cache_key(
        self, variant: str, image_key: str | None, text_key: str | None, labels_digest: str
    ) -> str:
        """The ``heads/<key>`` of one variant trained on these vectors and labels (the vectors
        a variant does not use are left out of its key)."""
        uses_image, uses_text = head_uses(variant)
        return make_key(
            kind="head",
            version=HEAD_VERSION,
            variant=variant,
            image=image_key if uses_image else None,
            text=text_key if uses_text else None,
            labels=labels_digest,
            seed=self.seed,
            test_size=self.test_size,
            train=self.train.to_json(),
        )


# -- search -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchParams:
    """Nearest items to a query: how many, and when an inverted-file index replaces exact search
    (exact faiss search is a full pass over the vectors; IVF visits ``nprobe`` of its lists)."""

    k: int = 10
    max_k: int = 1000
    ivf_above: int = 50_000
    nprobe: int = 16


# The defaults, as objects: ``PROJECTION.fit_sample`` reads better at a call site than a literal.
SHAPES = ShapesParams()
SEARCH = SearchParams()
PROJECTION = ProjectionParams()
PCA = ProjectionParams(method="pca")
PREDICT = PredictParams()
COMPARE = CompareParams()
HEADS = HeadParams()


# -- findings -----------------------------------------------------------------------------------
FINDINGS_VERSION = 2  # part of every findings key: bump when a kind's definition changes


@dataclass(frozen=True)
class FindingsParams:
    """Findings on a dataset under several models (``engine.analysis.findings``).

    Every cut is relative to a model's own distribution (robust z-scores: distance to the
    median in units of 1.4826 MAD), never a fixed similarity, so a pixel model and a semantic
    model each flag what is unusual *for them*.

    ``k``: neighbours per item in each model's graph. ``label_k``: the neighbours whose labels
    vote for an item's out-of-sample class probabilities. ``outlier_k``: the rank of the
    neighbour whose distance scores an outlier (larger than the small groups outliers come
    in). ``dup_z`` / ``dup_z_combined``: the robust z below a model's typical nearest-neighbour
    distance that makes a pair near duplicates for that model / for the models together.
    ``outlier_z``: the robust z of the outlier score past which a model flags an item.
    ``min_cluster_size`` None: from the number of items. ``exact_below``: exact k-NN up to this
    many items, an IVF index on a PCA of the vectors above.
    """

    k: int = 50
    label_k: int = 15
    outlier_k: int = 50
    dup_scale_rank: int = 3
    dup_z: float = 3.0
    dup_z_combined: float = 0.8
    outlier_z: float = 3.0
    min_cluster_size: int | None = None
    cluster_sample: int = 10_000
    cluster_dims: int = 10
    exact_below: int = 100_000
    max_listed: int = 5_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.label_k <= self.k or not 2 <= self.outlier_k <= self.k:
            raise ParallaxError("findings: label_k and outlier_k are 2 to k")

    def key_material(self) -> dict[str, Any]:
        """The ``params`` a findings entry is keyed and reported with."""
        return {**asdict(self), "version": FINDINGS_VERSION}


FINDINGS = FindingsParams()
