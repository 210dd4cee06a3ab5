"""What every ``python -m engine`` command shares: the workspace, output, progress, exit codes.

Every command builds one operator ``Workspace`` (``--cache-dir``) and calls its verbs: the CLI
reaches the engine through ``engine.workspace``, ``engine.params``, ``engine.errors`` and
``engine.settings`` (tests/test_cli.py counts them). stdout carries the result (one JSON object
with ``--json``, an error included: ``{"error": {"code", "message"}}``); progress and errors go
to stderr otherwise, so ``python -m engine embed ... --json | jq`` works. A user error exits
with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import ParallaxError, error_body

if TYPE_CHECKING:
    from engine.workspace import Workspace

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class StderrProgress:
    """Progress lines on stderr, at most a few per second (carriage-return updates on a tty).
    Takes the engine's progress snapshots (``done``, ``total``, ``line()``)."""

    def __init__(self, quiet: bool = False, interval_s: float = 0.5) -> None:
        self.quiet = quiet
        self.interval_s = interval_s
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, p: Any) -> None:
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


def wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--json`` was given anywhere before a ``--`` (known before parsing succeeds)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def report_error(exc: BaseException, as_json: bool, line: str | None = None) -> None:
    """One error, the one way: ``{"error": {"code", "message"}}`` on stdout with ``--json``
    (the HTTP service's shape and codes, ``engine.errors.error_code``), else ``line`` (default
    ``error: <message>``) on stderr."""
    if as_json:
        print(json.dumps(error_body(exc)), flush=True)
    else:
        print(line or f"error: {exc}", file=sys.stderr)


def progress_for(args: argparse.Namespace) -> StderrProgress:
    return StderrProgress(args.quiet)


def workspace(args: argparse.Namespace) -> Workspace:
    """The operator's workspace over ``--cache-dir`` (default ``$PARALLAX_CACHE``, else
    ``engine.settings.DEFAULT_CACHE_DIR``)."""
    from engine.workspace import Workspace

    return Workspace(args.cache_dir)


def open_cache(args: argparse.Namespace) -> Any:
    """The workspace's cache (for commands that hand a cache to another door)."""
    return workspace(args).cache


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


def add_params_options(
    p: argparse.ArgumentParser, defaults: Any, *fields: str, **helps: str
) -> None:
    """``--field-name`` for each of ``fields`` of an ``engine.params`` value, typed and defaulted by
    it: a command's defaults are the engine's own (``helps``: help texts by field)."""
    for name in fields:
        default = getattr(defaults, name)
        if type(default) not in (int, float):  # a flag or a choice needs its own option
            raise TypeError(f"{name}: only number fields become options this way")
        p.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default, help=helps.get(name)
        )


def embed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The embedding flags a command was given (unset ones left out: the engine's defaults)."""
    opts = {
        "batch_size": getattr(args, "batch_size", None),
        "workers": getattr(args, "workers", None),
        "device": getattr(args, "device", None),
    }
    return {k: v for k, v in opts.items() if v is not None}
