"""CLI subcommands for comparing models: ``predict``, ``compare`` and ``train-head``.

    python -m engine predict --model A --model B --labels cat,dog [--text "..."] FILE... --json
    python -m engine compare --dataset demo:digits --model baseline:pixels --model B --json
    python -m engine train-head --dataset demo:shapes --image-model A --text-model B --json

Registered through ``engine.cli.build_parser``; heavy imports stay inside the commands so
``python -m engine --help`` stays fast.
"""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import (
    EXIT_USER_ERROR,
    add_models_option,
    add_params_options,
    embed_options,
    emit,
    progress_for,
    require_dataset,
    workspace,
)
from engine.errors import ModelUnavailable, ParallaxError, error_body
from engine.params import COMPARE, HEAD_VARIANTS, HEADS, PREDICT, PredictParams, TrainConfig


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


# -- predict ---------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    templates = list(args.template or PREDICT.templates)
    texts = list(args.text or [])
    if not args.files and not texts:
        raise ParallaxError("predict needs image FILEs and/or --text")
    ws = workspace(args)
    images = [ws.read_image(f) for f in args.files]
    params = PredictParams(templates=tuple(templates), ensemble=args.ensemble, top_k=args.top_k)
    results = ws.predict(
        args.model, labels, images=images, texts=texts, params=params, device=args.device
    ).preds
    inputs = [{"kind": "image", "name": f} for f in args.files]
    inputs += [{"kind": "text", "name": t} for t in texts]
    payload: dict[str, Any] = {
        "labels": labels,
        "templates": templates if args.ensemble else templates[:1],
        "ensemble": args.ensemble,
        "inputs": inputs,
        "models": [r.to_json() for r in results],
        # every model's warnings, one line each, prefixed with its name (engine.analysis.answerable)
        "warnings": [f"{r.model}: {w}" for r in results for w in r.warnings],
    }
    answered = any(r.ok or r.images or r.texts for r in results)
    if not answered:  # the exit status says so, and under --json the one error object too
        why = "; ".join(f"{r.model}: {r.error}" for r in results)
        payload |= error_body(ModelUnavailable(f"no model could answer ({why})"))

    def human() -> None:
        for r in results:
            timing = "" if r.latency_ms is None else f" ({r.latency_ms:.0f} ms)"
            print(f"{r.model}{timing}" + (f"  error: {r.error}" if r.error else ""))
            for w in r.warnings:
                print(f"  warning: {w}")
            rows = list(zip(args.files, r.images or [], strict=False))
            rows += list(zip(texts, r.texts or [], strict=False))
            for name, top in rows:
                best = ", ".join(f"{lab} {100 * p:.1f}%" for lab, p, _ in top[:3])
                print(f"  {name}: {best}")

    emit(args, payload, human)
    return 0 if answered else EXIT_USER_ERROR


# -- compare ---------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    report = workspace(args).compare(
        require_dataset(args, "compare"),
        args.model,
        k=args.k,
        seed=args.seed,
        templates=args.template,
        ensemble=not args.no_ensemble,
        test_size=args.test_size,
        max_items=args.max_items or None,
        modality=args.modality,
        embed_options=embed_options(args),
        progress=progress_for(args),
    )
    payload = report.to_json()
    table = report.disagreements() if report.predictions else None
    payload["disagreements"] = (
        [] if table is None else table.head(args.disagreements).to_dict(orient="records")
    )

    def human() -> None:
        state = "cached" if report.cached else f"computed in {report.seconds:.1f}s"
        print(f"{report.dataset}: {report.n_used} of {report.n_total} items compared, {state}")
        print(f"  {'model':<44} {'dim':>5} {'kNN':>7} {'probe':>7} {'0-shot':>7}")
        for m in report.models:
            if m.get("error"):
                print(f"  {m['model']:<44} error: {m['error']}")
                continue
            probe = (m.get("linear_probe") or {}).get("accuracy")
            zs = (m.get("zero_shot") or {}).get("accuracy")
            print(
                f"  {m['model']:<44} {m['dim']:>5} {_fmt(m['knn_accuracy']):>7} "
                f"{_fmt(probe):>7} {_fmt(zs):>7}"
            )
        for p in report.pairwise:
            print(
                f"  {p['a']} vs {p['b']}: CKA {_fmt(p['cka'], False)}, "
                f"kNN overlap {_fmt(p['knn_overlap'], False)}"
            )
        if table is not None:
            print(f"  {len(table)} items where the models' kNN predictions disagree")
        for w in payload["warnings"]:
            print(f"  warning: {w}")

    emit(args, payload, human)
    return 0


# -- train-head ------------------------------------------------------------------------------
def cmd_train_head(args: argparse.Namespace) -> int:
    dataset = require_dataset(args, "train-head")
    if args.modality:
        raise ParallaxError(
            "train-head embeds images with --image-model and texts with --text-model; "
            "--modality does not apply"
        )
    variants = [v.strip() for chunk in args.variants for v in chunk.split(",") if v.strip()]
    config = TrainConfig(max_epochs=args.epochs, hidden=args.hidden)
    results = workspace(args).train_heads(
        dataset,
        args.image_model,
        args.text_model,
        variants=variants,
        seed=args.seed,
        test_size=args.test_size,
        config=config,
        embed_options=embed_options(args),
        progress=progress_for(args),
    )
    payload = {
        "dataset": args.dataset,
        "image_model": args.image_model,
        "text_model": args.text_model,
        "heads": {v: r.to_json() for v, r in results.items()},
    }

    def human() -> None:
        for v, r in results.items():
            state = "cached" if r.cached else f"trained in {r.seconds:.1f}s ({r.epochs} epochs)"
            print(f"{v:<7} held-out accuracy {_fmt(r.accuracy)}  {state}  {r.path}")

    emit(args, payload, human)
    return 0


# -- registration ----------------------------------------------------------------------------
def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser(
        "predict", parents=[common], help="zero-shot classify image files and texts, per model"
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="image files to classify")
    add_models_option(p)
    p.add_argument("--labels", required=True, help="comma-separated class names, e.g. cat,dog")
    p.add_argument(
        "--template",
        action="append",
        help="prompt template with {} for the label (repeatable; default: built-in set)",
    )
    p.add_argument("--ensemble", action="store_true", help="average over all templates")
    p.add_argument("--top-k", type=int, default=PREDICT.top_k)
    p.add_argument("--text", action="append", help="a text to classify (repeatable)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if present")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "compare", parents=[common, embed_opts], help="compare models on a dataset (cached)"
    )
    add_models_option(p)
    add_params_options(
        p,
        COMPARE,
        "k",
        "seed",
        "test_size",
        "max_items",
        k="neighbours for kNN accuracy and overlap",
        test_size="linear-probe test fraction",
        max_items=f"compare a seeded sample past this (default {COMPARE.max_items:,}; 0: all)",
    )
    p.add_argument("--template", action="append", help="zero-shot prompt template (repeatable)")
    p.add_argument("--no-ensemble", action="store_true", help="zero-shot with the first template")
    p.add_argument(
        "--disagreements", type=int, default=20, help="disagreement rows to include in --json"
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "train-head",
        parents=[common, embed_opts],
        help="train image/text/fusion classifier heads on cached embeddings",
    )
    p.add_argument("--image-model", required=True, help="model spec for the images")
    p.add_argument("--text-model", required=True, help="model spec for the texts")
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(HEAD_VARIANTS),
        help=f"heads to train (default: {' '.join(HEAD_VARIANTS)})",
    )
    add_params_options(p, HEADS, "seed", "test_size")
    p.add_argument(
        "--epochs",
        type=int,
        default=HEADS.train.max_epochs,
        help="maximum epochs (early stopping)",
    )
    p.add_argument(
        "--hidden", type=int, default=HEADS.train.hidden, help="hidden width of the heads"
    )
    p.set_defaults(func=cmd_train_head)
