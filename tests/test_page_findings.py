"""The Findings page through AppTest: findings listed, a click selects a finding's items on
both maps (and in the Map page's selection), colour by finding, keep as subset."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.apptest_maps import scatter_maps, selected
from tests.conftest import private_app_env

REPO = Path(__file__).resolve().parent.parent
PAGE = str(REPO / "pages" / "findings.py")
PIXELS = "baseline:pixels"
SECOND = "demo:shapes-clip-small"  # a real spec: the page checks specs as a visitor
TIMEOUT = 180


@pytest.fixture(scope="module", autouse=True)
def temp_cache(tmp_path_factory):
    yield from private_app_env(tmp_path_factory)


@pytest.fixture(scope="module")
def spec(temp_cache, tmp_path_factory) -> str:
    """80 digit drawings with a split column; row 80 is an exact copy of row 3 in the other
    split, both models embedded."""
    from sklearn.datasets import load_digits

    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    rows = []
    for i in range(80):
        g = (255 - digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(g).resize((32, 32), Image.NEAREST).convert("RGB").save(root / f"{i}.png")
        rows.append([f"{i}.png", str(digits.target[i]), "train" if i % 4 else "test"])
    (root / "copy.png").write_bytes((root / "3.png").read_bytes())
    rows.append(["copy.png", rows[3][1], "test"])
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        w.writerows(rows)
    spec = f"manifest:{root / 'manifest.csv'}"
    cache = Cache(temp_cache)
    ds = open_dataset(spec, cache_root=cache.root)
    embed_dataset(ds, PIXELS, cache=cache)
    embed_dataset(ds, SECOND, cache=cache)
    return spec


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def open_page(spec: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = spec
    at.session_state["model_specs"] = [PIXELS, SECOND]
    return run(at)


def test_findings_are_listed_and_a_click_selects_them_on_both_maps(spec):
    at = open_page(spec)
    heads = [h.value for h in at.subheader]
    for title in ("Likely label errors", "Duplicates", "Leaks between splits", "Outliers"):
        assert any(h.startswith(title) for h in heads), heads
    assert any("leaks" in m.value and "label errors" in m.value for m in at.markdown)
    maps = scatter_maps(at)
    assert len(maps) == 2 and all(selected(m) == [] for m in maps)
    # The exact copy across the splits is listed under the leaks, with both rows side by side.
    assert any("rows 3, 80" in m.value and "exact copies" in m.value for m in at.markdown)
    leak_button = at.button(key="sel_leaks_0")
    leak_button.click()
    run(at)
    assert at.session_state["map_selected_rows"].tolist() == [3, 80]
    assert all(selected(m) == [3, 80] for m in scatter_maps(at))


def test_colour_by_a_finding_and_keep_it_as_a_subset(spec):
    at = open_page(spec)
    at.selectbox(key="findings_colour").set_value("duplicates")
    run(at)
    legends = [[x["label"] for x in m["colours"]["legend"]] for m in scatter_maps(at)]
    assert all("none" in leg and any("model(s)" in x for x in leg) for leg in legends)
    at.button(key="keep_leaks").click()
    run(at)
    assert any("Kept" in s.value for s in at.success)
    from engine.data import open_dataset
    from engine.store.subsets import list_subsets

    # Kept in this visitor's own namespace: listed for them, not for the operator or others.
    owner = at.session_state["_parallax_session"]
    kept = list_subsets(open_dataset(spec), owner=owner)
    assert [s.name for s in kept] == ["findings leaks"]
    assert list_subsets(open_dataset(spec)) == []
    assert 3 in kept[0].rows.tolist() and 80 in kept[0].rows.tolist()


def test_view_only_shows_a_bundles_findings_without_computing(
    spec, temp_cache, tmp_path, monkeypatch
):
    import engine.analysis.findings_run as findings_run
    from engine.workspace import Workspace

    path = tmp_path / "digits.parallax.zip"
    Workspace(temp_cache).bundle(spec, [PIXELS, SECOND], path, methods=("pca",), findings=True)

    def computed(*args, **kwargs):
        raise AssertionError("a view-only page computed findings")

    monkeypatch.setattr(findings_run, "compute_findings", computed)
    monkeypatch.setenv("PARALLAX_VIEW_ONLY", "1")
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.session_state["dataset_spec"] = f"bundle:{path}"
    at.session_state["model_specs"] = [SECOND, PIXELS]  # another order: the same findings
    run(at)
    assert any("rows 3, 80" in m.value and "exact copies" in m.value for m in at.markdown)
    assert len(scatter_maps(at)) == 2
    # Models the bundle's findings were not computed for: a notice, nothing computed.
    at.multiselect(key="findings_models").set_value([PIXELS])
    run(at)
    assert any("No findings were bundled" in i.value for i in at.info)
