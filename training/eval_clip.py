"""Measure a shapes CLIP on a held-out ``demo:shapes`` split; optionally write its model card.

    python -m training.eval_clip --model models/shapes-clip --json

Metrics (all on ``demo:shapes?n=N&seed=S``, a seed no training run uses by default):

* zero-shot shape / colour accuracy, two ways: ``simple`` prompts ("a circle", "a red shape")
  and ``ensemble`` prompts (the dataset's caption templates filled with every value of the
  other attributes, averaged per class, as in CLIP's prompt ensembling);
* text→image retrieval with each item's own caption as the query: recall@1 and @10 of that exact
  image among all N, plus ``match@1``: the top image has every attribute the caption names.
  Captions name 2-4 attributes, so dozens of images fit a caption equally well and exact
  recall@1 is capped well below 1; ``r1_ceiling`` is what a perfect attribute reader would
  score in expectation (it picks uniformly among the images that fit).

The model is loaded the way the app loads it (``engine.models.load_model`` with spec
``open_clip:local-dir:PATH``), and class vectors come from the engine's prompt embedding
(``engine.analysis.zeroshot.prompt_group_embeddings``), so these numbers are the app's numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.analysis.zeroshot import prompt_group_embeddings
from engine.data import shapes as demo  # the demo:shapes vocabulary and renderer
from engine.store.cache import atomic_write_bytes
from training.model_card import pct, write_model_card

if TYPE_CHECKING:
    from engine.models.base import EmbeddingModel

EVAL_SEED = 10_000
SIMPLE_SHAPE_PROMPTS = ("{a_shape} {shape}", "a picture of {a_shape} {shape}", "{shape}")
SIMPLE_COLOUR_PROMPTS = ("{a_colour} {colour} shape", "something {colour}", "{colour}")


def load_encoder(model_dir: str | Path, device: str | None = "cpu") -> EmbeddingModel:
    """The model in ``model_dir`` through the engine's open_clip adapter."""
    from engine.models import load_model

    return load_model(f"open_clip:local-dir:{Path(model_dir).resolve()}", device=device)


def _batched(fn: Callable[[list[Any]], np.ndarray], items: list[Any], bs: int) -> np.ndarray:
    return np.concatenate([fn(items[i : i + bs]) for i in range(0, len(items), bs)])


def _all_fills(templates: tuple[str, ...], **fixed: str) -> list[str]:
    """Every filling of ``templates`` with ``fixed`` attributes held and the others varied."""
    out = []
    for t in templates:
        for shape in [fixed["shape"]] if "shape" in fixed else demo.SHAPES:
            for colour in [fixed["colour"]] if "colour" in fixed else demo.COLOURS:
                for size in [fixed["size"]] if "size" in fixed else demo.SIZES:
                    for bg in demo.BACKGROUNDS:
                        out.append(demo.fill_template(t, shape, colour, size, bg))
    return sorted(set(out))


def evaluate(
    model_dir: str | Path,
    n: int = 2000,
    seed: int = EVAL_SEED,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """All metrics for one model folder, as a JSON-ready dict."""
    t0 = time.perf_counter()
    enc = load_encoder(model_dir, device)
    ds = demo.open_shapes(n=n, seed=seed)
    cols = ds.columns
    images = [ds.load_image(i) for i in range(n)]
    img = _batched(enc.embed_images, images, 256)
    txt = _batched(enc.embed_texts, list(ds.texts), 512)

    shape_true = cols["shape"].astype(np.int64)
    colour_true = cols["colour"].astype(np.int64)
    zs: dict[str, float] = {}
    for kind, prompts in (
        (
            "simple",
            [
                [demo.fill_template(t, s, "red", "small", "plain") for t in SIMPLE_SHAPE_PROMPTS]
                for s in demo.SHAPES
            ],
        ),
        ("ensemble", [_all_fills(demo.TEMPLATES, shape=s) for s in demo.SHAPES]),
    ):
        pred = (img @ prompt_group_embeddings(enc, prompts).T).argmax(axis=1)
        zs[f"shape_acc_{kind}"] = float((pred == shape_true).mean())
    for kind, prompts in (
        (
            "simple",
            [
                [
                    demo.fill_template(t, "circle", c, "small", "plain")
                    for t in SIMPLE_COLOUR_PROMPTS
                ]
                for c in demo.COLOURS
            ],
        ),
        ("ensemble", [_all_fills(demo.TEMPLATES, colour=c) for c in demo.COLOURS]),
    ):
        pred = (img @ prompt_group_embeddings(enc, prompts).T).argmax(axis=1)
        zs[f"colour_acc_{kind}"] = float((pred == colour_true).mean())

    # Text→image retrieval with each caption as the query.
    sims = txt @ img.T
    own = sims[np.arange(n), np.arange(n)]
    rank = (sims > own[:, None]).sum(axis=1)  # 0 = the item's own image is on top
    top1 = sims.argmax(axis=1)
    # Which attributes each caption names, from its template.
    names_size = np.array(["{size}" in t for t in demo.TEMPLATES])[cols["template"]]
    names_bg = np.array(["{bg}" in t for t in demo.TEMPLATES])[cols["template"]]
    keys = {k: cols[k].astype(np.int64) for k in ("shape", "colour", "size", "background")}

    def fits(q: np.ndarray | slice, cand: np.ndarray | slice) -> np.ndarray:
        ok = (keys["shape"][q] == keys["shape"][cand]) & (keys["colour"][q] == keys["colour"][cand])
        ok &= ~names_size[q] | (keys["size"][q] == keys["size"][cand])
        ok &= ~names_bg[q] | (keys["background"][q] == keys["background"][cand])
        return ok

    match_top1 = fits(np.arange(n), top1)
    n_fit = np.array([fits(i, slice(None)).sum() for i in range(n)])
    retrieval = {
        "r_at_1": float((rank < 1).mean()),
        "r_at_10": float((rank < 10).mean()),
        "match_at_1": float(match_top1.mean()),
        "r1_ceiling": float((1.0 / n_fit).mean()),
        "mean_images_fitting_caption": float(n_fit.mean()),
    }
    chance = {
        "shape_acc": 1 / len(demo.SHAPES),
        "colour_acc": 1 / len(demo.COLOURS),
        "r_at_1": 1 / n,
        "r_at_10": 10 / n,
        "match_at_1": float((n_fit / n).mean()),
    }
    return {
        "model": str(model_dir),
        "loader": "engine.models",
        "split": f"demo:shapes?n={n}&seed={seed}",
        "zero_shot": zs,
        "retrieval_t2i": retrieval,
        "chance": chance,
        "logit_scale": enc.logit_scale,
        "seconds": round(time.perf_counter() - t0, 1),
    }


HOLDOUT_SEED = 0
HOLDOUT_PER_CLASS = 60


def evaluate_holdout(
    model_dir: str | Path,
    n_per_class: int = HOLDOUT_PER_CLASS,
    seed: int = HOLDOUT_SEED,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Zero-shot shape and colour accuracy on drawings of ``training/holdout_shapes.py``.

    Each image is classified among the 9 prompts ``"a {colour} {shape}"``; the shape and the
    colour of the best prompt are scored separately (chance 1/3 each).
    """
    from training import holdout_shapes as holdout

    t0 = time.perf_counter()
    enc = load_encoder(model_dir, device)
    images, shapes, colours = holdout.holdout_set(n_per_class, seed)
    pairs = [(s, c) for s in holdout.SHAPES for c in holdout.COLOURS]
    classes = prompt_group_embeddings(
        enc, [[holdout.PROMPT.format(shape=s, colour=c)] for s, c in pairs]
    )
    best = (_batched(enc.embed_images, images, 256) @ classes.T).argmax(axis=1)
    shape_ok = np.array([pairs[b][0] == s for b, s in zip(best, shapes, strict=True)])
    colour_ok = np.array([pairs[b][1] == c for b, c in zip(best, colours, strict=True)])
    return {
        "split": f"holdout_shapes(n_per_class={n_per_class}, seed={seed})",
        "n": len(images),
        "prompt": holdout.PROMPT,
        "shapes": list(holdout.SHAPES),
        "colours": list(holdout.COLOURS),
        "shape_acc": float(shape_ok.mean()),
        "colour_acc": float(colour_ok.mean()),
        "both_acc": float((shape_ok & colour_ok).mean()),
        "chance": {"shape_acc": 1 / len(holdout.SHAPES), "colour_acc": 1 / len(holdout.COLOURS)},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.eval_clip", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, type=Path, help="model folder (local-dir)")
    p.add_argument("--n", type=int, default=2000, help="held-out items")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="held-out shapes seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--write-card",
        action="store_true",
        help="rewrite MODEL_CARD.md from training.json and these numbers",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    metrics = evaluate(args.model, n=args.n, seed=args.seed, device=args.device)
    holdout = evaluate_holdout(args.model, device=args.device)
    if args.write_card:
        summary = json.loads((args.model / "training.json").read_text())
        # The card and training.json carry the same measured numbers.
        summary["eval_holdout"] = holdout
        atomic_write_bytes(
            args.model / "training.json", (json.dumps(summary, indent=2) + "\n").encode()
        )
        write_model_card(args.model, summary, metrics, holdout)
    if args.json:
        print(json.dumps({**metrics, "holdout": holdout}, indent=2))
    else:
        zs, rt = metrics["zero_shot"], metrics["retrieval_t2i"]
        print(
            f"{args.model}: shape {pct(zs['shape_acc_ensemble'])} "
            f"(simple {pct(zs['shape_acc_simple'])}), colour {pct(zs['colour_acc_ensemble'])} "
            f"(simple {pct(zs['colour_acc_simple'])}), R@1 {pct(rt['r_at_1'])}, "
            f"R@10 {pct(rt['r_at_10'])}, match@1 {pct(rt['match_at_1'])}; other renderer: "
            f"shape {pct(holdout['shape_acc'])}, colour {pct(holdout['colour_acc'])}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
