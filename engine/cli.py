"""``python -m engine``: every engine job, headless, with ``--json`` output for scripts.

stdout carries the result (one JSON object with ``--json``); progress and errors go to stderr, so
``python -m engine embed ... --json | jq`` works. A user error exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import ParallaxError
from engine.progress import Progress

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


def _emit(args: argparse.Namespace, payload: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        human()


def _cache(args: argparse.Namespace):  # -> Cache
    from engine.cache import Cache

    return Cache(args.cache_dir)


# -- subcommands -----------------------------------------------------------------------------
def cmd_datasets(args: argparse.Namespace) -> int:
    from engine.datasets import list_demos, open_dataset

    if args.inspect:
        ds = open_dataset(args.inspect, cache_root=_cache(args).root)
        labels: dict[str, int] = {}
        for label in ds.labels:
            key = "(none)" if label is None else str(label)
            labels[key] = labels.get(key, 0) + 1
        payload = {
            "spec": ds.spec,
            "name": ds.name,
            "n": len(ds),
            "has_images": ds.has_images,
            "has_texts": ds.texts is not None,
            "labels": labels,
            "metadata_columns": list(ds.metadata().columns),
            "fingerprint": ds.fingerprint(),
            "skipped": [{"source": s.source, "reason": s.reason} for s in ds.skipped],
        }

        def human() -> None:
            kinds = "images" if ds.has_images else ""
            if ds.texts is not None:
                kinds = (kinds + " + texts").strip(" +")
            print(f"{ds.spec}: {len(ds)} items ({kinds}), {len(labels)} labels")
            for s in ds.skipped:
                print(f"  skipped {s.source}: {s.reason}")

        _emit(args, payload, human)
        return 0
    demos = list_demos()
    _emit(
        args,
        {"demos": demos},
        lambda: [print(f"{d['spec']:<24} {d.get('description', '')}") for d in demos],
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from engine.models import known_models

    models = known_models()

    def human() -> None:
        for m in models:
            mark = "offline" if m.get("available_offline") else "needs download"
            mods = "+".join(sorted(m.get("modalities", [])))
            print(f"{m['spec']:<48} {mods:<11} {mark}")

    _emit(args, {"models": models}, human)
    return 0


def _embed(args: argparse.Namespace, model: str):  # -> EmbeddingResult
    from engine.embed import embed_dataset

    return embed_dataset(
        args.dataset,
        model,
        modality=args.modality,
        cache=_cache(args),
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=StderrProgress(args.quiet),
    )


def cmd_embed(args: argparse.Namespace) -> int:
    results = [_embed(args, m) for m in args.model]
    payloads = [r.to_json() for r in results]
    payload = payloads[0] if len(payloads) == 1 else {"results": payloads}

    def human() -> None:
        for r in results:
            state = "cached" if r.cached else f"computed in {r.seconds:.1f}s"
            print(f"{r.model} on {r.dataset}: {r.n} x {r.dim} {r.modality} vectors, {state}")
            print(f"  {r.path}  ({r.skipped} skipped)")

    _emit(args, payload, human)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from engine.project import project

    if args.vectors:
        source: Any = args.vectors
        embed_info: dict[str, Any] = {}
    else:
        if not (args.dataset and args.model):
            raise ParallaxError("project needs --vectors PATH, or --dataset and --model")
        result = _embed(args, args.model[0])
        source = result.path
        embed_info = {"dataset": result.dataset, "model": result.model, "vectors": str(result.path)}
    proj = project(
        source,
        args.method,
        seed=args.seed,
        n_neighbors=args.n_neighbors,
        min_dist=args.min_dist,
        fit_sample=args.fit_sample,
        cache=_cache(args),
        progress=StderrProgress(args.quiet),
    )
    payload = {**embed_info, **proj.to_json()}
    if args.quality:
        import numpy as np

        from engine.project import map_quality

        vectors = np.load(source, mmap_mode="r") if not isinstance(source, np.ndarray) else source
        payload["quality"] = map_quality(vectors, proj.coords())

    def human() -> None:
        state = "cached" if proj.cached else f"computed in {proj.seconds:.1f}s"
        print(f"{proj.method} map of {proj.n} points, {state}: {proj.path}")
        if "quality" in payload:
            print(f"  quality: {payload['quality']}")

    _emit(args, payload, human)
    return 0


def _parse_size(text: str) -> int:
    from engine.config import parse_size

    return parse_size(text)


def cmd_cache(args: argparse.Namespace) -> int:
    cache = _cache(args)
    if args.action == "prune":
        from engine.config import cache_max_bytes

        # --max-bytes wins; else PARALLAX_CACHE_MAX_BYTES; else the 20 GB default.
        limit = _parse_size(args.max_bytes) if args.max_bytes else cache_max_bytes()
        removed = cache.prune(limit)
        payload = {"removed": [e.key for e in removed], "root": str(cache.root), "max_bytes": limit}
        _emit(args, payload, lambda: print(f"removed {len(removed)} entries from {cache.root}"))
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

    _emit(args, {"root": str(cache.root), "entries": rows}, human)
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from engine.bundle import write_bundle

    if not args.dataset:
        raise ParallaxError("bundle needs --dataset")
    result = write_bundle(
        args.dataset,
        args.model,
        args.out,
        methods=tuple(args.method or ["umap", "pca"]),
        include_vectors=not args.no_vectors,
        cache=_cache(args),
        progress=StderrProgress(args.quiet),
    )
    _emit(
        args,
        result.to_json(),
        lambda: print(
            f"wrote {result.path}: {result.n} items, {len(result.models)} models, "
            f"{result.bytes / 1e6:.1f} MB"
        ),
    )
    return 0


# -- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--cache-dir", help="cache root (default: $PARALLAX_CACHE or ./cache)")
    common.add_argument("--quiet", action="store_true", help="no progress on stderr")

    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Parallax engine: datasets, models, cached embeddings and 2-D maps.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datasets", parents=[common], help="list built-in datasets or inspect one")
    p.add_argument("--inspect", metavar="SPEC", help="open a dataset and summarise it")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", parents=[common], help="list known model specs")
    p.set_defaults(func=cmd_models)

    embed_opts = argparse.ArgumentParser(add_help=False)
    embed_opts.add_argument("--dataset", help="dataset spec, e.g. demo:digits or folder:PATH")
    embed_opts.add_argument("--modality", choices=["image", "text"], help="default: automatic")
    embed_opts.add_argument("--batch-size", type=int, help="default: the model's own")
    embed_opts.add_argument("--workers", type=int, help="image decode threads (default: cores)")
    embed_opts.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if present")

    p = sub.add_parser("embed", parents=[common, embed_opts], help="embed a dataset (cached)")
    p.add_argument("--model", action="append", required=True, help="model spec (repeatable)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("project", parents=[common, embed_opts], help="2-D map (cached)")
    p.add_argument("--model", action="append", help="model spec (embeds first if needed)")
    p.add_argument("--vectors", help="an N x D .npy file instead of --dataset/--model")
    p.add_argument("--method", choices=["umap", "pca"], default="umap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-neighbors", type=int, default=15)
    p.add_argument("--min-dist", type=float, default=0.1)
    p.add_argument("--fit-sample", type=int, default=50_000, help="UMAP fits on this many points")
    p.add_argument("--quality", action="store_true", help="also report trustworthiness")
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("bundle", parents=[common, embed_opts], help="write a portable bundle")
    p.add_argument("--model", action="append", required=True, help="model spec (repeatable)")
    p.add_argument("--out", required=True, help="bundle file to write (e.g. demo.parallax.zip)")
    p.add_argument("--method", action="append", choices=["umap", "pca"], help="default: both")
    p.add_argument("--no-vectors", action="store_true", help="leave vectors out (no search)")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("cache", parents=[common], help="list or prune cache entries")
    p.add_argument("action", choices=["ls", "prune"])
    p.add_argument(
        "--max-bytes",
        help="prune: keep at most this much, e.g. 5G (default: $PARALLAX_CACHE_MAX_BYTES or 20G)",
    )
    p.set_defaults(func=cmd_cache)

    # Feature modules add their own subcommands; each exposes
    # ``register(sub, common, embed_opts)`` and keeps its imports lazy.
    import importlib

    for name in EXTRA_COMMAND_MODULES:
        importlib.import_module(name).register(sub, common, embed_opts)
    return parser


EXTRA_COMMAND_MODULES: list[str] = ["engine.cli_compare"]


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
