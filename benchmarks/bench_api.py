"""Benchmark: the HTTP service under load, with dynamic batching vs one model call per request.

Two servers run side by side on 127.0.0.1 (loopback only), each a real ``python -m engine serve``
over the same cache: the service as shipped (dynamic batching, <= 5 ms wait) and the baseline
(``--max-batch 1 --batch-wait-ms 0``: every request calls the model alone, as a plain
one-route-per-model Flask app would). For 1, 8 and 32 concurrent clients it sends a bounded number
of requests (and stops at a time limit) and reports requests/s, p50 / p99 latency and errors:

- ``/v1/predict``: one image (a demo:shapes drawing), eight labels, ``demo:shapes-clip``;
- ``/v1/search``: a text query over 100,000 embedded texts (``baseline:text``; IVF index).

    python benchmarks/bench_api.py [--quick] [--json]
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import REPO, Reporter, parser

SHAPES = ["circle", "crescent", "cross", "heart", "hexagon", "square", "star", "triangle"]
CONCURRENCY = (1, 8, 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    # The operator lets clients name the benchmark's own manifest (the visitor policy).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PARALLAX_SERVER_PATHS": str(cache.parent)}
    env.pop("PARALLAX_API_KEYS", None)
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--port",
        str(port),
        "--cache-dir",
        str(cache),
        *extra,
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def load(base: str, send, clients: int, requests: int, limit_s: float) -> dict[str, float]:
    """``requests`` calls of ``send(client)`` from ``clients`` threads, stopping at ``limit_s``."""
    import httpx

    per_client = max(1, requests // clients)
    deadline = time.perf_counter() + limit_s

    def worker(_: int) -> tuple[list[float], int]:
        times, errors = [], 0
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(per_client):
                if time.perf_counter() > deadline:
                    break
                t = time.perf_counter()
                ok = send(c)
                times.append(time.perf_counter() - t)
                errors += 0 if ok else 1
        return times, errors

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array([t for times, _ in results for t in times]) * 1000.0
    return {
        "requests": len(lat),
        "errors": int(sum(e for _, e in results)),
        "rps": round(len(lat) / wall, 2),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


def main() -> None:
    args = parser(__doc__).parse_args()
    rep = Reporter("http_api", args)
    from PIL import Image  # noqa: F401  (decoding happens in the servers)

    from engine.data import open_dataset
    from engine.embed.local import embed_dataset
    from engine.store.cache import Cache

    n_search = 5_000 if args.quick else 100_000
    requests = 16 if args.quick else 256
    limit_s = 20.0 if args.quick else 90.0
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    cache = tmp / "cache"

    # The search corpus: generated sentences, embedded once (the timing is not part of this).
    words = ["red", "blue", "cat", "dog", "coffee", "rain", "music", "stock", "orbit", "bread"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=6)) + f" {i}" for i in range(n_search)]
    manifest = tmp / "texts.csv"
    import pandas as pd

    pd.DataFrame({"text": texts}).to_csv(manifest, index=False)
    spec = f"manifest:{manifest}"
    rep.log(f"embedding {n_search} texts for search ...")
    embed_dataset(open_dataset(spec, cache_root=cache), "baseline:text", cache=Cache(cache))

    drawing = io.BytesIO()
    open_dataset("demo:shapes?n=100").load_image(0).save(drawing, format="PNG")
    image = drawing.getvalue()

    def predict(c) -> bool:
        r = c.post(
            "/v1/predict",
            data={"labels": ",".join(SHAPES), "models": "demo:shapes-clip"},
            files=[("files", ("d.png", image, "image/png"))],
        )
        return r.status_code == 200 and r.json()["predictions"][0]["error"] is None

    def search(c) -> bool:
        body = {"dataset": spec, "model": "baseline:text", "query": "red cat coffee", "k": 10}
        r = c.post("/v1/search", json=body)
        return r.status_code == 200 and len(r.json()["results"]) == 10

    figures: dict[str, object] = {"search_items": n_search}
    servers = {
        "batched": start_server(cache),
        "baseline": start_server(cache, "--max-batch", "1", "--batch-wait-ms", "0"),
    }
    try:
        for name, (_, base) in servers.items():
            predict_ok = load(base, predict, 1, 2, limit_s)  # loads the model, warms the path
            search_ok = load(base, search, 1, 2, limit_s)  # builds the index
            assert predict_ok["errors"] == 0 and search_ok["errors"] == 0
            for clients in CONCURRENCY:
                for route, send in (("predict", predict), ("search", search)):
                    if route == "search" and name == "baseline":
                        continue  # search batches nothing worth comparing: measured once
                    got = load(base, send, clients, requests, limit_s)
                    figures[f"{route}_{name}_c{clients}"] = got
                    rep.log(f"{name:8s} {route:7s} c={clients:2d}: {got}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    top = CONCURRENCY[-1]
    batched = figures[f"predict_batched_c{top}"]["rps"]  # type: ignore[index]
    baseline = figures[f"predict_baseline_c{top}"]["rps"]  # type: ignore[index]
    figures["predict_speedup_c32"] = round(batched / baseline, 2) if baseline else 0.0
    figures["search_p99_ms_c32"] = figures[f"search_batched_c{top}"]["p99_ms"]  # type: ignore[index]
    figures["errors"] = sum(v["errors"] for v in figures.values() if isinstance(v, dict))
    rep.log(f"predict throughput at {top} clients: {figures['predict_speedup_c32']}x the baseline")
    rep.done(figures)


if __name__ == "__main__":
    main()
