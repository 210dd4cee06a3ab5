"""What every ``python -m engine`` command shares: output, progress, the cache, exit codes.

stdout carries the result (one JSON object with ``--json``); progress and errors go to stderr, so
``python -m engine embed ... --json | jq`` works. A user error exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import ParallaxError
from engine.store.progress import Progress

if TYPE_CHECKING:
    from engine.store.cache import Cache

EXIT_USER_ERROR = 2


class StderrProgress:
    """Progress lines on stderr, at most a few per second (carriage-return updates on a tty)."""

    def __init__(self, quiet: bool = False, interval_s: float = 0.5) -> None:
        self.quiet = quiet
        self.interval_s = interval_s
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        finished = p.done >= p.total
        if not finished and now - self._last < self.interval_s:
            return
        self._last = now
        end = "\n" if finished or not self._tty else "\r"
        print(p.line(), end=end, file=sys.stderr, flush=True)


def emit(args: argparse.Namespace, payload: dict[str, Any], human: Callable[[], Any]) -> None:
    """Print ``payload`` as one JSON object with ``--json``, else call ``human`` to print."""
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        human()


def progress_for(args: argparse.Namespace) -> StderrProgress:
    return StderrProgress(args.quiet)


def require_dataset(args: argparse.Namespace, command: str) -> str:
    """The ``--dataset`` a command cannot run without (one line naming the command if absent)."""
    if not args.dataset:
        raise ParallaxError(f"{command} needs --dataset")
    return str(args.dataset)


def add_models_option(
    p: argparse.ArgumentParser, required: bool = True, help: str = "model spec (repeatable)"
) -> None:
    """``--model``, given once per model, for every command that runs over models."""
    p.add_argument("--model", action="append", required=required, help=help)


def open_cache(args: argparse.Namespace) -> Cache:
    from engine.store.cache import Cache

    return Cache(args.cache_dir)


def embed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The embedding flags a command was given (unset ones left out: the engine's defaults)."""
    opts = {
        "batch_size": getattr(args, "batch_size", None),
        "workers": getattr(args, "workers", None),
        "device": getattr(args, "device", None),
    }
    return {k: v for k, v in opts.items() if v is not None}
