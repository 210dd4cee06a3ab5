"""The WebGL map component: the committed bundle matches its sources, no JavaScript lives in a
Python string, and what Python sends (payloads, colours, the extents each view frames)."""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

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
    assert hashlib.sha256(bundle).hexdigest() == info["bundle_sha256"]
    assert len(bundle) < 400_000  # small enough to commit and to load once per page
    assert set(info["outputs"]) == set(scatter.OUTPUTS)
    for name, digest in info["outputs"].items():
        assert hashlib.sha256((scatter.STATIC / name).read_bytes()).hexdigest() == digest, name


def test_the_bundle_exports_the_map_and_the_hover_card() -> None:
    exports = re.findall(r"export\{([^}]*)\}", scatter.BUNDLE.read_text())[-1]
    names = {part.split(" as ")[-1].strip() for part in exports.split(",")}
    assert names == {"default", "hover"}
    loader = scatter.asset_text("loader.js")  # the components' inline module, minified
    assert "export" in loader
    # Streamlit takes a one-line js string with a "/" for a file path: the banner keeps it two.
    assert "\n" in loader.strip() and "/" in loader
    with pytest.raises(ValueError):
        scatter.asset_text("../__init__.py")


# What JavaScript (or an inline script) looks like inside a string literal.
JS_LIKE = re.compile(
    r"addEventListener|document\.|window\.|=>|querySelector|\bfunction\s*\(|<script"
    r"|\b(?:const|let)\s+\w+\s*=|export\s+default"
)


def js_like_strings(source: str) -> list[tuple[int, str]]:
    """(line, start) of every string literal in ``source`` that looks like JavaScript."""
    return [
        (node.lineno, node.value[:60])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and JS_LIKE.search(node.value)
    ]


def test_the_guard_sees_javascript_in_a_python_string() -> None:
    assert js_like_strings('JS = """document.addEventListener("x", () => 1)"""\n')
    assert js_like_strings('f"const x = {1};"\n')
    assert not js_like_strings('TEXT = "Hover a point to preview the item"\n')


def test_no_javascript_in_python_strings() -> None:
    """The dashboard's JavaScript lives in dashboard/components/*/frontend/src, is built and
    committed; no .py file of dashboard/ or pages/ carries any in a string."""
    repo = Path(__file__).resolve().parent.parent
    found = {
        str(path.relative_to(repo)): hits
        for folder in ("dashboard", "pages")
        for path in sorted((repo / folder).rglob("*.py"))
        if (hits := js_like_strings(path.read_text(encoding="utf-8")))
    }
    assert not found, found


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="needs node and npm")
def test_bundle_rebuilds_identically(tmp_path) -> None:
    """With node available: a clean build from the lockfile reproduces the committed bundle."""
    front = tmp_path / "frontend"
    shutil.copytree(scatter.FRONTEND, front, ignore=shutil.ignore_patterns("node_modules"))
    (tmp_path / "static").mkdir()
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=front, check=True)
    subprocess.run(["npm", "run", "build"], cwd=front, check=True)
    for name in (*scatter.OUTPUTS, "build-info.json"):
        assert (tmp_path / "static" / name).read_bytes() == (scatter.STATIC / name).read_bytes()


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


def _extent_fill(payload: bytes, extent: tuple[float, ...]) -> tuple[float, float]:
    xy = np.frombuffer(payload, "<f4").reshape(-1, 2)
    x0, y0, x1, y1 = extent
    assert xy[:, 0].min() >= x0 - 1e-6 and xy[:, 0].max() <= x1 + 1e-6
    assert xy[:, 1].min() >= y0 - 1e-6 and xy[:, 1].max() <= y1 + 1e-6
    return float(np.ptp(xy[:, 0]) / (x1 - x0)), float(np.ptp(xy[:, 1]) / (y1 - y0))


def test_aligned_maps_share_one_extent_unaligned_maps_each_frame_their_own() -> None:
    """Three maps at very different scales and places: aligned, they share the frame and the
    extent the views fit; unaligned, each map's extent is its own points' box, so none is a
    speck in a corner of a frame sized for another."""
    from dashboard import linked_maps

    rng = np.random.default_rng(1)
    base = rng.normal(size=(500, 2))
    coords = [base, base * 0.01 + 40.0, base * [30.0, 3.0] - 7.0]
    specs = [
        linked_maps.MapSpec(f"m{i}", f"M{i}", c.astype(np.float32), f"key-{i}")
        for i, c in enumerate(coords)
    ]
    payloads, _, extents = linked_maps._layouts(specs, aligned=True)
    assert len(set(extents)) == 1
    for p, e in zip(payloads, extents, strict=True):
        _extent_fill(p.data, e)
    payloads, _, extents = linked_maps._layouts(specs, aligned=False)
    assert len(set(extents)) == 3
    for p, e in zip(payloads, extents, strict=True):
        fill_x, fill_y = _extent_fill(p.data, e)
        assert fill_x == pytest.approx(1.0) and fill_y == pytest.approx(1.0)
        assert max(e[2] - e[0], e[3] - e[1]) == pytest.approx(2 * 0.95, rel=1e-4)


def test_a_big_map_goes_in_parts_and_a_recolour_fetches_only_colour_parts(monkeypatch) -> None:
    """Above ``part_points`` each payload is announced as interleaved parts, each keyed by its
    content: joined back they are the payload (9 bytes a point, no row ids), and a new colouring
    changes the colour parts' keys and none of the positions'."""
    from dashboard import linked_maps, maps
    from engine.maps import payload as mapdata

    served: dict[str, bytes] = {}

    def media(data: bytes, mimetype: str, where: str) -> str:
        url = f"/media/{len(served)}.bin"
        served[url] = data
        return url

    monkeypatch.setattr(scatter, "_media_url", media)
    n, per_part = 10_007, 2_000
    rng = np.random.default_rng(2)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    (positions,), _ = linked_maps.layouts([linked_maps.MapSpec("m", "M", xy, "key-m")], True)
    by_label = linked_maps.colours_from(maps.categorical(np.arange(n) % 7, "label"), n)
    by_score = linked_maps.colours_from(maps.numeric(rng.random(n), "score"), n)

    pts = scatter.payload_spec(positions, n, 2, "m.points", per_part)
    lab = scatter.payload_spec(by_label.codes, n, 1, "m.colours", per_part)
    assert "url" not in pts and len(pts["parts"]) == mapdata.part_count(n, per_part) == 6
    assert [p["index"] for p in pts["parts"]] == list(range(6))
    blobs = [served[p["url"]] for p in pts["parts"]]
    assert sum(map(len, blobs)) + sum(len(served[p["url"]]) for p in lab["parts"]) == 9 * n
    joined = mapdata.join_parts(blobs, n, "<f4", width=2)
    assert np.array_equal(joined, np.frombuffer(positions.data, "<f4").reshape(-1, 2))
    codes = mapdata.join_parts([served[p["url"]] for p in lab["parts"]], n, "uint8")
    assert np.array_equal(codes, np.frombuffer(by_label.codes.data, np.uint8))

    again = scatter.payload_spec(positions, n, 2, "m.points", per_part)
    score = scatter.payload_spec(by_score.codes, n, 1, "m.colours", per_part)
    keys = [p["key"] for p in pts["parts"]]
    assert [p["key"] for p in again["parts"]] == keys and len(set(keys)) == 6
    assert not {p["key"] for p in score["parts"]} & {p["key"] for p in lab["parts"]}
    # a small map keeps its single payload
    small = scatter.payload_spec(positions, n, 2, "m.points", n)
    assert small == {"key": positions.key, "url": small["url"]} and small["url"] in served
