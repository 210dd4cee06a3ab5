"""``cache ls`` and ``cache prune``: what the cache holds, and keeping it under a size."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import emit, workspace


def _ls(args: argparse.Namespace) -> int:
    ws = workspace(args)
    payload = ws.cache_usage(args.kind)  # entries: newest use first
    size = ws.format_bytes

    def human() -> None:
        print(f"cache at {payload['root']}: {size(payload['total_bytes'])}")
        print(f"  {'kind':<12} {'entries':>7} {'size':>10} {'unfinished':>10}  holds")
        for k in payload["kinds"]:
            print(
                f"  {k['kind']:<12} {k['entries']:>7} {size(k['bytes']):>10} "
                f"{size(k['other_bytes']):>10}  {k['holds']}"
            )
        if args.entries:
            for r in payload["entries"]:
                what = r.get("model") or r.get("method") or ""
                print(
                    f"  {r['kind']:<12} {r['name'][:40]:<40} {size(r['bytes']):>10} "
                    f"used {r['last_used']} {what}"
                )

    emit(args, payload, human)
    return 0


def _prune(args: argparse.Namespace) -> int:
    ws = workspace(args)
    # --max-bytes wins; else PARALLAX_CACHE_MAX_BYTES; else the 20 GB default.
    report = ws.prune(args.max_bytes)
    limit = report.max_bytes
    size = ws.format_bytes

    def brief(e: Any) -> dict[str, Any]:
        return {"kind": e.kind, "name": e.name, "bytes": e.bytes}

    payload = {
        "root": str(ws.root),
        "max_bytes": limit,
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "removed": [e.key for e in report.removed],  # least recently used first
        "removed_entries": [brief(e) for e in report.removed],
        "in_use": [brief(e) for e in report.in_use],
        "orphans": [str(p) for p in report.orphans],
    }

    def human() -> None:
        freed = sum(e.bytes for e in report.removed)
        print(
            f"removed {len(report.removed)} entries ({size(freed)}) and "
            f"{len(report.orphans)} leftover temp files or unfinished jobs from {ws.root}; "
            f"now {size(report.bytes_after)} of {size(limit)}"
        )
        if report.in_use:
            print(f"kept {len(report.in_use)} entries over the limit because they are in use")

    emit(args, payload, human)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    return _prune(args) if args.action == "prune" else _ls(args)


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser(
        "cache",
        parents=[common],
        help="list every kind of cache entry with its size, or prune to a size",
        description="ls: every kind (vectors, maps, comparisons, heads, thumbnails, image "
        "checks, extracted archives, downloads, bundles, uploads, numba) with its entry count "
        "and size. prune: remove leftover temp files and unfinished jobs older than "
        "$PARALLAX_ORPHAN_AGE_S, then least-recently-used entries of every kind until the cache "
        "fits; entries in use are never removed.",
    )
    p.add_argument("action", choices=["ls", "prune"])
    p.add_argument(
        "--max-bytes",
        help="prune: keep at most this much, e.g. 5G (default: $PARALLAX_CACHE_MAX_BYTES or 20G)",
    )
    p.add_argument("--kind", help="ls: list only the entries of this kind (e.g. uploads)")
    p.add_argument("--entries", action="store_true", help="ls: also list every entry")
    p.set_defaults(func=cmd_cache)
