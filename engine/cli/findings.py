"""``python -m engine findings``: what is wrong or interesting in a dataset, under every model.

    python -m engine findings --dataset D --model A [--model B ...] [--split-column split]
        [--label-column COL] --json

prints one JSON object: ``n``, ``models``, ``label_errors``, ``duplicates``, ``outliers`` (most
outlying first), ``leaks``, ``clusters`` (per model), plus ``per_model`` and the settings.
Rows are the dataset's row indices. Progress goes to stderr; a user error is one line, exit 2.
"""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import (
    add_models_option,
    add_params_options,
    emit,
    progress_for,
    require_dataset,
)
from engine.params import FINDINGS, FindingsParams


def cmd_findings(args: argparse.Namespace) -> int:
    from engine.workspace import Workspace

    ws = Workspace(args.cache_dir)
    params = FindingsParams(
        k=max(args.k, args.label_k, args.outlier_k),
        label_k=args.label_k,
        outlier_k=args.outlier_k,
        seed=args.seed,
    )
    found = ws.find(
        require_dataset(args, "findings"),
        args.model,
        label_column=args.label_column,
        split_column=args.split_column,
        params=params,
        progress=progress_for(args),
    )

    def human() -> None:
        state = "cached" if found.cached else f"computed in {found.seconds:.1f}s"
        print(f"{found.n} items under {len(found.models)} model(s), {state}")
        exact = sum(1 for d in found.duplicates if d["exact"])
        flagged = [o for o in found.outliers if o["models"]]
        print(f"  label errors      {len(found.label_errors)}")
        print(f"  duplicate groups  {len(found.duplicates)} ({exact} exact)")
        print(f"  outliers          {len(flagged)} flagged ({len(found.outliers)} ranked)")
        print(f"  leaks             {len(found.leaks)}")
        for model, clusters in found.clusters.items():
            names = ", ".join(c["name"] for c in clusters[:6])
            more = "" if len(clusters) <= 6 else ", ..."
            print(f"  clusters {model}: {len(clusters)} ({names}{more})")
        for e in found.label_errors[:5]:
            print(
                f"    row {e['row']}: {e['label']} -> {e['suggested']} ({', '.join(e['models'])})"
            )

    emit(args, found.to_json(), human)
    return 0


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser(
        "findings",
        parents=[common],
        help="label errors, duplicates, outliers, leaks and named clusters (cached)",
    )
    p.add_argument("--dataset", help="dataset spec, e.g. demo:digits or manifest:PATH")
    add_models_option(p)
    p.add_argument("--label-column", help="metadata column holding the labels (default: labels)")
    p.add_argument(
        "--split-column", help="column whose values duplicates must not cross (default: split)"
    )
    add_params_options(p, FINDINGS, "k", "label_k", "outlier_k", "seed", k="neighbours per item")
    p.set_defaults(func=cmd_findings)
