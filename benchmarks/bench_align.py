"""Benchmark 11: how much aligning side-by-side maps brings the same items together.

The committed demo bundle holds UMAP and PCA maps of demo:shapes (2,000 items) under three models.
Each map is aligned onto another model's map by ``engine.maps.align`` (centre, scale, rotate or
reflect: orthogonal Procrustes), and the mean distance of the same item across the two maps is
measured before (centred and scaled only) and after, in RMS radii of the reference map (0 = the
same place, ~1.4 = unrelated). A similarity transform cannot undo a different arrangement, only a
different orientation: what remains after is how differently the models see the items.

    python benchmarks/bench_align.py [--quick] [--json]
"""

from __future__ import annotations

import tempfile
from itertools import combinations

import numpy as np
from common import REPO, Reporter, parser

from engine.data.bundle import open_bundle
from engine.maps import align
from engine.store.cache import Cache

BUNDLE = REPO / "bundles" / "demo-shapes.parallax.zip"


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("map_alignment", args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(tmp)
        open_bundle(BUNDLE, cache=cache)
        model_of = {e.key: e.manifest["model"] for e in cache.entries("vectors")}
        maps: dict[tuple[str, str], np.ndarray] = {}
        for e in cache.entries("projections"):
            maps[(model_of[e.manifest["source"]], e.manifest["method"])] = np.load(e.array_path)
        for method in ("umap", "pca"):
            models = sorted(m for m, meth in maps if meth == method)
            for ref, other in combinations(models, 2):
                gap = align.alignment_gap(maps[(ref, method)], maps[(other, method)])
                row = {
                    "method": method,
                    "reference": ref,
                    "aligned": other,
                    "before": round(gap["before"], 3),
                    "after": round(gap["after"], 3),
                }
                rep.log(row)
                rows.append(row)
    rep.done(
        {
            "rows": rows,
            "mean_before": round(float(np.mean([r["before"] for r in rows])), 3),
            "mean_after": round(float(np.mean([r["after"] for r in rows])), 3),
        }
    )


if __name__ == "__main__":
    main()
