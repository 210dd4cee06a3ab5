"""``serve``: the engine over HTTP (engine.http; docs/api.md)."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.http import serve
    from engine.http.settings import ServiceSettings

    settings = ServiceSettings.from_env(
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        allow_anonymous=args.allow_anonymous,
    )
    serve(settings, args.cache_dir)  # a refusal (ParallaxError) is one line and exit 2
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
    p.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without API keys (anyone who reaches it may use it)",
    )
    p.set_defaults(func=cmd_serve)
