"""The WebGL map component: the committed bundle matches its sources, and what Python sends."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from dashboard.components import scatter


def test_committed_bundle_is_built_from_the_committed_sources() -> None:
    info = scatter.build_info()
    assert info["source_sha256"] == scatter.source_hash(), (
        "dashboard/components/scatter/frontend changed without a rebuild: "
        "cd dashboard/components/scatter/frontend && npm ci && npm run build"
    )
    bundle = scatter.BUNDLE.read_bytes()
    import hashlib

    assert hashlib.sha256(bundle).hexdigest() == info["bundle_sha256"]
    assert len(bundle) < 400_000  # small enough to commit and to load once per page


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")
def test_bundle_rebuilds_identically(tmp_path) -> None:
    """With node available: a clean build from the lockfile reproduces the committed bundle."""
    front = tmp_path / "frontend"
    shutil.copytree(scatter.FRONTEND, front, ignore=shutil.ignore_patterns("node_modules"))
    (tmp_path / "static").mkdir()
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=front, check=True)
    subprocess.run(["npm", "run", "build"], cwd=front, check=True)
    assert (tmp_path / "static" / "scatter.js").read_bytes() == scatter.BUNDLE.read_bytes()


def test_selection_payload_inline_or_binary() -> None:
    assert scatter.selection_payload(np.array([1, 2]), None, "m") is None
    small = scatter.selection_payload(np.array([5, 2]), "py-1", "m")
    assert small == {"nonce": "py-1", "rows": [5, 2]}
    big = scatter.selection_payload(np.arange(scatter.INLINE_SELECTION + 1), "py-2", "m")
    assert big is not None and "rows" not in big and big["key"] and big["nonce"] == "py-2"


def test_colours_from_a_page_colouring() -> None:
    from dashboard import linked_maps, maps

    n = 10
    cat = linked_maps.colours_from(
        maps.categorical(["a", "b", None, "a"] * 2 + ["c", "c"], "label"), n
    )
    assert len(cat.codes.data) == n and len(cat.palette) == 256
    assert [x["label"] for x in cat.legend or ()] == ["a", "b", "c", maps.MISSING]
    assert sum(x["count"] for x in cat.legend or ()) == n
    num = linked_maps.colours_from(maps.numeric(np.linspace(0, 1, n), "score"), n)
    assert num.legend is None and num.scale is not None and num.scale["max"] == "1"
    assert num.codes.key != cat.codes.key
    assert all(c.startswith("#") and len(c) == 7 for c in num.palette)


def test_a_map_costs_nine_bytes_a_point_and_recolouring_keeps_positions() -> None:
    from dashboard import linked_maps, maps

    n = 100_000
    rng = np.random.default_rng(0)
    specs = [
        linked_maps.MapSpec("a", "A", rng.normal(size=(n, 2)).astype(np.float32), "key-a"),
        linked_maps.MapSpec("b", "B", rng.normal(size=(n, 2)).astype(np.float32), "key-b"),
    ]
    payloads, _ = linked_maps.layouts(specs, aligned=True)
    by_label = linked_maps.colours_from(maps.categorical(np.arange(n) % 10, "label"), n)
    for p in payloads:
        assert len(p.data) + len(by_label.codes.data) == 9 * n
    by_score = linked_maps.colours_from(maps.numeric(rng.random(n), "score"), n)
    again, _ = linked_maps.layouts(specs, aligned=True)
    assert [p.key for p in again] == [p.key for p in payloads]  # positions keyed, not resent
    assert by_score.codes.key != by_label.codes.key and len(by_score.codes.data) == n
    assert np.abs(np.frombuffer(payloads[1].data, "<f4")).max() <= 1.0  # the shared frame
