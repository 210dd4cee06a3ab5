"""``embed`` and ``project``: cached vectors and their 2-D maps."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import TYPE_CHECKING, Any

from engine.cli.common import (
    StderrProgress,
    add_models_option,
    emit,
    open_cache,
    require_dataset,
)
from engine.errors import ParallaxError
from engine.params import PROJECTION, PROJECTION_METHODS

if TYPE_CHECKING:
    from engine.embed.local import EmbeddingResult


def embed_one(args: argparse.Namespace, model: str) -> EmbeddingResult:
    both = {
        "modality": args.modality,
        "cache": open_cache(args),
        "batch_size": args.batch_size,
        "progress": StderrProgress(args.quiet),
    }
    if getattr(args, "backend", "local") == "ray":
        from engine.embed.ray_backend import RayOptions, embed_dataset_ray

        options = RayOptions(address=args.ray_address, actors=args.ray_actors)
        return embed_dataset_ray(require_dataset(args, "embed"), model, options=options, **both)
    from engine.embed.local import embed_dataset

    return embed_dataset(args.dataset, model, workers=args.workers, device=args.device, **both)


def cmd_embed(args: argparse.Namespace) -> int:
    results = [embed_one(args, m) for m in args.model]
    payloads = [r.to_json() for r in results]
    # One shape for any number of models: always a ``results`` list; one model's fields stay at
    # the top level too, as before, so scripts written against one model keep working.
    payload = {**(payloads[0] if len(payloads) == 1 else {}), "results": payloads}

    def human() -> None:
        for r in results:
            state = "cached" if r.cached else f"computed in {r.seconds:.1f}s"
            print(f"{r.model} on {r.dataset}: {r.n} x {r.dim} {r.modality} vectors, {state}")
            print(f"  {r.path}  ({r.skipped} skipped)")

    emit(args, payload, human)
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from engine.maps.project import project

    if args.vectors:
        source: Any = args.vectors
        embed_info: dict[str, Any] = {}
    else:
        if not (args.dataset and args.model):
            raise ParallaxError("project needs --vectors PATH, or --dataset and --model")
        result = embed_one(args, args.model[0])
        source = result.path
        embed_info = {"dataset": result.dataset, "model": result.model, "vectors": str(result.path)}
    proj = project(
        source,
        args.method,
        seed=args.seed,
        n_neighbors=args.n_neighbors,
        min_dist=args.min_dist,
        fit_sample=args.fit_sample,
        cache=open_cache(args),
        progress=StderrProgress(args.quiet),
    )
    payload = {**embed_info, **proj.to_json()}
    if args.quality:
        import numpy as np

        from engine.maps.project import map_quality

        vectors = np.load(source, mmap_mode="r") if not isinstance(source, np.ndarray) else source
        payload["quality"] = map_quality(vectors, proj.coords())

    def human() -> None:
        state = "cached" if proj.cached else f"computed in {proj.seconds:.1f}s"
        print(f"{proj.method} map of {proj.n} points, {state}: {proj.path}")
        if "quality" in payload:
            print(f"  quality: {payload['quality']}")

    emit(args, payload, human)
    return 0


def register(sub: Any, common: ArgumentParser, embed_opts: ArgumentParser) -> None:
    p = sub.add_parser("embed", parents=[common, embed_opts], help="embed a dataset (cached)")
    add_models_option(p)
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local (this process) or ray (Ray Data over a cluster; docs/scale-out.md)",
    )
    p.add_argument(
        "--ray-address",
        help="with --backend ray: auto (the cluster this machine joined) or ray://HOST:PORT "
        "(default: a private local Ray)",
    )
    p.add_argument(
        "--ray-actors", type=int, help="model replicas (default: one per GPU, else per CPU)"
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("project", parents=[common, embed_opts], help="2-D map (cached)")
    add_models_option(p, required=False, help="model spec (embeds first if needed)")
    p.add_argument("--vectors", help="an N x D .npy file instead of --dataset/--model")
    p.add_argument("--method", choices=list(PROJECTION_METHODS), default=PROJECTION.method)
    p.add_argument("--seed", type=int, default=PROJECTION.seed)
    p.add_argument("--n-neighbors", type=int, default=PROJECTION.n_neighbors)
    p.add_argument("--min-dist", type=float, default=PROJECTION.min_dist)
    p.add_argument(
        "--fit-sample",
        type=int,
        default=PROJECTION.fit_sample,
        help=f"UMAP fits on this many points (default {PROJECTION.fit_sample:,})",
    )
    p.add_argument("--quality", action="store_true", help="also report trustworthiness")
    p.set_defaults(func=cmd_project)
