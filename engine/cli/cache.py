"""``cache ls`` and ``cache prune``: what the cache holds, and keeping it under a size."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.common import emit, open_cache


def cmd_cache(args: argparse.Namespace) -> int:
    cache = open_cache(args)
    if args.action == "prune":
        from engine.config import cache_max_bytes, parse_size

        # --max-bytes wins; else PARALLAX_CACHE_MAX_BYTES; else the 20 GB default.
        limit = parse_size(args.max_bytes) if args.max_bytes else cache_max_bytes()
        removed = cache.prune(limit)
        payload = {"removed": [e.key for e in removed], "root": str(cache.root), "max_bytes": limit}
        emit(args, payload, lambda: print(f"removed {len(removed)} entries from {cache.root}"))
        return 0
    rows = []
    for e in cache.entries():
        m = e.manifest
        rows.append(
            {
                "kind": e.kind,
                "key": e.key,
                "dataset": m.get("dataset"),
                "model": m.get("model"),
                "method": m.get("method"),
                "shape": m.get("shape"),
                "bytes": e.size_bytes(),
                "created": m.get("created"),
            }
        )

    def human() -> None:
        print(f"cache at {cache.root}: {len(rows)} entries")
        for r in rows:
            what = r["model"] or r["method"] or ""
            print(f"  {r['kind']:<12} {r['key'][:12]} {what} {r['shape']} {r['bytes']} bytes")

    emit(args, {"root": str(cache.root), "entries": rows}, human)
    return 0


def register(
    sub: Any, common: argparse.ArgumentParser, embed_opts: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("cache", parents=[common], help="list or prune cache entries")
    p.add_argument("action", choices=["ls", "prune"])
    p.add_argument(
        "--max-bytes",
        help="prune: keep at most this much, e.g. 5G (default: $PARALLAX_CACHE_MAX_BYTES or 20G)",
    )
    p.set_defaults(func=cmd_cache)
