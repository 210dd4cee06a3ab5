"""Benchmark: the embed job on Ray Data vs the local backend, and Ray's scaling with actors.

Same job, same machine, fresh caches: the local backend (one process) against ``--backend ray``
on a private local Ray, then the Ray job with 1 and 2 model actors. The model is MiniLM
(``st:all-MiniLM-L6-v2``, a real CPU model) on the texts of demo:shapes. Ray's start-up is
counted in its wall time, as a user waits for it.

    python benchmarks/bench_ray_embed.py [--quick] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import Reporter, parser

MODEL = "st:all-MiniLM-L6-v2"


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("ray_embed", args)
    import ray

    from engine.embed.local import embed_dataset
    from engine.embed.ray_backend import RayOptions, embed_dataset_ray
    from engine.models import load_model
    from engine.store.cache import Cache

    n = 300 if args.quick else 6000
    spec = f"demo:shapes?n={n}&seed=3"
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    load_model(MODEL)  # both backends then load from a warm disk cache

    t = time.perf_counter()
    local = embed_dataset(spec, MODEL, modality="text", cache=Cache(tmp / "local"))
    local_s = time.perf_counter() - t
    rep.log(f"local: {n / local_s:.1f} texts/s ({local_s:.1f} s)")

    figures: dict[str, object] = {"items": n, "local_texts_per_s": round(n / local_s, 1)}
    for actors in (1, 2):
        # 2 CPUs: the actors share them with one light text-reading task.
        options = RayOptions(actors=actors, cpus_per_actor=1.6 / actors, decode_cpus=0.2)
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            result = embed_dataset_ray(
                spec, MODEL, modality="text", cache=Cache(tmp / f"ray{actors}"), options=options
            )
        finally:
            ray.shutdown()
        wall = time.perf_counter() - t
        assert result.key == local.key
        figures[f"ray_{actors}_actors_texts_per_s"] = round(n / wall, 1)
        figures[f"ray_{actors}_actors_vs_local"] = round(local_s / wall, 2)
        rep.log(
            f"ray, {actors} actor(s): {n / wall:.1f} texts/s ({wall:.1f} s), "
            f"{local_s / wall:.2f}x local"
        )
    figures["scaling_2_vs_1_actor"] = round(
        figures["ray_2_actors_texts_per_s"] / figures["ray_1_actors_texts_per_s"],
        2,  # type: ignore[operator]
    )
    rep.done(figures)


if __name__ == "__main__":
    main()
