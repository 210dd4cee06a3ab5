"""``export``: one Parquet file with every item and every model's map (``Workspace.export``)."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import StderrProgress, add_models_option, emit, require_dataset, workspace
from engine.params import PROJECTION, PROJECTION_METHODS


def cmd_export(args: argparse.Namespace) -> int:
    result = workspace(args).export(
        require_dataset(args, "export"),
        args.model,
        args.out,
        method=args.method,
        vectors=args.vectors,
        neighbours=args.neighbours,
        thumbnails=args.thumbnails,
        progress=StderrProgress(args.quiet),
    )

    def human() -> None:
        print(f"{result.rows} rows, {len(result.columns)} columns -> {result.path}")
        for spec, (x, y) in result.map_columns.items():
            neighbours = result.neighbour_columns.get(spec)
            print(
                f"  {spec}: --x {x} --y {y}" + (f" --neighbors {neighbours}" if neighbours else "")
            )

    emit(args, result.to_json(), human)
    return 0


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="one Parquet: ids, labels, metadata, every model's x/y (Embedding Atlas, pandas)",
        description="Columns: id, label, [text], metadata, then per model <model>_x, <model>_y "
        "and optionally <model>_vector, <model>_neighbours ({ids, distances}: Embedding Atlas's "
        "--neighbors form) and image (PNG thumbnails).",
    )
    p.add_argument("--dataset", required=True, help="dataset spec")
    add_models_option(p)
    p.add_argument("--out", required=True, help="the .parquet file to write")
    p.add_argument("--method", choices=PROJECTION_METHODS, default=PROJECTION.method)
    p.add_argument("--vectors", action="store_true", help="also write each model's vectors")
    p.add_argument(
        "--neighbours",
        type=int,
        default=0,
        metavar="K",
        help="also write each item's K nearest (row ids and cosine distances, Atlas's form)",
    )
    p.add_argument("--thumbnails", action="store_true", help="also write 64px PNG thumbnails")
    p.set_defaults(func=cmd_export)
