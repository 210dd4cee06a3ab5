"""Measure a shapes CLIP on a held-out ``demo:shapes`` split; optionally write its model card.

    python -m engine.eval_clip --model models/shapes-clip --json

Metrics (all on ``demo:shapes?n=N&seed=S``, a seed no training run uses by default):

* zero-shot shape / colour accuracy, two ways: ``simple`` prompts ("a circle", "a red shape")
  and ``ensemble`` prompts (the dataset's caption templates filled with every value of the
  other attributes, averaged per class, as in CLIP's prompt ensembling);
* text→image retrieval with each item's own caption as the query: recall@1 and @10 of that exact
  image among all N, plus ``match@1``: the top image has every attribute the caption names.
  Captions name 2-4 attributes, so dozens of images fit a caption equally well and exact
  recall@1 is capped well below 1; ``r1_ceiling`` is what a perfect attribute reader would
  score in expectation (it picks uniformly among the images that fit).

The model is loaded through the project's adapter (``engine.models.load_model`` with spec
``open_clip:local-dir:PATH``) when that exists, else through plain open_clip
``create_model_and_transforms('local-dir:PATH')`` + ``get_tokenizer('local-dir:PATH')``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import REPO_ROOT
from engine.datasets.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SIZES,
    TEMPLATES,
    fill_template,
    open_shapes,
)

EVAL_SEED = 10_000
SIMPLE_SHAPE_PROMPTS = ("{a_shape} {shape}", "a picture of {a_shape} {shape}", "{shape}")
SIMPLE_COLOUR_PROMPTS = ("{a_colour} {colour} shape", "something {colour}", "{colour}")


@dataclass
class Encoder:
    """What evaluation needs from a model, whichever way it was loaded."""

    embed_images: Callable[[list[Any]], np.ndarray]
    embed_texts: Callable[[list[str]], np.ndarray]
    logit_scale: float | None
    loader: str


def _open_clip_encoder(model_dir: Path, threads: int) -> Encoder:
    import open_clip
    import torch

    torch.set_num_threads(threads)
    name = f"local-dir:{model_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()

    @torch.no_grad()
    def embed_images(images: list[Any]) -> np.ndarray:
        batch = torch.stack([preprocess(im) for im in images])
        return model.encode_image(batch, normalize=True).float().numpy()

    @torch.no_grad()
    def embed_texts(texts: list[str]) -> np.ndarray:
        return model.encode_text(tokenizer(texts), normalize=True).float().numpy()

    scale = float(model.logit_scale.detach().exp())
    return Encoder(embed_images, embed_texts, scale, "open_clip local-dir")


def _engine_encoder(model_dir: Path) -> Encoder | None:
    """The project's own adapter, if it exists yet (another module owns it)."""
    try:
        from engine.models import load_model  # type: ignore[attr-defined]
    except ImportError:
        return None
    model = load_model(f"open_clip:local-dir:{model_dir}")
    return Encoder(model.embed_images, model.embed_texts, model.logit_scale, "engine.models")


def load_encoder(model_dir: str | Path, loader: str = "auto", threads: int = 1) -> Encoder:
    """``loader``: ``auto`` (the engine adapter when present), ``engine`` or ``open_clip``."""
    model_dir = Path(model_dir).resolve()
    if loader in ("auto", "engine"):
        enc = _engine_encoder(model_dir)
        if enc is not None:
            return enc
        if loader == "engine":
            raise SystemExit("engine.models.load_model is not available")
    return _open_clip_encoder(model_dir, threads)


def _batched(fn: Callable[[list[Any]], np.ndarray], items: list[Any], bs: int) -> np.ndarray:
    return np.concatenate([fn(items[i : i + bs]) for i in range(0, len(items), bs)])


def _class_embeddings(enc: Encoder, prompts: list[list[str]]) -> np.ndarray:
    """Mean of each class's normalised prompt embeddings, normalised again."""
    flat = [p for group in prompts for p in group]
    emb = _batched(enc.embed_texts, flat, 512)
    out, start = [], 0
    for group in prompts:
        m = emb[start : start + len(group)].mean(axis=0)
        out.append(m / np.linalg.norm(m))
        start += len(group)
    return np.stack(out)


def _all_fills(templates: tuple[str, ...], **fixed: str) -> list[str]:
    """Every filling of ``templates`` with ``fixed`` attributes held and the others varied."""
    out = []
    for t in templates:
        for shape in [fixed["shape"]] if "shape" in fixed else SHAPES:
            for colour in [fixed["colour"]] if "colour" in fixed else COLOURS:
                for size in [fixed["size"]] if "size" in fixed else SIZES:
                    for bg in BACKGROUNDS:
                        out.append(fill_template(t, shape, colour, size, bg))
    return sorted(set(out))


def evaluate(
    model_dir: str | Path,
    n: int = 2000,
    seed: int = EVAL_SEED,
    loader: str = "auto",
    threads: int = 1,
) -> dict[str, Any]:
    """All metrics for one model folder, as a JSON-ready dict."""
    t0 = time.perf_counter()
    enc = load_encoder(model_dir, loader, threads)
    ds = open_shapes(n=n, seed=seed)
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
                [fill_template(t, s, "red", "small", "plain") for t in SIMPLE_SHAPE_PROMPTS]
                for s in SHAPES
            ],
        ),
        ("ensemble", [_all_fills(TEMPLATES, shape=s) for s in SHAPES]),
    ):
        pred = (img @ _class_embeddings(enc, prompts).T).argmax(axis=1)
        zs[f"shape_acc_{kind}"] = float((pred == shape_true).mean())
    for kind, prompts in (
        (
            "simple",
            [
                [fill_template(t, "circle", c, "small", "plain") for t in SIMPLE_COLOUR_PROMPTS]
                for c in COLOURS
            ],
        ),
        ("ensemble", [_all_fills(TEMPLATES, colour=c) for c in COLOURS]),
    ):
        pred = (img @ _class_embeddings(enc, prompts).T).argmax(axis=1)
        zs[f"colour_acc_{kind}"] = float((pred == colour_true).mean())

    # Text→image retrieval with each caption as the query.
    sims = txt @ img.T
    own = sims[np.arange(n), np.arange(n)]
    rank = (sims > own[:, None]).sum(axis=1)  # 0 = the item's own image is on top
    top1 = sims.argmax(axis=1)
    # Which attributes each caption names, from its template.
    names_size = np.array(["{size}" in t for t in TEMPLATES])[cols["template"]]
    names_bg = np.array(["{bg}" in t for t in TEMPLATES])[cols["template"]]
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
        "shape_acc": 1 / len(SHAPES),
        "colour_acc": 1 / len(COLOURS),
        "r_at_1": 1 / n,
        "r_at_10": 10 / n,
        "match_at_1": float((n_fit / n).mean()),
    }
    return {
        "model": str(model_dir),
        "loader": enc.loader,
        "split": f"demo:shapes?n={n}&seed={seed}",
        "zero_shot": zs,
        "retrieval_t2i": retrieval,
        "chance": chance,
        "logit_scale": enc.logit_scale,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def write_model_card(folder: str | Path, summary: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """MODEL_CARD.md from a training summary and its evaluation (numbers are measured)."""
    folder = Path(folder)
    name = Path(summary["out"]).name
    out_path = Path(summary["out"])
    # Paths in the card are relative to the repository when the model lives inside it.
    out_rel = (
        out_path.relative_to(REPO_ROOT).as_posix()
        if out_path.is_relative_to(REPO_ROOT)
        else out_path.as_posix()
    )
    cfg = summary["model_cfg"]
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    zs, rt, ch = metrics["zero_shot"], metrics["retrieval_t2i"], metrics["chance"]
    size_mb = summary["folder_bytes"] / 1e6
    caption_style = (
        "each item's own caption, fixed (one wording per image)"
        if summary["captions"] == "fixed"
        else "caption template re-drawn every step from the 10 dataset templates"
    )
    if summary["partial_p"]:
        caption_style += (
            f", plus {_pct(summary['partial_p'])} short partial prompts "
            '("a circle", "a red shape", "a small star" …)'
        )
    n_eval = metrics["split"].split("n=")[1].split("&")[0]
    rows = [
        ("zero-shot shape accuracy, ensemble prompts", "shape_acc_ensemble", "shape_acc"),
        ('zero-shot shape accuracy, simple prompts ("a circle")', "shape_acc_simple", "shape_acc"),
        ("zero-shot colour accuracy, ensemble prompts", "colour_acc_ensemble", "colour_acc"),
        (
            'zero-shot colour accuracy, simple prompts ("a red shape")',
            "colour_acc_simple",
            "colour_acc",
        ),
        ("text→image recall@1 (own caption, exact image)", "r_at_1", "r_at_1"),
        ("text→image recall@10", "r_at_10", "r_at_10"),
        ("text→image match@1 (top image fits every attribute named)", "match_at_1", "match_at_1"),
    ]
    table = "\n".join(
        f"| {label} | {_pct({**zs, **rt}[key])} | {_pct(ch[chance_key])} |"
        for label, key, chance_key in rows
    )
    if "patch_size" in v:
        vision = (
            f"ViT, 64×64 input, patch {v['patch_size']}, width {v['width']}, {v['layers']} layers"
        )
    else:
        vision = (
            f"ResNet (open_clip ModifiedResNet), 64×64 input, stem width {v['width']}, "
            f"blocks per stage {v['layers']}, attention pooling"
        )
    text = (
        f"transformer, context {t['context_length']}, width {t['width']}, "
        f"{t['layers']} layers, pooled at `[EOS]`"
    )
    recipe = (
        f"Symmetric InfoNCE (open_clip `ClipLoss`) with a learnable temperature; AdamW "
        f"(lr {summary['lr']}, betas 0.9/0.98, weight decay {summary['weight_decay']} on "
        f"matrices only), linear warm-up {summary['warmup']} steps then cosine decay; "
        f"{summary['steps']} steps × batch {summary['batch_size']}; seed {summary['seed']}; "
        f"deterministic torch algorithms, torch threads: {summary['threads']}, device "
        f"{summary['device']}. Training took {summary['train_seconds']:.0f} s "
        f"({summary['total_seconds']:.0f} s with rendering and evaluation) on the shared "
        f"2-core CPU of the development box (niced, other jobs running); "
        f"torch {summary['versions']['torch']}, "
        f"open_clip {summary['versions']['open_clip']}."
    )
    card = f"""# {name}

A small CLIP (open_clip format) trained from scratch on Parallax's generated `demo:shapes`
images, so the dashboard has a real image–text model that works offline. It knows shapes,
colours, sizes and background textures of 64×64 synthetic images, and nothing else.

Load it with `open_clip:local-dir:{out_rel}` in Parallax, or directly:

```python
import open_clip
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{out_rel}")
tokenizer = open_clip.get_tokenizer("local-dir:{out_rel}")
```

The tokenizer is a word-level Hugging Face tokenizer stored in this folder (`tokenizer.json`,
{t["vocab_size"]} tokens); open_clip loads it from the folder because
`text_cfg.hf_tokenizer_name` is set, which needs the `transformers` package. Words outside the
vocabulary become `[UNK]`.

## Model
| | |
|---|---|
| image tower | {vision} |
| text tower | {text} |
| embedding | {cfg["embed_dim"]}-d, L2-normalised; learnt logit scale {metrics["logit_scale"]:.1f} |
| parameters | {summary["params"]:,} |
| folder size | {size_mb:.2f} MB (float32 safetensors + tokenizer + config) |

## Data
Training: `demo:shapes?n={summary["n_train"]}&seed={summary["data_seed"]}`
({summary["n_train"]:,} generated images: {len(SHAPES)} shapes, {len(COLOURS)} colours,
3 sizes, 5 background textures on 10 muted tones, random position and rotation).
Captions: {caption_style}.
Evaluation: `{metrics["split"]}`, a seed no training run uses.

## Training recipe
{recipe}

Exact command (run it under `nice -n 10` on a shared machine):

```
{summary["command"]}
```

The run is deterministic: the same command on the same machine type, thread count and library
versions gives the same weights bit for bit (checked on a few steps by
`tests/test_train_clip.py`), and so the same numbers below.

## Measured results ({metrics["split"]})
Loaded through {metrics["loader"]}.

| metric | value | chance |
|---|---|---|
{table}

Exact recall@1 is capped: a caption names only 2–4 attributes, so on average
{rt["mean_images_fitting_caption"]:.0f} of the {n_eval} images fit it equally well; a perfect
attribute reader would score about {_pct(rt["r1_ceiling"])} recall@1. `match@1` is the fairer
retrieval number.

Reproduce these numbers from the shipped weights (about 15 s on one CPU core):

```
python -m engine.eval_clip --model {out_rel} --json
```

## Limits
- Only for `demo:shapes`-like images: 64×64, one flat-coloured shape on a muted background.
  Photos and other datasets embed to meaningless points.
- Vocabulary of {t["vocab_size"]} words; unknown words are `[UNK]`. Words in the vocabulary
  that never appear in training captions (e.g. "big", "color") carry no meaning.
- Position and rotation are not in the captions, so the model is not trained to tell them
  apart.
- Trained on CPU for minutes: fine for a demo and for tests, not a benchmark of CLIP itself.
"""
    path = folder / "MODEL_CARD.md"
    path.write_text(card)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engine.eval_clip", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model", required=True, type=Path, help="model folder (local-dir)")
    p.add_argument("--n", type=int, default=2000, help="held-out items")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="held-out shapes seed")
    p.add_argument("--loader", choices=["auto", "engine", "open_clip"], default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--write-card",
        action="store_true",
        help="rewrite MODEL_CARD.md from training.json and these numbers",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout")
    args = p.parse_args(argv)
    metrics = evaluate(
        args.model, n=args.n, seed=args.seed, loader=args.loader, threads=args.threads
    )
    if args.write_card:
        summary = json.loads((args.model / "training.json").read_text())
        write_model_card(args.model, summary, metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        zs, rt = metrics["zero_shot"], metrics["retrieval_t2i"]
        print(
            f"{args.model}: shape {_pct(zs['shape_acc_ensemble'])} "
            f"(simple {_pct(zs['shape_acc_simple'])}), colour {_pct(zs['colour_acc_ensemble'])} "
            f"(simple {_pct(zs['colour_acc_simple'])}), R@1 {_pct(rt['r_at_1'])}, "
            f"R@10 {_pct(rt['r_at_10'])}, match@1 {_pct(rt['match_at_1'])}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
