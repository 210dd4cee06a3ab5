"""``embed`` and ``project``: cached vectors and their 2-D maps."""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import TYPE_CHECKING, Any

from engine.cli.common import (
    StderrProgress,
    add_models_option,
    add_params_options,
    emit,
    require_dataset,
    workspace,
)
from engine.errors import ParallaxError
from engine.params import PROJECTION, PROJECTION_METHODS, ProjectionParams

if TYPE_CHECKING:
    from engine.workspace import Workspace


def embed_one(ws: Workspace, args: argparse.Namespace, model: str) -> Any:
    """One model's vectors of ``--dataset`` through ``Workspace.embed`` (an ``EmbeddingResult``)."""
    backend = getattr(args, "backend", "local")
    ray = {"address": args.ray_address, "actors": args.ray_actors} if backend == "ray" else None
    return ws.embed(
        require_dataset(args, "embed"),
        model,
        backend=backend,
        modality=args.modality,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        ray_options=ray,
        progress=StderrProgress(args.quiet),
    )


def cmd_embed(args: argparse.Namespace) -> int:
    ws = workspace(args)
    results = [embed_one(ws, args, m) for m in args.model]
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
    ws = workspace(args)
    params = ProjectionParams(
        args.method, args.seed, args.n_neighbors, args.min_dist, args.fit_sample
    )
    if args.vectors:
        source: Any = args.vectors
        embed_info: dict[str, Any] = {}
    else:
        if not (args.dataset and args.model):
            raise ParallaxError("project needs --vectors PATH, or --dataset and --model")
        result = embed_one(ws, args, args.model[0])
        source = result.path
        embed_info = {"dataset": result.dataset, "model": result.model, "vectors": str(result.path)}
    proj = ws.map(source, params, progress=StderrProgress(args.quiet))
    payload = {**embed_info, **proj.to_json()}
    if args.quality:
        import numpy as np

        payload["quality"] = ws.map_quality(np.load(source, mmap_mode="r"), proj.coords())

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
    add_params_options(
        p,
        PROJECTION,
        "seed",
        "n_neighbors",
        "min_dist",
        "fit_sample",
        fit_sample=f"UMAP fits on this many points (default {PROJECTION.fit_sample:,})",
    )
    p.add_argument("--quality", action="store_true", help="also report trustworthiness")
    p.set_defaults(func=cmd_project)
