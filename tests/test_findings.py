"""Findings (issue 28): each kind finds what was planted, the JSON contract, consensus fields,
the cache, the CLI's one JSON object and its one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.analysis.cluster_names import name_clusters
from engine.analysis.findings import compute_findings, confident_learning
from engine.errors import ParallaxError
from engine.params import FINDINGS, FindingsParams

REPO = Path(__file__).resolve().parent.parent
CONTRACT = {"n", "models", "label_errors", "duplicates", "outliers", "leaks", "clusters"}


def _planted_vectors(seed: int = 0):
    """Two "models" of 8 classes x 40 items (32-d), with planted problems and their rows."""
    rng = np.random.default_rng(seed)
    classes, per, d = 8, 40, 32
    # Like real embeddings, every class lies in one cone (a shared direction); outliers do not.
    centres = [3 * rng.normal(size=d) + rng.normal(size=(classes, d)) for _ in range(2)]
    y = np.repeat(np.arange(classes), per)
    base = [c[y] + 0.35 * rng.normal(size=(len(y), d)) for c in centres]
    labels = [f"class{c}" for c in y]
    splits = ["train" if i % 5 else "test" for i in range(len(y))]
    rows = {"flipped": [], "exact": [], "near": [], "outliers": []}
    for i in rng.choice(len(y), 12, replace=False):  # flipped labels
        labels[i] = f"class{(y[i] + 1 + rng.integers(0, classes - 1)) % classes}"
        rows["flipped"].append(int(i))
    vecs = [list(b) for b in base]
    sources = [int(i) for i in rng.choice(len(y), 12, replace=False) if i not in rows["flipped"]]
    for j, src in enumerate(sources[:8]):
        new = len(labels)
        exact = j < 4
        for m in range(2):
            v = base[m][src] if exact else base[m][src] + 0.002 * rng.normal(size=d)
            vecs[m].append(v)
        labels.append(labels[src])
        cross = j % 2 == 1  # every other copy goes to the other split: a leak
        splits.append(("test" if splits[src] == "train" else "train") if cross else splits[src])
        rows["exact" if exact else "near"].append((src, new, cross))
    far = [-c.mean(axis=0) for c in centres]
    for _ in range(5):  # one small group of outliers far from everything
        for m in range(2):
            vecs[m].append(far[m] + 0.1 * rng.normal(size=d))
        labels.append("class0")
        splits.append("train")
        rows["outliers"].append(len(labels) - 1)
    arrays = {name: np.asarray(v, dtype=np.float32) for name, v in zip("AB", vecs, strict=True)}
    return arrays, labels, splits, rows


@pytest.fixture(scope="module")
def planted():
    vectors, labels, splits, rows = _planted_vectors()
    found = compute_findings(vectors, labels=labels, splits=splits)
    return found, rows


def _pairs(groups):
    return {(a, b) for g in groups for a in g for b in g if a < b}


def test_label_errors_find_the_flipped_labels_with_a_suggestion(planted):
    found, rows = planted
    flagged = {e["row"]: e for e in found.label_errors}
    hits = set(flagged) & set(rows["flipped"])
    assert len(hits) >= 10, (sorted(flagged), rows["flipped"])
    assert len(flagged) <= len(rows["flipped"]) + 4
    for r in hits:  # the suggestion is the class the item was drawn from
        assert flagged[r]["suggested"] != flagged[r]["label"]
    scores = [e["score"] for e in found.label_errors]
    assert scores == sorted(scores, reverse=True)


def test_exact_and_near_duplicates_and_leaks(planted):
    found, rows = planted
    exact = _pairs([d["rows"] for d in found.duplicates if d["exact"]])
    near = _pairs([d["rows"] for d in found.duplicates if not d["exact"]])
    for src, new, _ in rows["exact"]:
        assert (src, new) in exact
    for src, new, _ in rows["near"]:
        assert (src, new) in near and (src, new) not in exact
    assert len(near | exact) <= len(rows["exact"]) + len(rows["near"]) + 2
    leaks = {tuple(sorted(x["rows"])): x for x in found.leaks}
    for src, new, cross in rows["exact"] + rows["near"]:
        assert ((src, new) in leaks) == cross
    for leak in leaks.values():
        assert sorted(leak["splits"]) == ["test", "train"]


def test_outliers_in_a_small_group_rank_first(planted):
    found, rows = planted
    top = [o["row"] for o in found.outliers[: len(rows["outliers"])]]
    assert set(top) == set(rows["outliers"])
    scores = [o["score"] for o in found.outliers]
    assert scores == sorted(scores, reverse=True)


def test_consensus_fields_and_json_contract(planted):
    found, rows = planted
    data = json.loads(json.dumps(found.to_json()))
    assert set(data) >= CONTRACT
    assert data["n"] == 320 + 8 + 5
    assert data["models"] == ["A", "B"]
    for e in data["label_errors"]:
        assert {"row", "label", "suggested", "score", "models"} <= set(e)
    for d in data["duplicates"]:
        assert {"rows", "exact", "models"} <= set(d) and len(d["rows"]) >= 2
        assert d["models"] and set(d["models"]) <= {"A", "B"}
        if d["exact"]:
            assert d["models"] == ["A", "B"]
    for o in data["outliers"]:
        assert {"row", "score", "models"} <= set(o)
    for leak in data["leaks"]:
        assert {"rows", "splits", "models"} <= set(leak)
    planted_outliers = {o["row"]: o for o in data["outliers"]}
    for r in rows["outliers"]:  # both models see the far group
        assert planted_outliers[r]["models"] == ["A", "B"]
    assert set(data["clusters"]) == {"A", "B"}
    for clusters in data["clusters"].values():
        names = [c["name"] for c in clusters]
        assert clusters and len(set(names)) == len(names)
    assert set(data["per_model"]) == {"A", "B"}


def test_one_model_alone_sees_only_its_own_duplicates():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 16)).astype(np.float32)
    b = rng.normal(size=(200, 16)).astype(np.float32)
    a[7] = a[3] + 0.001 * rng.normal(size=16)  # a near copy that only model A sees
    found = compute_findings({"A": a, "B": b})
    seen = [d for d in found.duplicates if set(d["rows"]) == {3, 7}]
    assert seen and seen[0]["models"] == ["A"] and not seen[0]["exact"]
    assert [3, 7] in found.per_model["A"]["duplicates"]
    assert [3, 7] not in found.per_model["B"]["duplicates"]


def test_confident_learning_flags_only_confident_disagreements():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9], [0.15, 0.85]])
    y = np.array([0, 0, 1, 1, 0])
    assert confident_learning(probs, y).tolist() == [False, False, False, False, True]


def test_cluster_names_are_distinct():
    texts = ["the red car", "a red car", "red cars", "the red bus", "a red bus", "red buses"]
    names = name_clusters([np.arange(3), np.arange(3, 6)], texts=texts)
    assert len(set(names)) == 2
    assert name_clusters([np.arange(2)] * 3, labels=["x", "x"]) == ["x", "x (2)", "x (3)"]


def test_params_key_material_is_stable_and_checked():
    assert FindingsParams().key_material() == FINDINGS.key_material()
    assert FindingsParams(k=60).key_material() != FINDINGS.key_material()
    with pytest.raises(ParallaxError):
        FindingsParams(k=10, label_k=20)


# -- through the workspace and the CLI ------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_manifest(tmp_path_factory) -> Path:
    """60 digit drawings with a split column, one exact copy across the splits."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    rows = []
    for i in range(60):
        g = (255 - digits.images[i] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(g).resize((32, 32), Image.NEAREST).convert("RGB").save(root / f"{i}.png")
        rows.append([f"{i}.png", str(digits.target[i]), "train" if i % 4 else "test"])
    (root / "copy.png").write_bytes((root / "5.png").read_bytes())
    rows.append(["copy.png", rows[5][1], "test"])  # row 5 is in train: a leak
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        w.writerows(rows)
    return root / "manifest.csv"


def test_workspace_find_is_cached(digits_manifest, cache_root):
    from engine.workspace import Workspace

    ws = Workspace(cache_root)
    spec = f"manifest:{digits_manifest}"
    first = ws.find(spec, ["baseline:pixels"], split_column="split")
    assert not first.cached
    exact = [d for d in first.duplicates if d["exact"]]
    assert [5, 60] in [d["rows"] for d in exact]
    leaks = {tuple(x["rows"]): x for x in first.leaks}
    assert leaks[(5, 60)]["splits"] == ["train", "test"] and leaks[(5, 60)]["exact"]
    stored = list((cache_root / "findings").glob("*.json"))
    assert len(stored) == 1
    second = ws.find(spec, ["baseline:pixels"], split_column="split")
    assert second.cached
    assert second.to_json() == json.loads(stored[0].read_text())
    other = ws.find(spec, ["baseline:pixels"], split_column="split", params=FindingsParams(k=60))
    assert not other.cached and len(list((cache_root / "findings").glob("*.json"))) == 2


def _engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args, "--cache-dir", str(cache)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_prints_one_json_object(digits_manifest, cache_root):
    out = _engine(
        "findings",
        "--dataset",
        f"manifest:{digits_manifest}",
        "--model",
        "baseline:pixels",
        "--split-column",
        "split",
        "--json",
        cache=cache_root,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) >= CONTRACT
    assert data["n"] == 61 and data["models"] == ["baseline:pixels"]
    assert [5, 60] in [x["rows"] for x in data["leaks"]]


def test_cli_bad_column_is_one_line(digits_manifest, cache_root):
    out = _engine(
        "findings",
        "--dataset",
        f"manifest:{digits_manifest}",
        "--model",
        "baseline:pixels",
        "--split-column",
        "nope",
        "--json",
        cache=cache_root,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    error = json.loads(out.stdout)["error"]  # --json: one JSON error object on stdout
    assert "nope" in error["message"] and "split" in error["message"]


def test_the_approximate_graph_past_exact_below_finds_the_same_copies():
    vectors, labels, splits, rows = _planted_vectors()
    found = compute_findings(
        vectors, labels=labels, splits=splits, params=FindingsParams(exact_below=100)
    )
    pairs = _pairs([d["rows"] for d in found.duplicates])
    for src, new, _ in rows["exact"] + rows["near"]:
        assert (src, new) in pairs
    assert set(rows["outliers"]) <= {o["row"] for o in found.outliers[:10]}


def test_a_cached_answer_follows_the_models_asked_for(planted):
    """The key does not depend on the models' order or names: a cached entry is put in the
    order asked, every finding's models renamed with it."""
    found, _ = planted
    found.info["vectors"] = {"A": "ka", "B": "kb"}
    swapped = found.for_models(["second", "first"], ["kb", "ka"])
    assert swapped.models == ["second", "first"]
    assert list(swapped.clusters) == ["second", "first"]
    assert swapped.clusters["first"] == found.clusters["A"]
    assert swapped.per_model["second"] == found.per_model["B"]
    for old, new in zip(found.duplicates, swapped.duplicates, strict=True):
        assert new["rows"] == old["rows"]
        rename = {"A": "first", "B": "second"}
        assert sorted(new["models"]) == sorted(rename[m] for m in old["models"])
        assert new["models"] == [m for m in ("second", "first") if m in new["models"]]
    with pytest.raises(ParallaxError):
        found.for_models(["only"], ["kz"])


def test_export_carries_cached_findings(digits_manifest, cache_root, tmp_path):
    import pyarrow.parquet as pq

    from engine.workspace import Workspace

    ws = Workspace(cache_root)
    spec = f"manifest:{digits_manifest}"
    bare = ws.export(spec, ["baseline:pixels"], tmp_path / "bare.parquet", method="pca")
    assert bare.finding_columns == [] and not any("finding" in c for c in bare.columns)
    found = ws.find(spec, ["baseline:pixels"])  # the split column: `split`, found by name
    done = ws.export(spec, ["baseline:pixels"], tmp_path / "found.parquet", method="pca")
    assert done.finding_columns == [
        "finding_label_error",
        "finding_outlier_score",
        "finding_duplicate_group",
        "finding_duplicate_exact",
        "finding_leak_group",
        "baseline_pixels_cluster",
    ]
    table = pq.read_table(done.path)
    col = table.to_pydict()
    suggested = {i: v for i, v in enumerate(col["finding_label_error"]) if v is not None}
    assert suggested == {e["row"]: e["suggested"] for e in found.label_errors}
    scores = {i: v for i, v in enumerate(col["finding_outlier_score"]) if v is not None}
    assert scores.keys() == {o["row"] for o in found.outliers}
    for o in found.outliers:
        assert scores[o["row"]] == pytest.approx(o["score"], abs=1e-4)
    group = col["finding_duplicate_group"]
    assert group[5] is not None and group[5] == group[60] and col["finding_duplicate_exact"][5]
    in_groups = {r for d in found.duplicates for r in d["rows"]}
    assert {i for i, g in enumerate(group) if g is not None} == in_groups
    assert col["finding_leak_group"][5] is not None
    assert col["finding_leak_group"][5] == col["finding_leak_group"][60]
    for c in found.clusters["baseline:pixels"]:
        assert {col["baseline_pixels_cluster"][r] for r in c["rows"]} == {c["name"]}
    meta = json.loads(table.schema.metadata[b"parallax"])["findings"]
    assert meta["key"] == found.info["key"] and meta["split_column"] == "split"


def test_a_bundle_carries_findings_to_a_fresh_cache(
    digits_manifest, cache_root, tmp_path, monkeypatch
):
    import zipfile

    import engine.analysis.findings_run as run
    from engine.data.bundle import BundleError, member_digest, open_bundle
    from engine.workspace import Workspace

    ws = Workspace(cache_root)
    spec = f"manifest:{digits_manifest}"
    path = tmp_path / "digits.parallax.zip"
    ws.bundle(spec, ["baseline:pixels"], path, methods=("pca",))  # nothing cached: none packed
    with zipfile.ZipFile(path) as zf:
        assert "findings.json" not in zf.namelist()
    found = ws.find(spec, ["baseline:pixels"])
    ws.bundle(spec, ["baseline:pixels"], path, methods=("pca",))

    def computed(*args, **kwargs):
        raise AssertionError("a view-only reader computed findings")

    monkeypatch.setattr(run, "compute_findings", computed)
    viewer = Workspace(tmp_path / "viewer")
    ds = viewer.open(f"bundle:{path}")
    shown = viewer.find(ds, ["baseline:pixels"], embed=False, compute=False)
    assert shown.cached and shown.info["dataset"] == ds.spec
    mine, theirs = shown.to_json(), found.to_json()
    for key in ("dataset", "key", "vectors"):
        mine.pop(key), theirs.pop(key)
    assert mine == json.loads(json.dumps(theirs))
    assert viewer.cached_findings(ds, ["baseline:pixels"]) is not None

    # The packed findings are visitor input: a row past the end refuses the whole bundle.
    def lie(name: str, data: bytes) -> bytes:
        if name == "findings.json":
            data = json.loads(data)
            data["outliers"][0]["row"] = 10**6
            return json.dumps(data).encode()
        return data

    bad = tmp_path / "bad.parallax.zip"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(bad, "w") as zout:
        members = {n: lie(n, zin.read(n)) for n in zin.namelist()}
        manifest = json.loads(members["manifest.json"])
        manifest["files"] = {n: member_digest(members[n]) for n in manifest["files"]}
        members["manifest.json"] = json.dumps(manifest).encode()
        for name, data in members.items():
            zout.writestr(name, data)
    with pytest.raises(BundleError, match="findings"):
        open_bundle(bad, cache=Workspace(tmp_path / "other").cache)


# -- out of core (issue 31): findings read the vectors a block at a time ---------------------
def test_findings_of_mapped_files_in_small_blocks_equal_the_in_memory_ones(tmp_path, monkeypatch):
    """Blocks change nothing: memory-mapped vectors read in 50-row file windows (pairs
    gathered a window at a time) give the same JSON as in-memory arrays, on the exact graph
    and on the approximate one; on the exact graph blocks of 64 rows for every per-row score
    too. (The approximate graph's PCA of each block is a BLAS product whose last bits depend
    on the block's rows: near-tied outlier scores could swap, so its block stays.)"""
    from engine.analysis import findings as fmod
    from engine.store import chunks

    vectors, labels, splits, _ = _planted_vectors()
    for name, v in vectors.items():
        np.save(tmp_path / f"{name}.npy", v)
    for params in (FINDINGS, FindingsParams(exact_below=100)):
        whole = compute_findings(vectors, labels=labels, splits=splits, params=params)
        with monkeypatch.context() as m:
            if params.exact_below > len(labels):
                m.setattr(fmod, "_CHUNK", 64)
            m.setattr(chunks, "CHUNK_BYTES", 32 * 4 * 50)  # 50-row file windows
            mapped = {k: np.load(tmp_path / f"{k}.npy", mmap_mode="r") for k in vectors}
            blocked = compute_findings(mapped, labels=labels, splits=splits, params=params)
        assert blocked.to_json() == whole.to_json()
        assert whole.label_errors and whole.duplicates and whole.outliers


def test_confident_learning_on_averaged_probabilities_by_blocks(monkeypatch):
    """The models' mean computed a block of rows at a time (never N x C float64) flags the
    same rows as the mean held whole, whatever the block."""
    from engine.analysis import findings as fmod

    rng = np.random.default_rng(2)
    n, c = 3000, 5
    y = rng.integers(0, c, n)
    y[::50] = -1  # some rows unlabelled
    probs = []
    for _ in range(3):
        logits = 2.0 * np.eye(c)[np.maximum(y, 0)] + rng.normal(size=(n, c)) * 1.5
        e = np.exp(logits)
        probs.append((e / e.sum(axis=1, keepdims=True)).astype(np.float32))
    w = np.array([0.5, 0.3, 0.2])
    held = sum(wi * p.astype(np.float64) for wi, p in zip(w, probs, strict=True))
    want = fmod.confident_learning(held, y)
    assert 0 < want.sum() < n // 2 and not want[y < 0].any()
    for chunk in (fmod._CHUNK, 97):
        monkeypatch.setattr(fmod, "_CHUNK", chunk)
        mean = fmod.AveragedProbabilities(probs, w)
        np.testing.assert_array_equal(mean[np.arange(n)], held)
        np.testing.assert_array_equal(fmod.confident_learning(mean, y), want)
        np.testing.assert_array_equal(fmod.row_argmax(mean), held.argmax(axis=1))


def test_knn_probabilities_added_in_place_equal_the_sum():
    from engine.analysis.findings import knn_probabilities

    rng = np.random.default_rng(3)
    n, k, c = 500, 10, 4
    idx = rng.integers(0, n, (n, k)).astype(np.int32)
    idx[::7, -1] = -1  # a missing neighbour
    sims = rng.random((n, k)).astype(np.float32)
    y = rng.integers(-1, c, n)
    other = rng.random((n, c)).astype(np.float32)
    want = knn_probabilities(idx, sims, y, c, k) + other
    got = knn_probabilities(idx, sims, y, c, k, add_to=other.copy())
    np.testing.assert_array_equal(got, want)


def test_pair_cosines_of_a_mapped_file_leave_its_pages_out_of_the_process(tmp_path, monkeypatch):
    """Random rows of a memory-mapped file are gathered a window at a time and released: the
    pairs' cosines are right and the file does not stay mapped (before: every page did)."""
    from engine.analysis.findings import ModelVectors
    from engine.store import chunks

    status = Path("/proc/self/status")
    if not status.is_file() or "RssFile" not in status.read_text():
        pytest.skip("no RssFile in /proc/self/status")

    def rss_file_kb() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("RssFile:"))
        return int(line.split()[1])

    rng = np.random.default_rng(4)
    x = rng.normal(size=(64 * 1024, 128)).astype(np.float32)  # 32 MiB
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 1024 * 1024)  # 1 MiB windows
    vec = ModelVectors.__new__(ModelVectors)  # the vectors alone: no graph needed here
    vec.raw = np.load(tmp_path / "x.npy", mmap_mode="r")
    vec.norms = np.linalg.norm(x, axis=1).astype(np.float32)
    a, b = rng.integers(0, len(x), 40_000), rng.integers(0, len(x), 40_000)
    before = rss_file_kb()
    got = vec.pair_cosines(a, b)
    grown = rss_file_kb() - before
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.einsum("ij,ij->i", unit[a], unit[b]), atol=1e-6)
    assert grown < 8 * 1024, f"{grown} kB of the 32 MiB file stayed mapped"
