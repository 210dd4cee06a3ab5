"""MODEL_CARD.md for a trained shapes CLIP, written from its training summary and measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.data.shapes import COLOURS, SHAPES
from engine.settings import REPO_ROOT
from engine.store.cache import atomic_write_bytes


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def write_model_card(
    folder: str | Path,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    holdout: dict[str, Any] | None = None,
) -> Path:
    """MODEL_CARD.md from a training summary and its evaluations (numbers are measured):
    ``metrics`` on held-out ``demo:shapes``, ``holdout`` on the second renderer."""
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
        else "caption template re-drawn every step from the 10 dataset templates and 7 more "
        "wordings (scenes never get one naming the background)"
    )
    if summary["partial_p"]:
        caption_style += (
            f", plus {pct(summary['partial_p'])} short partial prompts "
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
        f"| {label} | {pct({**zs, **rt}[key])} | {pct(ch[chance_key])} |"
        for label, key, chance_key in rows
    )
    if "patch_size" in v:
        vision = (
            f"ViT (open_clip VisionTransformer), 64×64 input, patch {v['patch_size']}, "
            f"width {v['width']}, {v['layers']} layers, "
            + (
                "mean pooling over the patch tokens"
                if v.get("pool_type") == "avg"
                else "class-token pooling"
            )
            + (
                ", fixed 2-D sine-cosine positions"
                if v.get("pos_embed_type") == "sin_cos_2d"
                else ""
            )
            + (
                "; mimetic initialisation (each attention head's query-key product starts near "
                "the identity, value-output near minus it, positions as the 2-D sine-cosine "
                "table; Trockman & Kolter, 2023)"
                if summary.get("vit_init") == "mimetic"
                else ""
            )
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
    aux = float(summary.get("aux_weight") or 0.0)
    aux_text = (
        f", plus {aux:g} × the mean cross-entropy of three linear heads reading shape, colour "
        "and size from the image embedding (a direct signal so the image tower separates "
        "shapes within a short CPU budget; the heads are not saved, zero-shot goes through the "
        "text tower)"
        if aux
        else ""
    )
    teacher = summary.get("teacher")
    teacher_text = (
        f", plus {summary['distill_weight']:g} × the mean cosine distance between each image "
        f"embedding and the one `{teacher}` gives the same image (distillation). The text "
        f"tower and the temperature are copied from `{teacher}` and frozen, so both models "
        "read a prompt the same way and differ only in how they see"
        + (
            f" (the teacher's weights are those of git {summary['teacher_commit']}; check that "
            "commit out to rerun the command)"
            if summary.get("teacher_commit")
            else ""
        )
        if teacher
        else ""
    )
    temperature = "the teacher's fixed temperature" if teacher else "a learnable temperature"
    recipe = (
        f"Symmetric InfoNCE (open_clip `ClipLoss`) with {temperature}{aux_text}{teacher_text}; "
        "AdamW "
        f"(lr {summary['lr']}, betas 0.9/0.98, weight decay {summary['weight_decay']} on "
        f"matrices only), linear warm-up {summary['warmup']} steps then cosine decay; "
        f"{summary['steps']} steps × batch {summary['batch_size']}"
        f"{', half of each batch mirrored left-right' if summary.get('hflip') else ''}; "
        f"seed {summary['seed']}; "
        f"deterministic torch algorithms, torch threads: {summary['threads']}, device "
        f"{summary['device']}. Training took {summary['train_seconds']:.0f} s "
        f"({summary['total_seconds']:.0f} s with rendering and evaluation) on the "
        f"2-core x86-64 CPU of the development box (24 GiB, no GPU"
        f"{'; ' + summary['machine_note'] if summary.get('machine_note') else ''}); "
        f"torch {summary['versions']['torch']}, "
        f"open_clip {summary['versions']['open_clip']}."
    )
    n_scenes = int(summary.get("n_scenes") or 0)
    scenes = (
        f"""
Plus {n_scenes:,} augmented scenes (`training/scenes.py`, seed {summary["data_seed"]}): the
same shape, colour and size words drawn filled, outlined or bordered, antialiased or aliased,
rotated, at 48–128 px resized to 64 with a random filter; each colour word a band of hue,
saturation and value; on flat (white to black), gradient, textured or photographic backgrounds
(random crops of {len(summary.get("photos", []))} photographs shipped with scikit-learn and
scikit-image: {", ".join(summary.get("photos", []))}); up to two smaller distractor shapes of
another shape and colour (the caption names the largest); blur, pixel noise and JPEG artefacts.
"""
        if n_scenes
        else ""
    )
    holdout_text = "" if holdout is None else _holdout_section(holdout)
    if n_scenes:
        intro = (
            "A small CLIP (open_clip format) trained on Parallax's generated `demo:shapes` images "
            "and\naugmented drawings of the same shapes, so the dashboard has a real image–text "
            "model that\nworks offline. It knows 8 shapes, 8 colours and 3 sizes of drawn shapes, "
            "and nothing else."
        )
        scope = (
            "- Only for drawn shapes from its vocabulary, seen at 64×64. Photographs without such "
            "a shape\n  and other datasets embed to meaningless points."
        )
    else:
        intro = (
            "A small CLIP (open_clip format) trained from scratch on Parallax's generated "
            "`demo:shapes`\nimages only, so the dashboard has a real image–text model that works "
            "offline. It knows shapes,\ncolours, sizes and background textures of 64×64 "
            "synthetic images, and nothing else: it has\nnot been retrained on the augmented "
            "scenes, and on another renderer (below) it reads colour\nbut not shape."
        )
        scope = (
            "- Only for `demo:shapes`-like images: 64×64, one flat-coloured shape on a muted "
            "background.\n  Shapes drawn any other way and photos embed to meaningless points."
        )
    init = summary.get("init_from")
    init_note = f", starting from {init}" if init else ""
    init_prep = (
        f"""
A later stage: it starts from {init}. Put those weights in a folder first, e.g.
`git worktree add /tmp/v1 {summary["init_commit"]}`, then pass
`--init-from /tmp/v1/models/{name}` (the card in that folder gives the command that made them).
"""
        if init and summary.get("init_commit")
        else ""
    )
    card = f"""# {name}

{intro}

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
{scenes}
Captions: {caption_style}.
Evaluation: `{metrics["split"]}`, a seed no training run uses, and the renderer below.

## Training recipe
{recipe}

Exact command (run it under `nice -n 10` on a shared machine):
{init_prep}
```
{summary["command"]}
```

The run is deterministic: the same command on the same machine type, thread count and library
versions gives the same weights bit for bit (checked on a few steps by
`tests/test_training.py`), and so the same numbers below.

## Measured results in domain ({metrics["split"]})
Loaded through {metrics["loader"]}.

| metric | value | chance |
|---|---|---|
{table}

Exact recall@1 is capped: a caption names only 2–4 attributes, so on average
{rt["mean_images_fitting_caption"]:.0f} of the {n_eval} images fit it equally well; a perfect
attribute reader would score about {pct(rt["r1_ceiling"])} recall@1. `match@1` is the fairer
retrieval number.

{holdout_text}
Reproduce these numbers from the shipped weights (about 20 s on one CPU core):

```
python -m training.eval_clip --model {out_rel} --json
```

## Limits
{scope}
- Vocabulary of {t["vocab_size"]} words; unknown words are `[UNK]`. Words in the vocabulary
  that never appear in training captions (e.g. "big", "color") carry no meaning.
- Position and rotation are not in the captions, so the model is not trained to tell them
  apart.
- Trained on a shared CPU for {summary["train_seconds"] / 60:.0f} minutes{init_note}: fine for a
  demo and for tests, not a benchmark of CLIP itself.
"""
    path = folder / "MODEL_CARD.md"
    atomic_write_bytes(path, card.encode())
    return path


def _holdout_section(holdout: dict[str, Any]) -> str:
    chance = holdout["chance"]
    rows = [
        ("zero-shot shape accuracy", holdout["shape_acc"], chance["shape_acc"]),
        ("zero-shot colour accuracy", holdout["colour_acc"], chance["colour_acc"]),
        ("both right", holdout["both_acc"], chance["shape_acc"] * chance["colour_acc"]),
    ]
    table = "\n".join(f"| {label} | {pct(v)} | {pct(c)} |" for label, v, c in rows)
    return f"""
## Measured results on another renderer ({holdout["split"]})
Drawings made by different code that training never sees (`training/holdout_shapes.py`:
signed-distance fields, 96×96, one plain filled shape near the centre on a light flat
background, matplotlib tab10 colours): {", ".join(holdout["shapes"])} ×
{", ".join(holdout["colours"])}, {holdout["n"]} images. Each image is matched against the 9
prompts "{holdout["prompt"]}"; shape and colour of the best prompt are scored separately.

| metric | value | chance |
|---|---|---|
{table}
"""
