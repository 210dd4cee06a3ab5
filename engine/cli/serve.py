"""``serve``: the engine over HTTP (engine.http; docs/api.md)."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import open_cache


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.http import serve
    from engine.http.settings import ServiceSettings

    settings = ServiceSettings.from_env(
        host=args.host, port=args.port, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms
    )
    serve(settings, open_cache(args))
    return 0


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    from engine.http.settings import ServiceSettings

    d = ServiceSettings()
    p = sub.add_parser("serve", parents=[common], help="HTTP API over the engine (docs/api.md)")
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"default {d.port}")
    p.add_argument(
        "--max-batch", type=int, help=f"items per batched forward pass (default {d.max_batch})"
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        help=f"how long a batch waits for more requests (default {d.batch_wait_ms})",
    )
    p.set_defaults(func=cmd_serve)
