"""Build the demo bundle a fresh deployment opens: ``bundles/demo-shapes.parallax.zip``.

    python scripts/make_demo_bundle.py                  # demo:shapes?n=2000, weight-free models
    python scripts/make_demo_bundle.py --n 5000 --out /tmp/shapes.parallax.zip

The bundle holds the ``demo:shapes`` items (ids, labels, captions, metadata, 64 px thumbnails),
the vectors of each model (float16), their UMAP and PCA maps and nearest-neighbour lists, so a
view-only deployment (no torch, no umap-learn) shows real maps the moment it wakes.

Models: ``baseline:pixels`` (images) and ``baseline:text`` (captions) always; the two shapes
CLIPs trained in this repository (``models/shapes-clip`` and the narrower
``models/shapes-clip-small``) when their folders hold ``open_clip_config.json``, so the
bundle's maps show what a trained model does to a map next to the weight-free baselines. The
same result, by hand::

    python -m engine bundle --dataset "demo:shapes?n=2000&seed=0" --model baseline:pixels \
        --model baseline:text --model demo:shapes-clip --model demo:shapes-clip-small \
        --out bundles/demo-shapes.parallax.zip --json

The maps are computed in a private temporary cache (so the bundle never depends on what the
repository's ``cache/`` holds) with the engine's fixed seeds: rebuilding gives the same maps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_OUT = REPO / "bundles" / "demo-shapes.parallax.zip"
SHAPES_CLIPS = ("shapes-clip", "shapes-clip-small")


def demo_models(include_clip: bool = True) -> list[str]:
    models = ["baseline:pixels", "baseline:text"]
    for name in SHAPES_CLIPS if include_clip else ():
        if (REPO / "models" / name / "open_clip_config.json").is_file():
            # The alias, not the path: the bundle then names a model any checkout can load.
            models.append(f"demo:{name}")
    return models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="demo:shapes items (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--no-clip", action="store_true", help="leave out the shapes CLIPs")
    p.add_argument("--cache-dir", type=Path, help="cache to embed into (default: a temp dir)")
    args = p.parse_args(argv)

    import os

    os.chdir(REPO)  # the local-dir model spec is relative to the repository
    from engine.outputs.bundle import write_bundle
    from engine.store.cache import Cache

    dataset = f"demo:shapes?n={args.n}&seed={args.seed}"
    models = demo_models(not args.no_clip)
    with tempfile.TemporaryDirectory(prefix="parallax-demo-bundle-") as tmp:
        cache = Cache(args.cache_dir or tmp)
        result = write_bundle(dataset, models, args.out, methods=("umap", "pca"), cache=cache)
    args.out.chmod(0o644)  # a committed file: readable by all (atomic writes create it 0600)
    print(json.dumps(result.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
