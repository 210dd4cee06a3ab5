"""``cache ls`` and ``cache prune``: what the cache holds, and keeping it under a size."""

from __future__ import annotations

import argparse
import time
from argparse import ArgumentParser
from typing import Any

from engine.cli.common import emit, open_cache


def _entry_row(e: Any, manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": e.kind,
        "key": e.key,
        "name": e.name,
        "bytes": e.bytes,
        "last_used": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(e.last_used)),
    }
    if e.kind in ("vectors", "projections"):  # array entries: say what made them
        m = manifests.get((e.kind, e.key), {})
        row |= {k: m.get(k) for k in ("dataset", "model", "method", "shape", "created")}
    return row


def _ls(args: argparse.Namespace) -> int:
    from engine.store.space import format_bytes, kind_of

    cache = open_cache(args)
    every, kinds = cache.survey()
    if args.kind:
        kind_of(args.kind)  # an unknown kind is one clear line
    stored = sorted(
        (e for e in every if args.kind in (None, e.kind)), key=lambda e: e.last_used, reverse=True
    )
    manifests = {(e.kind, e.key): e.manifest for e in cache.entries()}
    rows = [_entry_row(e, manifests) for e in stored]
    total = sum(k.bytes + k.other_bytes for k in kinds)
    payload = {
        "root": str(cache.root),
        "total_bytes": total,
        "kinds": [
            {
                "kind": k.kind,
                "entries": k.entries,
                "bytes": k.bytes,
                "other_bytes": k.other_bytes,
                "holds": k.holds,
            }
            for k in kinds
        ],
        "entries": rows,  # newest use first
    }

    def human() -> None:
        print(f"cache at {cache.root}: {format_bytes(total)}")
        print(f"  {'kind':<12} {'entries':>7} {'size':>10} {'unfinished':>10}  holds")
        for k in kinds:
            print(
                f"  {k.kind:<12} {k.entries:>7} {format_bytes(k.bytes):>10} "
                f"{format_bytes(k.other_bytes):>10}  {k.holds}"
            )
        if args.entries:
            for r in rows:
                what = r.get("model") or r.get("method") or ""
                print(
                    f"  {r['kind']:<12} {r['name'][:40]:<40} {format_bytes(r['bytes']):>10} "
                    f"used {r['last_used']} {what}"
                )

    emit(args, payload, human)
    return 0


def _prune(args: argparse.Namespace) -> int:
    from engine.settings import cache_max_bytes, parse_size
    from engine.store.space import format_bytes

    cache = open_cache(args)
    # --max-bytes wins; else PARALLAX_CACHE_MAX_BYTES; else the 20 GB default.
    limit = parse_size(args.max_bytes) if args.max_bytes else cache_max_bytes()
    report = cache.prune(limit)

    def brief(e: Any) -> dict[str, Any]:
        return {"kind": e.kind, "name": e.name, "bytes": e.bytes}

    payload = {
        "root": str(cache.root),
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
            f"removed {len(report.removed)} entries ({format_bytes(freed)}) and "
            f"{len(report.orphans)} leftover temp files or unfinished jobs from {cache.root}; "
            f"now {format_bytes(report.bytes_after)} of {format_bytes(limit)}"
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
