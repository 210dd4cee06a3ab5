"""Benchmark 3: the first UMAP map of 10k text vectors in a fresh process, on a new machine.

Every figure is the wall time of a whole fresh process (interpreter start and imports included),
as a user starting the CLI or the app pays it:

- ``python -m engine project --vectors V --method umap --json``, and
  ``python -m engine project --dataset manifest:TEXTS.csv --model st:all-MiniLM-L6-v2 ...`` with
  the vectors already cached, each on a *new machine* (a fresh ``PARALLAX_CACHE`` holding only
  the vectors, a fresh empty ``NUMBA_CACHE_DIR``) and on a *warm* one (a second fresh process
  after the first, so whatever the first left on disk is there; the map itself is not cached);
- plain cold umap-learn, ``umap.UMAP().fit_transform(x)``, on the same vectors;
- with ``--alternatives``: umap-learn on the engine's faiss k-NN graph (the previous engine
  path) with an empty and with a warm numba disk cache, and openTSNE if it is installed;
- the Home page of the dashboard (AppTest) on a new machine: seconds until its UMAP map is in.

Quality (trustworthiness at k = 10 and 10-NN recall, ``engine.maps.project.map_quality``) of the
engine's map and of umap-learn's. The texts are 10k distinct sentences from the docstrings of
the Python standard library and a few installed packages (deterministic on one installation);
their MiniLM vectors are embedded once into ``--texts-cache`` (not timed; ~10 min on 2 cores).

    python benchmarks/bench_first_map.py [--quick] [--json] [--alternatives]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, Reporter, parser

MODEL = "st:all-MiniLM-L6-v2"
QUICK_MODEL = "baseline:text"

PLAIN_UMAP = """
import time, json, warnings
t0 = time.perf_counter()
import numpy as np
warnings.simplefilter("ignore")
import umap
x = np.load({vectors!r})
coords = umap.UMAP().fit_transform(x)
np.save({out!r}, coords.astype(np.float32))
print(json.dumps({{"s": time.perf_counter() - t0}}))
"""

# The previous engine path: exact k-NN from faiss handed to umap-learn, numba's disk cache on.
UMAP_ON_FAISS_GRAPH = """
import time, json, sys, warnings, contextlib
t0 = time.perf_counter()
import numpy as np
sys.path.insert(0, {repo!r})
from engine.maps.project import knn_graph
warnings.simplefilter("ignore")
import umap, umap.umap_, umap.layouts, umap.spectral, umap.utils
from numba.core.registry import CPUDispatcher
for module in (umap.umap_, umap.layouts, umap.utils, umap.spectral):
    for obj in list(vars(module).values()):
        if isinstance(obj, CPUDispatcher) and type(obj._cache).__name__ == "NullCache":
            with contextlib.suppress(Exception):
                obj.enable_caching()
x = np.load({vectors!r})
x = x / np.linalg.norm(x, axis=1, keepdims=True)
idx, d = knn_graph(x, 15)
coords = umap.UMAP(n_neighbors=15, metric="cosine", n_epochs=200, random_state=0,
                   precomputed_knn=(idx, d, None)).fit_transform(x)
np.save({out!r}, coords.astype(np.float32))
print(json.dumps({{"s": time.perf_counter() - t0}}))
"""

OPENTSNE = """
import time, json
t0 = time.perf_counter()
import numpy as np
from openTSNE import TSNE
x = np.load({vectors!r})
coords = TSNE(metric="cosine", n_jobs=-1, random_state=0).fit(x)
np.save({out!r}, np.asarray(coords, dtype=np.float32))
print(json.dumps({{"s": time.perf_counter() - t0}}))
"""

HOME_PAGE = """
import time, json, sys
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({app!r}, default_timeout=300)
at.run()
first = time.perf_counter() - t0
while not at.get("segmented_control"):
    if at.exception:
        raise SystemExit(str(at.exception))
    if time.perf_counter() - t0 > 600:
        raise SystemExit("no UMAP map on Home after 600 s")
    time.sleep(0.25)
    at.run()
print(json.dumps({{"first_page_s": first, "umap_s": time.perf_counter() - t0}}))
"""


def docstring_sentences(n: int) -> list[tuple[str, str]]:
    """``n`` distinct sentences (and their module) from installed docstrings, seeded order."""
    import importlib
    import inspect
    import pkgutil
    import random
    import re
    import warnings

    stdlib = str(Path(os.__file__).parent)
    skip = {"antigravity", "this", "idlelib", "tkinter", "turtle"}
    names = ["numpy", "scipy.linalg", "scipy.stats", "scipy.signal", "pandas"]
    names += sorted(m.name for m in pkgutil.iter_modules() if m.module_finder.path == stdlib)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name.startswith("_") or name in skip:
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # a module that needs what is not installed: skip it
                continue
            objects: list[object] = [module]
            for key, value in sorted(vars(module).items()):
                if key.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)):
                    continue
                objects.append(value)
                if inspect.isclass(value):
                    members = sorted(vars(value).items())
                    objects += [m for k, m in members if not k.startswith("_") and callable(m)]
            for obj in objects:
                doc = inspect.getdoc(obj) or ""
                for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 30 <= len(s) <= 200 and s[0].isupper() and s not in seen:
                        seen.add(s)
                        out.append((name, s))
    random.Random(0).shuffle(out)
    return out[:n]


def write_texts(path: Path, n: int) -> None:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for i, (module, sentence) in enumerate(docstring_sentences(n)):
            writer.writerow([f"t{i:05d}", sentence, module])


CPU_S: dict[str, float] = {}  # CPU seconds (user + system) of the last run's process


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str], env: dict[str, str], timeout: float = 3600) -> tuple[float, str]:
    """Wall seconds of a fresh process and its stdout (raises with its stderr on failure).

    The process's CPU seconds go to ``CPU_S["last"]``: on a shared machine they say what the
    process cost when the wall time says mostly how busy the machine was."""
    t = time.perf_counter()
    cpu = children_cpu_s()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    wall = time.perf_counter() - t
    CPU_S["last"] = children_cpu_s() - cpu
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{out.stderr[-3000:]}")
    return wall, out.stdout


def child(code: str, env: dict[str, str]) -> tuple[float, dict]:
    wall, stdout = run([sys.executable, "-c", code], env)
    return wall, json.loads(stdout.strip().splitlines()[-1])


def new_machine(root: Path, name: str, vectors_entry: Path | None) -> dict[str, str]:
    """An environment as on a machine that never ran Parallax: a new cache folder and an empty
    numba cache. With ``vectors_entry``, the cache holds those vectors and the model identity
    records written when they were embedded (a cache folder carried to a new machine), nothing
    else: no map, no compiled code."""
    cache = root / name / "cache"
    cache.mkdir(parents=True)
    if vectors_entry is not None:
        shutil.copytree(vectors_entry, cache / "vectors" / vectors_entry.name)
        identities = vectors_entry.parent.parent / "identities"
        if identities.is_dir():
            shutil.copytree(identities, cache / "identities")
    env = {**os.environ, "PARALLAX_CACHE": str(cache)}
    env["NUMBA_CACHE_DIR"] = str(root / name / "numba")
    env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--alternatives", action="store_true", help="also time the alternatives")
    p.add_argument(
        "--texts-cache",
        default=str(REPO / "cache" / "bench-first-map"),
        help="where TEXTS.csv and its vectors are kept between runs",
    )
    args = p.parse_args()
    rep = Reporter("first_map_new_machine", args)
    n, model = (600, QUICK_MODEL) if args.quick else (10_000, MODEL)
    src = Path(args.texts_cache) / ("quick" if args.quick else "full")
    src.mkdir(parents=True, exist_ok=True)
    texts = src / "TEXTS.csv"
    if not texts.is_file():
        rep.log(f"writing {n} docstring sentences to {texts}")
        write_texts(texts, n)
    dataset = f"manifest:{texts}"
    src_env = {**os.environ, "PARALLAX_CACHE": str(src / "cache")}
    rep.log(f"embedding {n} texts with {model} once (not timed; cached after the first run)")
    embed = [sys.executable, "-m", "engine", "embed", "--dataset", dataset, "--model", model]
    _, stdout = run([*embed, "--json", "--quiet"], src_env)
    embedded = json.loads(stdout)
    vectors_path = Path(embedded["path"])
    entry = vectors_path.parent
    x = np.load(vectors_path)
    figures: dict[str, object] = {"n": len(x), "dim": int(x.shape[1]), "model": model}
    loads = [load_average()]

    from engine.maps.project import map_quality

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = [sys.executable, "-m", "engine", "project", "--method", "umap"]
        by_vectors = [*project, "--json", "--quiet", "--vectors", str(vectors_path)]
        by_dataset = [*project, "--json", "--quiet", "--dataset", dataset, "--model", model]

        def engine_row(name: str, cmd: list[str], env: dict[str, str]) -> dict:
            wall, stdout = run(cmd, env)
            payload = json.loads(stdout)
            figures[f"{name}_s"] = round(wall, 2)
            figures[f"{name}_cpu_s"] = round(CPU_S["last"], 2)
            rep.log(f"  {name}: {wall:.1f}s, {CPU_S['last']:.1f} CPU s (load {load_average()})")
            return payload

        rep.log("engine, --vectors: a new machine, then a warm one (fresh processes)")
        env = new_machine(root, "vectors", None)
        first = engine_row("engine_vectors_new_machine", by_vectors, env)
        env_warm = {**env, "PARALLAX_CACHE": str(root / "vectors" / "cache-2")}
        engine_row("engine_vectors_warm", by_vectors, env_warm)

        rep.log("engine, --dataset/--model with the vectors cached: new machine, then warm")
        env = new_machine(root, "dataset", entry)
        engine_row("engine_dataset_new_machine", by_dataset, env)
        shutil.rmtree(Path(env["PARALLAX_CACHE"]) / "projections", ignore_errors=True)
        engine_row("engine_dataset_warm", by_dataset, env)

        rep.log("plain cold umap-learn: umap.UMAP().fit_transform in a fresh process")
        env = new_machine(root, "plain", None)
        plain_out = str(root / "plain.npy")
        plain_s, _ = child(PLAIN_UMAP.format(vectors=str(vectors_path), out=plain_out), env)
        figures["plain_umap_learn_cold_s"] = round(plain_s, 2)
        figures["plain_umap_learn_cold_cpu_s"] = round(CPU_S["last"], 2)
        cpu = CPU_S["last"]
        rep.log(f"  plain umap-learn: {plain_s:.1f}s, {cpu:.1f} CPU s (load {load_average()})")
        loads.append(load_average())

        ours = map_quality(x, np.load(first["path"]))
        theirs = map_quality(x, np.load(plain_out))
        figures |= {
            "engine_trustworthiness": round(ours["trustworthiness"], 4),
            "engine_knn_recall": round(ours["knn_recall"], 4),
            "umap_learn_trustworthiness": round(theirs["trustworthiness"], 4),
            "umap_learn_knn_recall": round(theirs["knn_recall"], 4),
        }

        if args.alternatives:
            alt_env = new_machine(root, "alt-umap", None)
            for label in ("new_machine", "warm"):
                out = str(root / f"alt-{label}.npy")
                code = UMAP_ON_FAISS_GRAPH.format(
                    repo=str(REPO), vectors=str(vectors_path), out=out
                )
                wall, _ = child(code, alt_env)
                figures[f"alt_umap_learn_faiss_graph_{label}_s"] = round(wall, 2)
                figures[f"alt_umap_learn_faiss_graph_{label}_cpu_s"] = round(CPU_S["last"], 2)
                rep.log(f"  umap-learn on the faiss graph, {label}: {wall:.1f}s")
            q = map_quality(x, np.load(out))
            figures["alt_umap_learn_faiss_graph_trustworthiness"] = round(q["trustworthiness"], 4)
            figures["alt_umap_learn_faiss_graph_knn_recall"] = round(q["knn_recall"], 4)
            try:
                import openTSNE  # noqa: F401

                out = str(root / "tsne.npy")
                wall, _ = child(OPENTSNE.format(vectors=str(vectors_path), out=out), alt_env)
                q = map_quality(x, np.load(out))
                figures["alt_opentsne_s"] = round(wall, 2)
                figures["alt_opentsne_cpu_s"] = round(CPU_S["last"], 2)
                figures["alt_opentsne_trustworthiness"] = round(q["trustworthiness"], 4)
                figures["alt_opentsne_knn_recall"] = round(q["knn_recall"], 4)
                rep.log(f"  openTSNE: {wall:.1f}s, {q}")
            except ImportError:
                rep.log("  openTSNE not installed: skipped")

        rep.log("Home page (AppTest) on a new machine: seconds until its UMAP map is in")
        env = new_machine(root, "home", None)
        code = HOME_PAGE.format(repo=str(REPO), app=str(REPO / "dashboard" / "app.py"))
        _, home = child(code, env)
        figures["home_first_page_s"] = round(home["first_page_s"], 2)
        figures["home_umap_s"] = round(home["umap_s"], 2)
        rep.log(f"  first page {home['first_page_s']:.1f}s, UMAP in {home['umap_s']:.1f}s")
        loads.append(load_average())

    figures["speedup_vs_plain_new_machine"] = round(
        figures["plain_umap_learn_cold_s"] / figures["engine_dataset_new_machine_s"], 2
    )
    figures["cpu_ratio_vs_plain_new_machine"] = round(
        figures["plain_umap_learn_cold_cpu_s"] / figures["engine_dataset_new_machine_cpu_s"], 2
    )
    figures["load_average_1min"] = loads
    figures["target_s"] = 10
    rep.done(figures)


if __name__ == "__main__":
    main()
