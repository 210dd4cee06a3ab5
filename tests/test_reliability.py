"""Reliability (issue 8): kill -9 at random points, full or read-only disks, many processes and
sessions at once, and the cache CLI that keeps the disk in bounds.

Random kill points are drawn from a seed printed in every assertion message, so a failure can
be replayed with ``PARALLAX_TEST_SEED=<seed>``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.embed.local import embed_dataset
from engine.errors import CacheError
from engine.maps.project import project
from engine.store.cache import Cache
from tests.fakes import ArrayImageDataset, MeanColourModel

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("PARALLAX_TEST_SEED") or time.time_ns() % 1_000_000)


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen, expected: str, timeout: float = 120) -> None:
    """Read the child's stdout until ``expected`` (the child flushes after printing it)."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read()}")  # type: ignore
    raise AssertionError(f"child never printed {expected!r}")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


# -- kill -9 of an embedding job at random points ---------------------------------------------
EMBED_CHILD = textwrap.dedent(
    """
    import sys
    import engine.embed.local
    engine.embed.local.SHARD_TARGET_ITEMS = 8
    from engine.store.cache import Cache
    from engine.embed.local import embed_dataset
    from tests.fakes import ArrayImageDataset, MeanColourModel
    print("START", flush=True)
    model = MeanColourModel(delay_s=0.05)
    res = embed_dataset(ArrayImageDataset(48), model, cache=Cache(sys.argv[1]))
    print(res.cached, res.path, flush=True)
    """
)


def _assert_no_torn_files(cache: Cache, n: int, dim: int) -> None:
    """Whatever a kill left behind is either complete or invisible (temp names only)."""
    for shard in cache.root.glob("vectors/*.partial/shard-*.npy"):
        assert np.load(shard).shape[1] == dim  # each shard was renamed into place whole
    for final in cache.root.glob("vectors/*/vectors.npy"):
        assert np.load(final).shape == (n, dim)
    for entry in cache.entries("vectors"):
        assert entry.load().shape == (n, dim)


def test_embed_survives_kill_9_at_random_points(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)
    ds = ArrayImageDataset(48)
    reference = np.load(embed_dataset(ds, MeanColourModel(), cache=Cache(tmp_path / "ref")).path)

    rng = random.Random(SEED)
    cache = Cache(tmp_path / "killed")
    kills = []
    for _ in range(3):  # three kills in a row, each at a random moment of the job
        proc = _python(EMBED_CHILD, str(cache.root))
        _wait_for_line(proc, "START")
        delay = rng.uniform(0.0, 0.7)  # the whole job takes ~0.6 s of model time
        time.sleep(delay)
        finished = proc.poll() is not None
        _kill(proc)
        kills.append((round(delay, 3), finished))
        _assert_no_torn_files(cache, 48, 16)
        entries = cache.entries("vectors")
        if entries:  # finished before the kill: then it is complete and right
            np.testing.assert_array_equal(entries[0].load(), reference, err_msg=str(SEED))

    model = MeanColourModel()
    res = embed_dataset(ds, model, cache=cache)
    np.testing.assert_array_equal(np.load(res.path), reference, err_msg=f"seed {SEED} {kills}")
    assert sum(model.batches) <= 48
    assert not list(cache.root.glob("vectors/*.partial"))


# -- kill -9 of a projection ------------------------------------------------------------------
def _vectors(n: int = 300, d: int = 24) -> np.ndarray:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(6, d)) * 3
    return (centres[rng.integers(0, 6, n)] + rng.normal(size=(n, d))).astype(np.float32)


PROJECT_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import engine.store.cache
    from engine.store.cache import Cache
    from engine.maps.project import project

    if sys.argv[3] == "hang-before-manifest":  # stop between the array and its manifest
        real = engine.store.cache.atomic_write_json
        def slow(path, obj):
            if path.name == "manifest.json":
                print("ARRAY-WRITTEN", flush=True)
                import time; time.sleep(600)
            real(path, obj)
        engine.store.cache.atomic_write_json = slow
    print("START", flush=True)
    project(np.load(sys.argv[1]), sys.argv[4], seed=0, cache=Cache(sys.argv[2]))
    print("DONE", flush=True)
    """
)


def test_umap_projection_killed_mid_run_leaves_no_entry(tmp_path: Path) -> None:
    x = _vectors()
    np.save(tmp_path / "x.npy", x)
    reference = project(x, "umap", seed=0, cache=Cache(tmp_path / "ref")).coords()

    cache = Cache(tmp_path / "killed")
    proc = _python(PROJECT_CHILD, str(tmp_path / "x.npy"), str(cache.root), "plain", "umap")
    _wait_for_line(proc, "START")
    while not list(cache.root.glob("locks/*.lock")):  # the job has begun (it holds the lock)
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.02)
    delay = random.Random(SEED).uniform(0.0, 1.5)  # in the k-NN graph, the import, or the fit
    time.sleep(delay)
    finished = proc.poll() is not None
    _kill(proc)
    if not finished:
        assert cache.entries("projections") == [], f"seed {SEED}, delay {delay:.3f}"
        assert not list(cache.root.glob("projections/*/manifest.json"))

    rerun = project(x, "umap", seed=0, cache=cache)
    assert rerun.cached is finished
    np.testing.assert_array_equal(rerun.coords(), reference, err_msg=f"seed {SEED}")


def test_projection_killed_between_array_and_manifest_is_invisible(tmp_path: Path) -> None:
    x = _vectors()
    np.save(tmp_path / "x.npy", x)
    cache = Cache(tmp_path / "c")
    proc = _python(
        PROJECT_CHILD, str(tmp_path / "x.npy"), str(cache.root), "hang-before-manifest", "pca"
    )
    _wait_for_line(proc, "ARRAY-WRITTEN")
    _kill(proc)
    (coords,) = cache.root.glob("projections/*/coords.npy")  # the array is in place ...
    assert not (coords.parent / "manifest.json").exists()  # ... but not its manifest
    assert cache.entries("projections") == []  # so nobody sees an entry
    assert cache.get("projections", coords.parent.name) is None

    rerun = project(x, "pca", seed=0, cache=cache)
    assert not rerun.cached and rerun.path == coords
    reference = project(x, "pca", seed=0, cache=Cache(tmp_path / "ref")).coords()
    np.testing.assert_array_equal(rerun.coords(), reference)
    assert [e.key for e in cache.entries("projections")] == [rerun.key]


# -- full disk, read-only cache ---------------------------------------------------------------
def _fail_os_replace(monkeypatch, code: int, after: int = 0) -> list[str]:
    """Make ``os.replace`` fail with ``code`` from its ``after``-th call on; returns targets."""
    real = os.replace
    calls: list[str] = []

    def replace(src, dst, *args, **kwargs):
        calls.append(str(dst))
        if len(calls) > after:
            raise OSError(code, os.strerror(code))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_full_disk_during_a_projection(tmp_path: Path, monkeypatch) -> None:
    cache = Cache(tmp_path)
    x = _vectors(80)
    _fail_os_replace(monkeypatch, errno.ENOSPC)
    with pytest.raises(CacheError, match="the disk is full"):
        project(x, "pca", cache=cache)
    monkeypatch.undo()
    assert cache.entries() == []
    assert not list(tmp_path.rglob("*.tmp"))  # temp files removed
    assert not project(x, "pca", cache=cache).cached  # space freed: it just works


def test_full_disk_mid_embedding_frees_its_shards_and_reruns_identically(
    tmp_path: Path, monkeypatch
) -> None:
    """Issue #27: a full disk must not stay full because of the job that filled it, so the
    failed job's shards are removed (a killed job still resumes: test_embed_cache); the rerun
    once there is space gives the same vectors."""
    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)
    ds = ArrayImageDataset(40)
    reference = np.load(embed_dataset(ds, MeanColourModel(), cache=Cache(tmp_path / "ref")).path)
    cache = Cache(tmp_path / "full")
    calls = _fail_os_replace(monkeypatch, errno.ENOSPC, after=3)  # plan + 2 shards, then full
    with pytest.raises(CacheError, match="the disk is full") as failed:
        embed_dataset(ds, MeanColourModel(), cache=cache)
    assert len(calls) == 4
    assert "\n" not in str(failed.value) and "shards" in str(failed.value)
    monkeypatch.undo()
    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)
    assert cache.entries() == []
    assert not list(cache.root.glob("vectors/*.partial"))  # nothing left to keep the disk full
    model = MeanColourModel()
    res = embed_dataset(ds, model, cache=cache)
    assert sum(model.batches) == 40
    np.testing.assert_array_equal(np.load(res.path), reference)


def test_full_disk_while_extracting_an_archive(tmp_path: Path, monkeypatch) -> None:
    import engine.data.archive as archive_mod
    from engine.data import open_dataset
    from tests.test_security import _png, _zip_bytes

    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_bytes({f"s/{i}.png": _png((4, 4), (i, 9, 9)) for i in range(4)}))
    cache_root = tmp_path / "cache"

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archive_mod, "_copy_counted", full)
    with pytest.raises(CacheError, match="No space left on device"):
        open_dataset(f"zip:{archive}", cache_root=cache_root)
    assert list((cache_root / "extracted").iterdir()) == []  # no half extraction kept
    monkeypatch.undo()
    assert len(open_dataset(f"zip:{archive}", cache_root=cache_root)) == 4


def test_unusable_cache_directory_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache should be")
    with pytest.raises(CacheError, match=r"cannot use .* as the cache directory"):
        Cache(blocker)
    cmd = [sys.executable, "-m", "engine", "datasets", "--inspect", "demo:sentences"]
    out = subprocess.run(
        [*cmd, "--cache-dir", str(blocker / "sub")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: cannot use") and out.stderr.count("\n") == 1


def test_read_only_download_folder_is_a_per_item_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.data import open_dataset
    from tests.test_security import _png, _send_png, _Server

    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "1")
    server = _Server(_send_png)
    try:
        (tmp_path / "ok.png").write_bytes(_png())
        path = tmp_path / "m.csv"
        path.write_text(f"image\nok.png\n{server.url}/remote.png\n")
        _fail_os_replace(monkeypatch, errno.EROFS)
        ds = open_dataset(f"manifest:{path}", cache_root=tmp_path / "cache")
    finally:
        server.close()
    assert ds.ids == ["0"]  # the local image still loads
    assert ds.skipped[0].reason.startswith("could not store download: Read-only file system")


# -- many processes at once -------------------------------------------------------------------
def _needs_models() -> None:
    try:
        from engine.models import load_model  # noqa: F401
    except ImportError:
        pytest.skip("engine.models.load_model is not available yet (needed for baseline:pixels)")


def test_two_cli_embeds_of_the_same_job_make_one_entry(tmp_path: Path) -> None:
    _needs_models()
    cmd = [sys.executable, "-m", "engine", "embed", "--dataset", "demo:digits"]
    cmd += ["--model", "baseline:pixels", "--json", "--quiet", "--cache-dir", str(tmp_path)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    results = [json.loads(o[0]) for o in outs]
    assert sorted(r["cached"] for r in results) == [False, True]  # one computed, one waited
    assert len({r["path"] for r in results}) == 1
    (entry,) = Cache(tmp_path).entries("vectors")
    assert entry.load().shape[0] == 1797
    assert not list(tmp_path.glob("vectors/*.partial"))


def test_two_processes_opening_the_same_archive_extract_it_once(tmp_path: Path) -> None:
    from tests.test_security import _png, _zip_bytes

    archive = tmp_path / "set.zip"
    members = {f"set/{c}/{i}.png": _png((6, 6), (i, 40, 90)) for c in "ab" for i in range(30)}
    archive.write_bytes(_zip_bytes(members))
    cmd = [sys.executable, "-m", "engine", "datasets", "--inspect", f"zip:{archive}", "--json"]
    cmd += ["--cache-dir", str(tmp_path / "cache")]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    payloads = [json.loads(o[0]) for o in outs]
    assert {p["fingerprint"] for p in payloads} == {payloads[0]["fingerprint"]}
    assert all(p["n"] == 60 for p in payloads)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [p.name for p in (tmp_path / "cache" / "extracted").iterdir()] == [digest]


def test_two_cli_projections_of_the_same_vectors_make_one_entry(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", _vectors(200))
    cmd = [sys.executable, "-m", "engine", "project", "--vectors", str(tmp_path / "v.npy")]
    cmd += ["--method", "pca", "--json", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    results = [json.loads(o[0]) for o in outs]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert len(Cache(tmp_path / "cache").entries("projections")) == 1


def test_a_model_is_loaded_once_per_process_whatever_the_sessions(monkeypatch) -> None:
    _needs_models()
    from engine import models

    got: list[object] = []
    barrier = threading.Barrier(6)

    def load() -> None:
        barrier.wait()
        got.append(models.load_model("baseline:pixels"))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 6 and all(m is got[0] for m in got)  # one object: one load


# -- cache size: configurable, and the CLI that enforces it ------------------------------------
def _entry(cache: Cache, name: str, created: str, rows: int) -> str:
    key = name * 64
    cache.put("projections", key, np.zeros((rows, 2), np.float32), {"n": rows})
    path = cache.entry_dir("projections", key) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["created"] = created  # control the age without sleeping
    path.write_text(json.dumps(manifest))
    stamp = time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    os.utime(path.parent, (stamp, stamp))  # ... and the last use, which prune goes by
    return key


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "PARALLAX_CACHE_MAX_BYTES"}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env={**full_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cache_ls_and_prune_from_the_cli(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    old = _entry(cache, "a", "2024-01-01T00:00:00+0000", 5000)
    mid = _entry(cache, "b", "2025-01-01T00:00:00+0000", 5000)
    new = _entry(cache, "c", "2026-01-01T00:00:00+0000", 5000)
    (tmp_path / "vectors" / ("d" * 64 + ".partial")).mkdir(parents=True)  # never listed
    one = cache.get("projections", new).size_bytes()  # type: ignore[union-attr]

    out = _cli("cache", "ls", "--json", "--cache-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [e["key"] for e in listed["entries"]] == [new, mid, old]  # newest first
    assert all(e["bytes"] == one for e in listed["entries"])

    # The default comes from PARALLAX_CACHE_MAX_BYTES when --max-bytes is not given.
    out = _cli(
        "cache", "prune", "--json", "--cache-dir", str(tmp_path),
        env={"PARALLAX_CACHE_MAX_BYTES": str(2 * one)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["removed"] == [old] and result["max_bytes"] == 2 * one
    assert [e.key for e in cache.entries()] == [new, mid]

    out = _cli("cache", "prune", "--max-bytes", "1k", "--json", "--cache-dir", str(tmp_path))
    assert json.loads(out.stdout)["removed"] == [mid, new]  # --max-bytes wins; oldest first
    assert cache.entries() == []

    out = _cli("cache", "prune", "--json", "--cache-dir", str(tmp_path))  # no env: 20 GB
    assert json.loads(out.stdout)["max_bytes"] == 20 * 1024**3

    out = _cli("cache", "prune", "--max-bytes", "lots", "--cache-dir", str(tmp_path))
    assert out.returncode == 2 and "cannot read size 'lots'" in out.stderr
    out = _cli("cache", "prune", env={"PARALLAX_CACHE_MAX_BYTES": "-5"})
    assert out.returncode == 2 and "PARALLAX_CACHE_MAX_BYTES" in out.stderr


def test_prune_never_breaks_a_reader_of_a_removed_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    key = _entry(cache, "e", "2020-01-01T00:00:00+0000", 1000)
    entry = cache.get("projections", key)
    assert entry is not None
    mapped = entry.load()  # memory-mapped, as the dashboard holds it
    cache.prune(0)
    assert cache.get("projections", key) is None
    assert mapped.shape == (1000, 2) and float(mapped.sum()) == 0.0  # still readable
