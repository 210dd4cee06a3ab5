"""``bundle``: write a portable bundle (vectors, maps, thumbnails) of a dataset x models."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import StderrProgress, add_models_option, emit, require_dataset, workspace
from engine.params import PROJECTION_METHODS


def cmd_bundle(args: argparse.Namespace) -> int:
    result = workspace(args).bundle(
        require_dataset(args, "bundle"),
        args.model,
        args.out,
        methods=tuple(args.method or PROJECTION_METHODS),
        include_vectors=not args.no_vectors,
        progress=StderrProgress(args.quiet),
    )
    emit(
        args,
        result.to_json(),
        lambda: print(
            f"wrote {result.path}: {result.n} items, {len(result.models)} models, "
            f"{result.bytes / 1e6:.1f} MB"
        ),
    )
    return 0


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser("bundle", parents=[common, embed_opts], help="write a portable bundle")
    add_models_option(p)
    p.add_argument("--out", required=True, help="bundle file to write (e.g. demo.parallax.zip)")
    p.add_argument("--method", action="append", choices=PROJECTION_METHODS, help="default: both")
    p.add_argument("--no-vectors", action="store_true", help="leave vectors out (no search)")
    p.set_defaults(func=cmd_bundle)
