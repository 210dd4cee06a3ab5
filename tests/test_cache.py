"""One cache for every kind: ``cache ls`` sees them all, ``prune`` bounds them all.

Entries are made through the engine's own code paths (embedding, thumbnails, upload staging,
archive extraction), then listed and pruned, in process and through the CLI.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import settings
from engine.data import open_dataset
from engine.data.thumbnails import build_thumbnails
from engine.embed.local import embed_dataset
from engine.errors import QuotaError
from engine.store import memo
from engine.store import space as cache_space
from engine.store.atomic import temp_prefix
from engine.store.cache import Cache, locked
from engine.store.space import KINDS, tree_size
from engine.store.uploads import UploadFile, stage_upload
from tests.fakes import ArrayImageDataset, MeanColourModel

REPO = Path(__file__).resolve().parent.parent


def png(colour: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def image_zip(path: Path, n: int, seed: int = 0) -> Path:
    """A zip of a labelled image folder (stored, not deflated: sizes are predictable)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"set/{'ab'[i % 2]}/{i}.png", png((i * 40 % 256, seed, 90)))
    return path


def set_last_use(path: Path, stamp: float) -> None:
    os.utime(path, (stamp, stamp))


def fill(cache: Cache, tmp_path: Path) -> dict[str, Path]:
    """One entry of vectors, thumbnails, uploads, extracted archives (and the image checks the
    archive's folder makes), each through the engine; returns kind -> entry path."""
    ds = ArrayImageDataset(300)
    res = embed_dataset(ds, MeanColourModel(), cache=cache)
    thumbs = build_thumbnails(ds, cache).parent
    spec = stage_upload([UploadFile(f"{i}.png", png((i, 2, 3), 48)) for i in range(6)], "alice",
                        cache=cache)  # fmt: skip
    opened = open_dataset(f"zip:{image_zip(tmp_path / 'set.zip', 8)}", cache_root=cache.root)
    del opened  # closed: its lease on the extracted folder goes with it
    gc.collect()
    (extracted,) = [e.path for e in cache.stored("extracted")]
    (checks,) = [e.path for e in cache.stored("checks")]
    return {
        "vectors": res.path.parent,
        "thumbs": thumbs,
        "uploads": Path(spec.removeprefix("folder:")).parent,
        "extracted": extracted,
        "checks": checks,
    }


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ls_shows_every_kind_and_prune_bounds_them_all_but_the_entry_in_use(
    tmp_path: Path,
) -> None:
    cache = Cache(tmp_path / "cache")
    made = fill(cache, tmp_path)
    out = _cli("cache", "ls", "--json", "--cache-dir", str(cache.root))
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    kinds = {k["kind"]: k for k in listed["kinds"]}
    assert list(kinds) == list(KINDS)  # every kind, the empty ones too
    for kind, path in made.items():
        assert kinds[kind]["entries"] == 1, kind
        assert kinds[kind]["bytes"] == tree_size(path) > 0, kind
    assert kinds["compare"]["entries"] == 0 and kinds["compare"]["bytes"] == 0
    assert listed["total_bytes"] == sum(k["bytes"] + k["other_bytes"] for k in kinds.values())
    assert {e["kind"] for e in listed["entries"]} == set(made)
    human = _cli("cache", "ls", "--cache-dir", str(cache.root)).stdout
    assert all(kind in human for kind in KINDS)

    # A dataset opened from the upload holds it: another process's prune to 0 keeps it.
    upload = open_dataset(f"folder:{made['uploads'] / 'images'}", cache_root=cache.root)
    out = _cli("cache", "prune", "--max-bytes", "0", "--json", "--cache-dir", str(cache.root))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [e["kind"] for e in report["in_use"]] == ["uploads"]
    assert {e["kind"] for e in report["removed_entries"]} == set(made) - {"uploads"}
    assert report["bytes_after"] == tree_size(made["uploads"])
    assert made["uploads"].is_dir() and len(upload) == 6 and upload.load_image(5).size == (48, 48)
    assert [e.kind for e in cache.stored()] == ["uploads"]

    del upload
    gc.collect()
    out = _cli("cache", "prune", "--max-bytes", "0", "--json", "--cache-dir", str(cache.root))
    assert json.loads(out.stdout)["removed"] and cache.stored() == []
    assert not (cache.kind_dir("uploads") / "alice").exists()  # the empty owner folder too


def test_prune_removes_least_recently_used_first_across_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_space, "TOUCH_EVERY_S", 0.0)  # record every use in this test
    cache = Cache(tmp_path / "cache")
    made = fill(cache, tmp_path)
    order = ["extracted", "uploads", "thumbs", "checks", "vectors"]  # oldest use first
    for age, kind in enumerate(order):
        set_last_use(made[kind], 1_000_000 + 1000 * age)
    # Reopening the archive is a use: the extracted folder becomes the most recently used.
    again = open_dataset(f"zip:{tmp_path / 'set.zip'}", cache_root=cache.root)
    del again
    gc.collect()
    (extracted,) = cache.stored("extracted")
    assert extracted.last_used > 1_000_000 + 1000 * len(order)

    size = {kind: tree_size(path) for kind, path in made.items()}
    limit = sum(size.values()) - size["uploads"] - size["thumbs"]
    report = cache.prune(limit)
    assert [e.kind for e in report.removed] == ["uploads", "thumbs"]
    assert report.bytes_after == limit and report.in_use == []
    assert sorted(e.kind for e in cache.stored()) == ["checks", "extracted", "vectors"]
    # Vectors read through the cache count as used too.
    (vec,) = cache.entries("vectors")
    for stamp, kind in enumerate(["vectors", "checks", "extracted"], start=1):
        set_last_use(made[kind], stamp)
    assert cache.get("vectors", vec.key) is not None
    report = cache.prune(sum(e.bytes for e in cache.stored()) - 1)
    assert [e.kind for e in report.removed] == ["checks"]


def test_prune_skips_an_entry_being_written(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    res = embed_dataset(ArrayImageDataset(20), MeanColourModel(), cache=cache)
    with locked(cache.root, res.key):  # a writer holds the key (e.g. another embed job)
        report = cache.prune(0)
        assert [e.key for e in report.in_use] == [res.key] and report.removed == []
    assert [e.key for e in cache.prune(0).removed] == [res.key]


KILLED_EXTRACTION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import engine.data.archive as archive
    from engine.store.cache import Cache
    real = archive._copy_counted
    def slow(src, dest, declared):
        print("COPYING", flush=True)
        time.sleep(0.2)
        return real(src, dest, declared)
    archive._copy_counted = slow
    archive.extract_archive(Path(sys.argv[1]), Cache(sys.argv[2]))
    """
)


def test_prune_removes_what_killed_jobs_left_and_nothing_alive(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    archive = image_zip(tmp_path / "big.zip", 40)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_EXTRACTION, str(archive), str(cache.root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "COPYING"
    child.kill()
    child.wait(timeout=30)
    (leftover,) = list(cache.kind_dir("extracted").iterdir())
    assert leftover.name.startswith(".tmp-")  # the killed extraction's temp folder
    # Other leftovers: an old unfinished embedding, an old temp file inside a thumbnail entry.
    partial = cache.partial_dir("vectors", "a" * 64)
    partial.mkdir(parents=True)
    (partial / "shard-000000.npy").write_bytes(b"x" * 100)
    sheet_tmp = cache.path("thumbs", "b" * 64) / "64px-v1" / ".tmp-sheet-000000.webp-x1y2"
    sheet_tmp.parent.mkdir(parents=True)
    sheet_tmp.write_bytes(b"half a sheet")
    # ... and what must stay: a young temp file, an old one whose writer is alive.
    young = cache.kind_dir("compare") / f"{temp_prefix(cache.path('compare', 'c' * 64))}z9"
    young.parent.mkdir(parents=True)
    young.write_bytes(b"being written")
    busy = cache.kind_dir("extracted") / ".tmp-dddd-abc"
    busy.mkdir()
    staging = cache.kind_dir("uploads") / "alice" / ".tmp-upload-abc-x1y2"  # a slow upload
    staging.mkdir(parents=True)
    old = time.time() - 2 * settings.ORPHAN_AGE_S
    for path in (leftover, partial, partial / "shard-000000.npy", sheet_tmp, busy, staging):
        set_last_use(path, old)
    for f in leftover.rglob("*"):
        set_last_use(f, old)

    # The writer of the busy temp folder is alive; the upload's stager holds its lease.
    with locked(cache.root, "dddd"), cache.lease("uploads", "alice", "upload-abc"):
        report = cache.prune(10**12)
    assert sorted(p.name for p in report.orphans) == sorted(
        [leftover.name, partial.name, sheet_tmp.name]
    )
    assert not leftover.exists() and not partial.exists() and not sheet_tmp.exists()
    assert young.exists() and busy.exists() and staging.exists()
    assert report.removed == []  # under the limit: no finished entry touched
    # Once the writers are gone, the next prune takes the old temp folders too.
    assert sorted(p.name for p in cache.prune(10**12).orphans) == sorted([busy.name, staging.name])


def test_extraction_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(tmp_path / "cache")
    first = image_zip(tmp_path / "one.zip", 6, seed=1)
    one_size = sum(i.file_size for i in zipfile.ZipFile(first).infolist())
    monkeypatch.setattr(settings, "QUOTA_EXTRACTED", int(one_size * 1.5))
    kept = open_dataset(f"zip:{first}", cache_root=cache.root)  # open: its folder is in use
    second = image_zip(tmp_path / "two.zip", 6, seed=2)
    with pytest.raises(QuotaError) as err:
        open_dataset(f"zip:{second}", cache_root=cache.root)
    line = str(err.value)
    assert "\n" not in line and "unpacking two.zip" in line
    assert "PARALLAX_QUOTA_EXTRACTED" in line
    assert not list(cache.kind_dir("extracted").glob(".tmp-*"))  # refused before inflating
    assert len(kept) == 6 and kept.load_image(0).size == (32, 32)
    del kept
    gc.collect()  # closed: now the older extraction makes room
    with caplog.at_level(logging.INFO, logger="engine.store.space"):
        assert len(open_dataset(f"zip:{second}", cache_root=cache.root)) == 6
    assert len(cache.stored("extracted")) == 1
    evicted = [r.getMessage() for r in caplog.records if r.name == "engine.store.space"]
    assert len(evicted) == 1 and "PARALLAX_QUOTA_EXTRACTED" in evicted[0], evicted
    assert "removed least-recently-used extracted/" in evicted[0]


def test_config_quotas_come_from_the_environment() -> None:
    code = "from engine import settings; print(settings.QUOTA_UPLOADS, settings.QUOTA_EXTRACTED, " \
           "settings.QUOTA_DOWNLOADS, settings.ORPHAN_AGE_S)"  # fmt: skip
    env = {
        **os.environ,
        "PARALLAX_QUOTA_UPLOADS": "5M",
        "PARALLAX_QUOTA_EXTRACTED": "2G",
        "PARALLAX_QUOTA_DOWNLOADS": "100k",
        "PARALLAX_ORPHAN_AGE_S": "60",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.split() == [str(5 * 1024**2), str(2 * 1024**3), str(100 * 1024), "60.0"]


def test_keys_never_leave_their_namespace(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    for bad in ("../x", "/etc", "a/b", "", "x" * 200, "a.b"):
        with pytest.raises(Exception, match="invalid cache key"):
            cache.path("thumbs", bad)
    with pytest.raises(Exception, match="unknown cache kind"):
        cache.path("secrets", "a")
    assert cache.path("compare", "k") == cache.root / "compare" / "k.json"
    assert np.all(np.array([cache.lease_path(p) is None for p in ("/etc", tmp_path)]))


def test_one_module_writes_atomically() -> None:
    """Temp file + fsync + rename is written once, in engine/store/atomic.py."""
    engine_dir = REPO / "engine"
    callers = sorted(
        str(p.relative_to(engine_dir))
        for p in engine_dir.rglob("*.py")
        if "os.fsync(" in p.read_text(encoding="utf-8")
    )
    assert callers == ["store/atomic.py"]


# -- the read-through helper (engine.store.memo) -------------------------------------------
def test_read_through_computes_once_and_then_reads(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    first = memo.json_entry(cache, "compare", "k1", compute)
    second = memo.json_entry(cache, "compare", "k1", compute)
    assert (first.cached, second.cached) == (False, True)
    assert first.value == second.value == {"answer": 42} and len(calls) == 1
    assert first.path == cache.path("compare", "k1") and first.path.is_file()


def test_read_through_looks_again_under_the_lock(tmp_path: Path) -> None:
    """Another writer finishing between the first look-up and the lock: nothing is computed."""
    cache = Cache(tmp_path / "cache")
    looks: list[int] = []

    def read(path: Path) -> str | None:
        looks.append(1)
        if len(looks) == 1:  # missing at first; the other writer finishes meanwhile
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("theirs")
            return None
        return path.read_text()

    def make(path: Path) -> str:
        raise AssertionError("computed although the entry was there under the lock")

    got = memo.read_through(cache, "compare", "k2", read=read, make=make)
    assert (got.value, got.cached, len(looks)) == ("theirs", True, 2)


def test_a_torn_entry_is_recomputed_and_an_unkept_value_never_stored(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    path = cache.path("compare", "k3")
    path.parent.mkdir(parents=True)
    path.write_text('{"half": ')  # a foreign or torn file
    got = memo.json_entry(cache, "compare", "k3", lambda: {"whole": 1})
    assert not got.cached and json.loads(path.read_text()) == {"whole": 1}
    # keep=False (e.g. a result built from failed models): returned, never stored.
    calls: list[int] = []
    for _ in range(2):
        memo.json_entry(cache, "compare", "k4", lambda: calls.append(1) or {}, keep=lambda v: False)
    assert len(calls) == 2 and not cache.path("compare", "k4").exists()


def test_array_entries_read_through(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    coords = np.arange(6, dtype=np.float32).reshape(3, 2)
    made = memo.array_entry(cache, "projections", "k5", lambda: (coords, {"n": 3}))
    again = memo.array_entry(cache, "projections", "k5", lambda: (coords * 0, {"n": 0}))
    assert not made.cached and again.cached and again.value.manifest["n"] == 3
    assert np.array_equal(again.value.load(), coords)
