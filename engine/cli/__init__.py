"""``python -m engine``: every engine job, headless, with ``--json`` output for scripts.

One module per command group (``listing``, ``embedding``, ``export``, ``bundle``, ``cache``,
``compare``); each exposes ``register(sub, common, embed_opts)`` and keeps its heavy imports
inside the commands, so ``python -m engine --help`` stays fast. Every command builds one
``Workspace`` and calls its verbs (``engine.cli.common.workspace``).
stdout carries the result (one JSON object with ``--json``); progress goes to stderr. A user
error exits with status 2 and one line: ``error: ...`` on stderr, or with ``--json`` one
``{"error": {"code", "message"}}`` object on stdout (the HTTP service's shape and codes).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from engine.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    StderrProgress,
    report_error,
    wants_json,
)
from engine.errors import ParallaxError
from engine.settings import configure_logging

__all__ = ["COMMAND_GROUPS", "EXIT_USER_ERROR", "StderrProgress", "build_parser", "main"]

# The command modules, in the order ``--help`` lists them. They are imported when the parser is
# built, not with this package: they read the engine's settings, and a bad limit in the
# environment must become one error line (``main``), not a failed import.
COMMAND_GROUPS = (
    "listing",
    "embedding",
    "export",
    "bundle",
    "cache",
    "compare",
    "findings",
    "serve",
)


class UsageError(ParallaxError):
    """A command line argparse cannot read (exit 2, like argparse's own errors)."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises ``UsageError`` so ``main`` can report it as
    every other error (JSON under ``--json``); the subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self)


class _Interrupted(ParallaxError):
    """Ctrl-C, reported under ``--json`` like any other error (exit 130)."""

    code = "interrupted"


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """``--json``, ``--cache-dir``, ``--quiet``, ``-v``. Given before or after the command
    alike: the command's copies have no defaults (``SUPPRESS``), so they never overwrite a value
    given before the command with their own default."""
    from engine import settings

    common = argparse.ArgumentParser(
        add_help=False, argument_default=None if defaults else argparse.SUPPRESS
    )
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument(
        "--cache-dir",
        help=f"cache root (default: $PARALLAX_CACHE, else {settings.DEFAULT_CACHE_DIR})",
    )
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if defaults else argparse.SUPPRESS,
        help="log on stderr: -v what the engine does (prune, evictions, refusals), -vv debug",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(defaults=False)
    # The installed command calls itself ``parallax``; ``python -m engine`` otherwise.
    named = Path(sys.argv[0]).name == "parallax"
    parser = _Parser(
        prog="parallax" if named else "python -m engine",
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

    from engine.cli import bundle, cache, compare, embedding, export, findings, listing, serve

    groups = {
        "listing": listing,
        "embedding": embedding,
        "export": export,
        "bundle": bundle,
        "cache": cache,
        "compare": compare,
        "findings": findings,
        "serve": serve,
    }
    for name in COMMAND_GROUPS:
        groups[name].register(sub, common, embed_opts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(argv)
    try:
        args = build_parser().parse_args(argv)
        # The service's log shows what the engine does (INFO) even without -v.
        configure_logging(args.verbose + (1 if args.command == "serve" else 0))
        return int(args.func(args) or 0)
    except UsageError as exc:  # argparse's message and usage line, or the JSON object
        if not as_json:
            exc.parser.print_usage(sys.stderr)
        report_error(exc, as_json, f"{exc.parser.prog}: error: {exc}")
        return EXIT_USER_ERROR
    except ParallaxError as exc:
        report_error(exc, as_json)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        line = "interrupted: finished shards are kept; run again to resume"
        report_error(_Interrupted(line) if as_json else exc, as_json, line)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: the traceback still goes to stderr, the JSON to stdout
        if as_json:
            report_error(exc, as_json)
        raise
