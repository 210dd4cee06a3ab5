"""Fusion classifier heads: small MLPs trained on cached image and/or text embeddings.

Four variants answer "how much does each modality add?": ``image`` only, ``text`` only,
``concat`` (an MLP on both vectors side by side) and ``gated`` (each side projected to a shared
width, mixed per dimension by a learnt sigmoid gate ``g(x_img, x_txt)``: the mean gate then says
how much the head leans on the image). All variants share one seeded split, so their held-out
accuracies are directly comparable.

Heads are saved as safetensors + a JSON sidecar under ``cache_root/heads/<key>/`` (never pickle:
a head file from someone else must not be able to run code). torch is imported lazily.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import CacheError, ParallaxError
from engine.params import HEAD_VARIANTS, HEAD_VERSION, HEADS, HeadParams, TrainConfig
from engine.params import head_uses as _uses

if TYPE_CHECKING:
    from engine.data.base import Dataset
    from engine.models.base import EmbeddingModel
    from engine.store.cache import Cache
    from engine.store.progress import ProgressCallback

# The variants, the key version and the training defaults are engine.params' (one owner).
VARIANTS = HEAD_VARIANTS
WEIGHTS_FILE = "head.safetensors"
SIDECAR_FILE = "head.json"


@dataclass
class FusionHead:
    """A trained head: enough to rebuild the module and name its outputs."""

    variant: str
    classes: list[str]
    image_dim: int
    text_dim: int
    hidden: int
    dropout: float
    state: dict[str, Any]  # name -> torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)  # model specs, accuracy, gate ...
    _module: Any = field(default=None, repr=False)

    def sidecar(self) -> dict[str, Any]:
        return {
            "version": HEAD_VERSION,
            "variant": self.variant,
            "classes": self.classes,
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "meta": self.meta,
        }

    def module(self) -> Any:
        """The torch module in eval mode (built once)."""
        if self._module is None:
            mod = _build(
                self.variant, self.image_dim, self.text_dim, self.hidden, len(self.classes)
            )
            mod.load_state_dict(self.state, strict=True)
            mod.eval()
            self._module = mod
        return self._module


@dataclass
class HeadResult:
    """One variant's outcome: held-out accuracy plus the head itself."""

    variant: str
    accuracy: float  # on the held-out test rows
    val_accuracy: float
    epochs: int  # epochs run (early stopping may end before max_epochs)
    best_epoch: int
    classes: list[str]
    head: FusionHead
    seconds: float = 0.0
    path: Path | None = None
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        scores = ("variant", "accuracy", "val_accuracy", "epochs", "best_epoch")
        return {k: getattr(self, k) for k in scores} | {
            "n_classes": len(self.classes),
            "mean_gate": self.head.meta.get("mean_gate"),
            "seconds": round(self.seconds, 3),
            "path": None if self.path is None else str(self.path),
            "cached": self.cached,
        }


# -- the torch module --------------------------------------------------------------------------
@functools.cache
def _head_class() -> type:
    """Define the module class on first use, so importing this file never imports torch."""
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(
            self, variant: str, d_img: int, d_txt: int, hidden: int, n_out: int, dropout: float
        ):
            super().__init__()
            self.variant = variant
            # Standardisation stats of the training rows travel with the weights.
            self.register_buffer("img_mean", torch.zeros(d_img))
            self.register_buffer("img_std", torch.ones(d_img))
            self.register_buffer("txt_mean", torch.zeros(d_txt))
            self.register_buffer("txt_std", torch.ones(d_txt))
            if variant == "gated":
                self.proj_img = nn.Linear(d_img, hidden)
                self.proj_txt = nn.Linear(d_txt, hidden)
                self.gate = nn.Linear(d_img + d_txt, hidden)
                self.out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))
            else:
                d_in = {"image": d_img, "text": d_txt, "concat": d_img + d_txt}[variant]
                self.mlp = nn.Sequential(
                    nn.Linear(d_in, hidden),
                    nn.GELU(),
                    nn.Dropout(dropout),
                    nn.Linear(hidden, n_out),
                )

        def _inputs(self, xi: Any, xt: Any) -> tuple[Any, Any]:
            xi = None if xi is None else (xi - self.img_mean) / self.img_std
            xt = None if xt is None else (xt - self.txt_mean) / self.txt_std
            return xi, xt

        def gate_values(self, xi: Any, xt: Any) -> Any:
            xi, xt = self._inputs(xi, xt)
            return torch.sigmoid(self.gate(torch.cat([xi, xt], dim=1)))

        def forward(self, xi: Any, xt: Any) -> Any:
            xi, xt = self._inputs(xi, xt)
            if self.variant == "image":
                return self.mlp(xi)
            if self.variant == "text":
                return self.mlp(xt)
            if self.variant == "concat":
                return self.mlp(torch.cat([xi, xt], dim=1))
            g = torch.sigmoid(self.gate(torch.cat([xi, xt], dim=1)))
            return self.out(g * self.proj_img(xi) + (1.0 - g) * self.proj_txt(xt))

    return Head


def _build(variant: str, d_img: int, d_txt: int, hidden: int, n_out: int, dropout: float = 0.0):
    if variant not in VARIANTS:
        raise ParallaxError(f"unknown head variant {variant!r}: choose from {', '.join(VARIANTS)}")
    return _head_class()(variant, d_img, d_txt, hidden, n_out, dropout)


# -- training ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread for the duration.

    These heads do ~256 x 1000 x 256 matmuls: far too small to gain from intra-op threads, and
    on a shared, busy CPU the threads' synchronisation made a step ~30x slower (measured 115 ms
    vs 3.8 ms on 2 loaded cores). One thread also makes the float results independent of the
    machine's core count.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _stats(x: Any) -> tuple[Any, Any]:
    return x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-6)


def _train_one(
    variant: str,
    xi: Any,
    xt: Any,
    y: Any,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    classes: list[str],
    seed: int,
    cfg: TrainConfig,
    progress: ProgressCallback | None,
) -> HeadResult:
    import torch
    import torch.nn.functional as F

    from engine.store.progress import ProgressTracker

    t0 = time.perf_counter()
    train, val, test = (torch.as_tensor(s, dtype=torch.long) for s in splits)
    d_img = 0 if xi is None else int(xi.shape[1])
    d_txt = 0 if xt is None else int(xt.shape[1])

    def take(x: Any, rows: Any) -> Any:
        return None if x is None else x[rows]

    tracker = ProgressTracker(f"train {variant} head", cfg.max_epochs, progress)
    # fork_rng: seeding for this head must not disturb anyone else's global torch RNG state.
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        model = _build(variant, d_img, d_txt, cfg.hidden, len(classes), cfg.dropout)
        with torch.no_grad():
            if xi is not None:
                model.img_mean[:], model.img_std[:] = _stats(xi[train])
            if xt is not None:
                model.txt_mean[:], model.txt_std[:] = _stats(xt[train])
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        order = torch.Generator().manual_seed(seed)
        best_loss, best_epoch, best_state, stale, epochs = float("inf"), 0, None, 0, 0
        for epoch in range(cfg.max_epochs):
            model.train()
            perm = train[torch.randperm(len(train), generator=order)]
            for b in range(0, len(perm), cfg.batch_size):
                rows = perm[b : b + cfg.batch_size]
                loss = F.cross_entropy(model(take(xi, rows), take(xt, rows)), y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            epochs = epoch + 1
            model.eval()
            with torch.no_grad():
                val_loss = float(F.cross_entropy(model(take(xi, val), take(xt, val)), y[val]))
            tracker.advance(1)
            if val_loss < best_loss - 1e-4:
                best_loss, best_epoch, stale = val_loss, epochs, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    tracker.done = tracker.total  # an early stop still finishes the bar
    tracker.emit()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        val_acc = float((model(take(xi, val), take(xt, val)).argmax(1) == y[val]).float().mean())
        test_acc = float(
            (model(take(xi, test), take(xt, test)).argmax(1) == y[test]).float().mean()
        )
        meta: dict[str, Any] = {}
        if variant == "gated":
            meta["mean_gate"] = float(model.gate_values(xi[test], xt[test]).mean())
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    head = FusionHead(variant, classes, d_img, d_txt, cfg.hidden, cfg.dropout, state, meta)
    head.meta.update({"accuracy": test_acc, "val_accuracy": val_acc, "train": cfg.to_json()})
    return HeadResult(
        variant=variant,
        accuracy=test_acc,
        val_accuracy=val_acc,
        epochs=epochs,
        best_epoch=best_epoch,
        classes=classes,
        head=head,
        seconds=time.perf_counter() - t0,
    )


def _three_way_split(
    labels: np.ndarray, test_size: float, val_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from engine.analysis.metrics import split_indices

    train_val, test = split_indices(labels, test_size, seed)
    tr, va = split_indices(labels[train_val], val_size, seed + 1)
    return train_val[tr], train_val[va], test


def train_heads(
    image_vectors: np.ndarray | None,
    text_vectors: np.ndarray | None,
    labels: Sequence[Any],
    *,
    variants: Sequence[str] = VARIANTS,
    seed: int = HEADS.seed,
    test_size: float = HEADS.test_size,
    progress: ProgressCallback | None = None,
    config: TrainConfig | None = None,
) -> dict[str, HeadResult]:
    """Train one head per variant on the same seeded train/validation/test split.

    Rows are items: ``image_vectors[i]``, ``text_vectors[i]`` and ``labels[i]`` describe the same
    item. A vector array a requested variant does not need may be None.
    """
    import torch

    cfg = config or TrainConfig()
    variants = list(dict.fromkeys(variants))
    for v in variants:
        if v not in VARIANTS:
            raise ParallaxError(f"unknown head variant {v!r}: choose from {', '.join(VARIANTS)}")
    need_img = any(_uses(v)[0] for v in variants)
    need_txt = any(_uses(v)[1] for v in variants)
    if need_img and image_vectors is None:
        raise ParallaxError("image vectors are needed for the image/concat/gated heads")
    if need_txt and text_vectors is None:
        raise ParallaxError("text vectors are needed for the text/concat/gated heads")
    y_str = np.asarray([str(x) for x in labels], dtype=object)
    n = len(y_str)
    for name, arr in (("image", image_vectors), ("text", text_vectors)):
        if arr is not None and len(arr) != n:
            raise ParallaxError(f"{name} vectors have {len(arr)} rows but there are {n} labels")
    classes, codes = np.unique(y_str, return_inverse=True)
    if len(classes) < 2:
        raise ParallaxError("a classifier head needs at least 2 classes")
    if n < 8:
        raise ParallaxError(f"too few labelled items to train and evaluate a head ({n})")
    splits = _three_way_split(y_str, test_size, cfg.val_size, seed)
    xi = torch.as_tensor(np.asarray(image_vectors, np.float32)) if need_img else None
    xt = torch.as_tensor(np.asarray(text_vectors, np.float32)) if need_txt else None
    y = torch.as_tensor(codes, dtype=torch.long)
    names = [str(c) for c in classes]
    out: dict[str, HeadResult] = {}
    for v in variants:
        use_img, use_txt = _uses(v)
        out[v] = _train_one(
            v,
            xi if use_img else None,
            xt if use_txt else None,
            y,
            splits,
            names,
            seed,
            cfg,
            progress,
        )
    return out


def predict_with_head(
    head: FusionHead, image_vec: np.ndarray | None, text_vec: np.ndarray | None
) -> np.ndarray:
    """Class probabilities ``(N, C)`` (columns in ``head.classes`` order); a single vector
    per side gives ``(1, C)``. The side a variant does not use may be None."""
    import torch

    use_img, use_txt = _uses(head.variant)

    def tensor(x: np.ndarray | None, needed: bool, dim: int, side: str) -> Any:
        if not needed:
            return None
        if x is None:
            raise ParallaxError(f"the {head.variant} head needs a {side} vector")
        arr = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if arr.shape[1] != dim:
            raise ParallaxError(
                f"the {head.variant} head expects {side} vectors of {dim} dims, got {arr.shape[1]}"
            )
        return torch.as_tensor(arr)

    xi = tensor(image_vec, use_img, head.image_dim, "image")
    xt = tensor(text_vec, use_txt, head.text_dim, "text")
    with torch.no_grad():
        return torch.softmax(head.module()(xi, xt), dim=1).numpy().astype(np.float64)


# -- saving and loading -------------------------------------------------------------------------
def save_head(head: FusionHead, directory: str | Path) -> Path:
    """Write ``head.safetensors`` then ``head.json`` (the sidecar last marks completeness)."""
    from safetensors.torch import save

    from engine.store.cache import atomic_write_bytes, atomic_write_json

    directory = Path(directory)
    atomic_write_bytes(directory / WEIGHTS_FILE, save(head.state))
    atomic_write_json(directory / SIDECAR_FILE, head.sidecar())
    return directory


def load_head(directory: str | Path) -> FusionHead:
    """Read a head written by ``save_head``. Raises ``CacheError`` if it is incomplete/corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        side = json.loads((directory / SIDECAR_FILE).read_text())
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CacheError(f"head at {directory} is missing or unreadable: {exc}") from exc
    if side.get("version") != HEAD_VERSION or side.get("variant") not in VARIANTS:
        raise CacheError(f"head at {directory} has an unsupported version or variant")
    head = FusionHead(
        variant=side["variant"],
        classes=[str(c) for c in side["classes"]],
        image_dim=int(side["image_dim"]),
        text_dim=int(side["text_dim"]),
        hidden=int(side["hidden"]),
        dropout=float(side["dropout"]),
        state=state,
        meta=dict(side.get("meta", {})),
    )
    try:
        head.module()  # strict load: a tampered or mismatched file fails here, not later
    except RuntimeError as exc:
        raise CacheError(f"head at {directory} does not match its sidecar: {exc}") from exc
    return head


def heads_dir(cache: Cache, key: str) -> Path:
    return cache.path("heads", key)


def _result_from_saved(head: FusionHead, path: Path) -> HeadResult:
    m = head.meta
    return HeadResult(
        variant=head.variant,
        accuracy=float(m.get("accuracy", float("nan"))),
        val_accuracy=float(m.get("val_accuracy", float("nan"))),
        epochs=int(m.get("epochs", 0)),
        best_epoch=int(m.get("best_epoch", 0)),
        classes=head.classes,
        head=head,
        path=path,
        cached=True,
    )


def train_heads_for_dataset(
    dataset: Dataset | str,
    image_model: str | EmbeddingModel,
    text_model: str | EmbeddingModel,
    *,
    cache: Cache | None = None,
    variants: Sequence[str] = VARIANTS,
    seed: int = HEADS.seed,
    test_size: float = HEADS.test_size,
    config: TrainConfig | None = None,
    embed_options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, HeadResult]:
    """Embed the dataset's images and texts (cached), train the heads, save each under
    ``cache_root/heads/<key>/``. A head already saved for the same vectors, labels and
    settings is loaded instead of retrained (``cached=True``)."""
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache
    from engine.store.memo import read_through

    cfg = config or TrainConfig()
    cache = Cache.or_default(cache)
    from engine.data import as_dataset

    dataset = as_dataset(dataset, cache.root)
    if not dataset.has_images or dataset.texts is None:
        raise ParallaxError(f"{dataset.spec} needs both images and texts to train fusion heads")
    opts = dict(embed_options or {})
    if isinstance(image_model, str) and image_model == text_model:
        # One CLIP for both sides: load it once rather than once per modality.
        from engine.models import load_model

        image_model = text_model = load_model(image_model, device=opts.get("device"))
    img = embed_dataset(
        dataset, image_model, modality="image", cache=cache, progress=progress, **opts
    )
    txt = embed_dataset(
        dataset, text_model, modality="text", cache=cache, progress=progress, **opts
    )

    failed = {f.get("id") for f in img.failed} | {f.get("id") for f in txt.failed}
    rows = np.array(
        [
            i
            for i, (item_id, lab) in enumerate(zip(dataset.ids, dataset.labels, strict=True))
            if lab is not None and item_id not in failed
        ],
        dtype=np.int64,
    )
    labels = [str(dataset.labels[i]) for i in rows]
    digest = hashlib.sha256(
        json.dumps([[dataset.ids[i] for i in rows], labels]).encode()
    ).hexdigest()

    head_params = HeadParams(seed=seed, test_size=test_size, train=cfg)

    def key_for(variant: str) -> str:
        return head_params.cache_key(variant, img.key, txt.key, digest)

    wanted = list(dict.fromkeys(variants))
    for v in wanted:
        if v not in VARIANTS:
            raise ParallaxError(f"unknown head variant {v!r}: choose from {', '.join(VARIANTS)}")

    def saved(path: Path) -> HeadResult | None:
        if not (path / SIDECAR_FILE).is_file():
            return None
        try:
            return _result_from_saved(load_head(path), path)
        except CacheError:
            return None  # corrupt: retrain and overwrite

    trained: dict[str, HeadResult] = {}

    def train(variant: str) -> HeadResult:
        """``variant`` trained together with every other wanted one not saved yet (one pass
        over the vectors for all of them)."""
        if variant not in trained:
            todo = [
                v
                for v in wanted
                if v == variant
                or (v not in trained and saved(heads_dir(cache, key_for(v))) is None)
            ]
            xi = np.asarray(img.vectors()[rows], dtype=np.float32)
            xt = np.asarray(txt.vectors()[rows], dtype=np.float32)
            fresh = train_heads(
                xi,
                xt,
                labels,
                variants=todo,
                seed=seed,
                test_size=test_size,
                progress=progress,
                config=cfg,
            )
            for v, res in fresh.items():
                res.head.meta.update(
                    {
                        "dataset": dataset.spec,
                        "image_model": img.model if _uses(v)[0] else None,
                        "text_model": txt.model if _uses(v)[1] else None,
                        "epochs": res.epochs,
                        "best_epoch": res.best_epoch,
                        "n_items": len(rows),
                    }
                )
                trained[v] = res
        return trained[variant]

    def make(variant: str) -> Callable[[Path], HeadResult]:
        def train_and_save(path: Path) -> HeadResult:
            res = train(variant)
            res.path = save_head(res.head, path)
            return res

        return train_and_save

    return {
        v: read_through(cache, "heads", key_for(v), read=saved, make=make(v)).value for v in wanted
    }
