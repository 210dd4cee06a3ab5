"""Findings on planted problems: precision / recall of every kind, per model and combined,
against cleanlab on each model's own 5-fold k-NN probabilities, in the same run.

    python benchmarks/bench_findings.py [--seeds 0 1] [--scale] [--json] [--quick]

Image sets: ``findings_planted.planted_shapes`` (~1,500 shapes drawings with a ``split``
column: flipped labels, exact copies, near copies, copies across splits, out-of-domain
groups), embedded with the three shipped image models. Texts: ``demo:sentences`` with MiniLM
(clusters: distinct names, topics with a cluster of purity >= 0.8). ``--scale``: 1M items x 2
models x 512-d structured vectors (``scale_plan``: a Gaussian mixture with planted copies,
outliers and flipped labels) written straight into the cache, the whole ``find`` timed, with
peak memory and what it found against what was planted (run it on its own: minutes, ~3 GB).
"""

from __future__ import annotations

import itertools
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Reporter, parser

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.findings_planted import Truth, planted_shapes

IMAGE_MODELS = ["baseline:pixels", "demo:shapes-clip-small", "demo:shapes-clip"]
TEXT_MODEL = "st:all-MiniLM-L6-v2"


def prf(pred: set, true: set) -> dict[str, float]:
    tp = len(pred & true)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(true) if true else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3)}


def group_pairs(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for g in groups for a, b in itertools.combinations(sorted(g), 2)}


def cleanlab_baseline(vectors: np.ndarray, labels: list[str], seed: int) -> set[int]:
    """cleanlab's confident learning on 5-fold k-NN probabilities of one model's vectors."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        sys.exit("bench_findings needs cleanlab: pip install -r requirements-findings.txt")
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    classes = sorted(set(labels))
    y = np.array([classes.index(x) for x in labels])
    x = np.array(vectors, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    knn = KNeighborsClassifier(n_neighbors=10, metric="cosine")
    probs = cross_val_predict(knn, x, y, cv=folds, method="predict_proba")
    return set(np.flatnonzero(find_label_issues(y, probs, n_jobs=1)).tolist())


def score_image_set(ws: Any, manifest: Path, truth: Truth, models: list[str], seed: int):
    ds = ws.open(f"manifest:{manifest}")
    t = time.perf_counter()
    for m in models:
        ws.embed(ds, m)
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    found = ws.find(ds, models, split_column="split")
    find_s = time.perf_counter() - t
    data = found.to_json()
    near_truth = truth.all_pairs
    outliers_top = {o["row"] for o in data["outliers"][: 2 * len(truth.outliers)]}
    combined = {
        "label_errors": prf({e["row"] for e in data["label_errors"]}, truth.flipped),
        "duplicates_pairs": prf(group_pairs([d["rows"] for d in data["duplicates"]]), near_truth),
        "exact": prf(
            group_pairs([d["rows"] for d in data["duplicates"] if d["exact"]]), truth.exact_pairs
        ),
        "exact_all_marked": truth.exact_pairs
        <= group_pairs([d["rows"] for d in data["duplicates"] if d["exact"]]),
        "leaks": prf({tuple(sorted(x["rows"])) for x in data["leaks"]}, truth.leak_pairs),
        "outliers_in_top_2x": round(len(outliers_top & truth.outliers) / len(truth.outliers), 3),
    }
    per_model = {}
    for m in models:
        pm = data["per_model"][m]
        flagged = pm["outliers"]
        per_model[m] = {
            "label_errors": prf(set(pm["label_errors"]), truth.flipped),
            "cleanlab_knn": prf(
                cleanlab_baseline(ws.vectors(ds, m).load(), list(ds.labels), seed), truth.flipped
            ),
            "near_pairs": prf(group_pairs(pm["duplicates"]), truth.all_pairs - truth.exact_pairs),
            "outliers_flagged": prf(set(flagged), truth.outliers),
        }
    best_cleanlab = max(v["cleanlab_knn"]["f1"] for v in per_model.values())
    goals = {
        "label_errors_f1_vs_best_cleanlab": round(
            combined["label_errors"]["f1"] - best_cleanlab, 3
        ),
        "label_errors": combined["label_errors"]["f1"] >= best_cleanlab + 0.05,
        "exact": combined["exact_all_marked"],
        "near_duplicates": combined["duplicates_pairs"]["recall"] >= 0.9
        and combined["duplicates_pairs"]["precision"] >= 0.8,
        "leaks": combined["leaks"]["recall"] >= 0.9,
        "outliers": combined["outliers_in_top_2x"] >= 0.8,
    }
    return {
        "n": data["n"],
        "planted": {
            "flipped": len(truth.flipped),
            "exact_pairs": len(truth.exact_pairs),
            "near_pairs": len(truth.near_pairs),
            "leak_pairs": len(truth.leak_pairs),
            "outliers": len(truth.outliers),
        },
        "combined": combined,
        "per_model": per_model,
        "goals": goals,
        "embed_s": round(embed_s, 1),
        "find_s": round(find_s, 1),
    }


def score_sentences(ws: Any) -> dict[str, Any]:
    ds = ws.open("demo:sentences")
    found = ws.find(ds, [TEXT_MODEL])
    clusters = found.clusters[TEXT_MODEL]
    names = [c["name"] for c in clusters]
    topics = sorted({str(x) for x in ds.labels})
    pure = set()
    for c in clusters:
        top, count = Counter(str(ds.labels[r]) for r in c["rows"]).most_common(1)[0]
        if count / len(c["rows"]) >= 0.8:
            pure.add(top)
    return {
        "clusters": len(clusters),
        "names": names,
        "names_distinct": len(set(names)) == len(names),
        "topics_with_pure_cluster": len(pure),
        "topics": len(topics),
        "goal": len(set(names)) == len(names) and len(pure) >= 6,
    }


SCALE_CLUSTERS = 50


def scale_plan(n: int, seed: int = 0) -> dict[str, Any]:
    """What the scale set plants, by row: a Gaussian mixture of ``SCALE_CLUSTERS`` clusters of
    uneven sizes and spreads (the same cluster of a row under both models), labels with 5 %
    flipped, a split column, exact copies (same text, same vectors), near copies (same text,
    vectors moved a little) and far outliers. About 0.01 % of the rows are copies."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(SCALE_CLUSTERS, 2.0))
    centre_of = rng.choice(SCALE_CLUSTERS, size=n, p=sizes)
    labels = centre_of.copy()
    flip = rng.random(n) < 0.05
    labels[flip] = rng.integers(0, SCALE_CLUSTERS, int(flip.sum()))
    split = np.where(rng.random(n) < 0.8, "train", "test")
    copies = max(4, n // 10_000)
    pick = rng.choice(n, size=3 * copies + max(4, n // 20_000), replace=False)
    exact = np.stack([pick[:copies], pick[copies : 2 * copies]], axis=1)  # (source, copy)
    near = np.stack([pick[2 * copies : 3 * copies], pick[copies : 2 * copies]], axis=1)
    # Each copy row gets one source: the first ``copies // 2`` copy rows are exact copies.
    half = copies // 2
    exact, near = exact[:half], near[half:]
    outliers = pick[3 * copies :]
    source = np.arange(n)
    source[exact[:, 1]] = exact[:, 0]
    source[near[:, 1]] = near[:, 0]
    centre_of[exact[:, 1]] = centre_of[exact[:, 0]]
    centre_of[near[:, 1]] = centre_of[near[:, 0]]
    labels[exact[:, 1]] = labels[exact[:, 0]]
    labels[near[:, 1]] = labels[near[:, 0]]
    return {
        "centre_of": centre_of,
        "labels": labels,
        "split": split,
        "source": source,  # a row's text is its source row's text
        "exact": exact,
        "near": near,
        "outliers": outliers,
        "spread": 0.45 + 0.35 * rng.random(SCALE_CLUSTERS),
    }


def write_scale_vectors(path: Path, plan: dict[str, Any], dim: int, model: int) -> None:
    """One model's vectors of the scale set, written a block at a time (memory-mapped)."""
    n = len(plan["centre_of"])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    centres = np.random.default_rng(10 + model).normal(size=(SCALE_CLUSTERS, dim))
    centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
    rng = np.random.default_rng(20 + model)
    spread = plan["spread"] / np.sqrt(dim)  # per dimension: a noise of norm ~ spread
    step = 100_000
    for s in range(0, n, step):
        c = plan["centre_of"][s : s + step]
        noise = rng.normal(size=(len(c), dim)).astype(np.float32) * spread[c, None]
        x = centres[c] + noise.astype(np.float32)
        rows = np.arange(s, s + len(c))
        far = np.isin(rows, plan["outliers"])
        if far.any():  # random directions: far from every cluster
            x[far] = rng.normal(size=(int(far.sum()), dim)).astype(np.float32)
        out[s : s + len(c)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    for pairs, move in ((plan["exact"], 0.0), (plan["near"], 0.02)):
        if len(pairs) == 0:
            continue
        order = np.argsort(pairs[:, 0])
        src = np.asarray(out[pairs[order, 0]])
        if move:
            src = src + move * rng.normal(size=src.shape).astype(np.float32) / np.sqrt(dim)
            src /= np.linalg.norm(src, axis=1, keepdims=True)
        for (_, copy), v in zip(pairs[order], src, strict=True):
            out[copy] = v
    out.flush()
    del out


def _reset_peak() -> bool:
    """Reset this process's peak resident set (Linux: ``/proc/self/clear_refs`` "5"), so that
    ``VmHWM`` read later is the peak since now; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _peak_kb() > 0
    except OSError:
        return False


def _peak_kb() -> int:
    """``VmHWM``: this process's peak resident set since start or the last reset, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def scale_run(ws: Any, n: int, dim: int, root: Path, log: Any) -> dict[str, Any]:
    """``n`` items x 2 models of ``dim``-d structured vectors (``scale_plan``), written into
    the cache as finished entries of a manifest dataset (ids, texts, labels, a split column);
    the whole ``find`` timed, with peak memory, and what it found against what was planted."""
    import csv

    from engine.params import EmbedParams

    plan = scale_plan(n)
    manifest = root / f"scale-{n}.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "split"])
        for i in range(n):
            w.writerow(
                [f"r{i}", f"item {plan['source'][i]}", f"c{plan['labels'][i]}", plan["split"][i]]
            )
    ds = ws.open(f"manifest:{manifest}")
    models = []
    for j in range(2):
        name = f"bench:structured-{j}"
        key = EmbedParams.vectors_key(ds.fingerprint(), f"{name}@seed{j}", "text")
        directory = ws.cache.entry_dir("vectors", key)
        directory.mkdir(parents=True, exist_ok=True)
        write_scale_vectors(directory / "vectors.npy", plan, dim, j)
        manifest_fields = {
            "dataset": ds.spec,
            "dataset_fingerprint": ds.fingerprint(),
            "model": name,
            "modality": "text",
            "n": n,
            "dim": dim,
        }
        ws.cache.put_manifest_only("vectors", key, manifest_fields)
        models.append(name)
    log(f"scale: {n:,} x {dim} x 2 written; finding (load avg {os.getloadavg()[0]:.1f})")
    load_before = os.getloadavg()
    own_peak = _reset_peak()  # the find's own peak, not the writing's
    t = time.perf_counter()
    found = ws.find(ds, models, split_column="split")
    seconds = time.perf_counter() - t
    process_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    peak_gb = _peak_kb() / 1024**2 if own_peak else process_gb
    data = found.to_json()
    exact_truth = {tuple(sorted(p)) for p in plan["exact"].tolist()}
    near_truth = {tuple(sorted(p)) for p in plan["near"].tolist()}
    exact_found = group_pairs([d["rows"] for d in data["duplicates"] if d["exact"]])
    all_found = group_pairs([d["rows"] for d in data["duplicates"]])
    top = {o["row"] for o in data["outliers"][: 2 * len(plan["outliers"])]}
    purity = []
    for c in data["clusters"][models[0]]:
        counts = np.bincount(plan["centre_of"][np.asarray(c["rows"])], minlength=SCALE_CLUSTERS)
        purity.append(counts.max() / counts.sum())
    return {
        "n": n,
        "dim": dim,
        "models": 2,
        "find_s": round(seconds, 1),
        "peak_rss_gb": round(peak_gb, 2),
        "peak_is_the_find_s_own": own_peak,
        "process_peak_rss_gb": round(process_gb, 2),
        "load_avg_before": [round(x, 1) for x in load_before],
        "load_avg_after": [round(x, 1) for x in os.getloadavg()],
        "counts": found.counts(),
        "planted": {
            "clusters": SCALE_CLUSTERS,
            "exact_pairs": len(exact_truth),
            "near_pairs": len(near_truth),
            "outliers": len(plan["outliers"]),
            "flipped": int((plan["labels"] != plan["centre_of"]).sum()),
        },
        "exact_recall": round(len(exact_found & exact_truth) / max(1, len(exact_truth)), 3),
        "duplicate_pairs": prf(all_found, exact_truth | near_truth),
        "outliers_in_top_2x": round(
            len(top & set(plan["outliers"].tolist())) / max(1, len(plan["outliers"])), 3
        ),
        "clusters_purity_median": round(float(np.median(purity)), 3) if purity else None,
        "label_errors": prf(
            {e["row"] for e in data["label_errors"]},
            set(np.flatnonzero(plan["labels"] != plan["centre_of"]).tolist()),
        ),
        "goal_le_300s": seconds <= 300,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--scale", action="store_true", help="also the 1M x 2 x 512 run")
    p.add_argument("--scale-n", type=int, default=1_000_000)
    p.add_argument("--scale-only", action="store_true", help="only the 1M run")
    p.add_argument("--out", help="folder for the planted sets and the cache (default: temp)")
    args = p.parse_args()
    rep = Reporter("findings", args)

    from engine.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="findings-bench-") as tmp:
        root = Path(args.out or tmp)
        ws = Workspace(os.environ.get("PARALLAX_CACHE") or root / "cache")
        figures: dict[str, Any] = {}
        models = IMAGE_MODELS[:2] if args.quick else IMAGE_MODELS
        sizes = (
            dict(n_base=160, flips=10, exact=4, near=6, cross=6, outliers=6) if args.quick else {}
        )
        seeds = [] if args.scale_only else args.seeds[:1] if args.quick else args.seeds
        for seed in seeds:
            manifest, truth = planted_shapes(root / f"shapes-{seed}", seed=seed, **sizes)
            rep.log(f"seed {seed}: {truth.n} items planted in {manifest}")
            figures[f"shapes_seed{seed}"] = result = score_image_set(
                ws, manifest, truth, models, seed
            )
            rep.log(f"seed {seed}: combined {result['combined']}")
            rep.log(f"seed {seed}: goals {result['goals']}")
        if not args.quick and not args.scale_only:
            figures["sentences"] = score_sentences(ws)
            rep.log(f"sentences: {figures['sentences']}")
        if args.scale or args.scale_only or args.quick:
            n = 20_000 if args.quick else args.scale_n
            figures["scale"] = scale_run(ws, n, 512 if not args.quick else 64, root, rep.log)
            rep.log(f"scale: {figures['scale']}")
        if seeds:
            first = figures[f"shapes_seed{seeds[0]}"]
            figures["label_errors_f1"] = first["combined"]["label_errors"]["f1"]
        rep.done(figures)


if __name__ == "__main__":
    main()
