"""``python -m engine``: every engine job, headless, with ``--json`` output for scripts.

One module per command group (``listing``, ``embedding``, ``export``, ``bundle``, ``cache``,
``compare``); each exposes ``register(sub, common, embed_opts)`` and keeps its heavy imports
inside the commands, so ``python -m engine --help`` stays fast. Shared helpers live in
``engine.cli.common``.
stdout carries the result (one JSON object with ``--json``); progress and errors go to stderr.
A user error exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.cli import bundle, cache, compare, embedding, export, findings, listing, serve
from engine.cli.common import EXIT_USER_ERROR, StderrProgress
from engine.errors import ParallaxError

__all__ = ["COMMAND_GROUPS", "EXIT_USER_ERROR", "StderrProgress", "build_parser", "main"]

# In the order ``--help`` lists them.
COMMAND_GROUPS = (listing, embedding, export, bundle, cache, compare, findings, serve)


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """``--json``, ``--cache-dir``, ``--quiet``. Given before or after the command alike: the
    command's copies have no defaults (``SUPPRESS``), so they never overwrite a value given
    before the command with their own default."""
    common = argparse.ArgumentParser(
        add_help=False, argument_default=None if defaults else argparse.SUPPRESS
    )
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--cache-dir", help="cache root (default: $PARALLAX_CACHE or ./cache)")
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(defaults=False)
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Parallax engine: datasets, models, cached embeddings and 2-D maps.",
        parents=[_common_options(defaults=True)],
    )
    sub = parser.add_subparsers(dest="command", required=True)

    embed_opts = argparse.ArgumentParser(add_help=False)
    embed_opts.add_argument("--dataset", help="dataset spec, e.g. demo:digits or folder:PATH")
    embed_opts.add_argument("--modality", choices=["image", "text"], help="default: automatic")
    embed_opts.add_argument("--batch-size", type=int, help="default: the model's own")
    embed_opts.add_argument("--workers", type=int, help="image decode threads (default: cores)")
    embed_opts.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if present")

    for group in COMMAND_GROUPS:
        group.register(sub, common, embed_opts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ParallaxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run again to resume", file=sys.stderr)
        return 130
