"""Issue #27: a read-only cache still browses; a failed embed's shards do not keep a disk full.

Read-only is made the way root also has to respect it: each child process runs in a private
mount namespace (``unshare -m``, ``unshare -rm`` for a non-root user) where the cache folder is
bind-mounted onto itself read-only. Every write there fails with EROFS, as on a read-only
volume of a container, whatever the user. The cache is filled first, writable, by the
same engine; then the dashboard's Home (view-only and full), the CLI's read commands and
``python -m engine serve`` run on it read-only. Where ``unshare`` or ``mount`` is not
permitted (a container without the capability), those tests skip.

The disk-full half needs no mount: a fake shard writer raises ``OSError(ENOSPC)``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import CacheError
from engine.store.atomic import ReadOnlyCache, write_error
from engine.store.cache import Cache
from engine.store.space import format_bytes
from tests.fakes import ArrayImageDataset, MeanColourModel

REPO = Path(__file__).resolve().parent.parent
DEMO_BUNDLE = REPO / "bundles" / "demo-shapes.parallax.zip"
NOTICE = "cache is read-only"

# Runs "$@" with the folder "$0" bind-mounted onto itself read-only, in a mount namespace of
# its own (the mount disappears with the process: nothing to undo, even after a crash).
_RO_SH = (
    'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && '
    'if touch "$0/.probe" 2>/dev/null; then exit 97; fi && exec "$@"'
)


def _unshare() -> list[str]:
    user_ns = [] if os.geteuid() == 0 else ["-r"]  # a non-root user maps itself to root
    return ["unshare", *user_ns, "-m", "--propagation", "private", "sh", "-c", _RO_SH]


def read_only(root: Path, *cmd: str) -> list[str]:
    """``cmd`` run with ``root`` read-only for it (and only for it)."""
    return [*_unshare(), str(root), *cmd]


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PARALLAX_CACHE": str(root), "HF_HUB_OFFLINE": "1", **extra}
    for key in ("PARALLAX_SERVER_PATHS", "PARALLAX_BUNDLE", "PARALLAX_VIEW_ONLY"):
        if key not in extra:
            env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(root: Path, *cmd: str, timeout: int = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        read_only(root, *cmd),
        cwd=REPO,
        env=_env(root, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def ro_cache(tmp_path_factory) -> Path:
    """A cache filled writable (the digits demo's vectors and PCA map, demo:sentences' text
    vectors, the demo bundle installed, an embed job left running), to be read read-only."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(8)")
    probe = tmp_path_factory.mktemp("probe")
    out = subprocess.run(read_only(probe, "true"), capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        pytest.skip(f"a read-only bind mount is not permitted here: {out.stderr.strip()[:200]}")

    from engine.params import ProjectionParams
    from engine.workspace import Workspace

    root = tmp_path_factory.mktemp("ro") / "cache"
    saved = os.environ.pop("PARALLAX_SERVER_PATHS", None)
    try:
        ws = Workspace(root)
        digits = ws.open("demo:digits")
        ws.embed(digits, "baseline:pixels")
        vectors = ws.vectors(digits, "baseline:pixels")
        coords = ws.map(vectors, ProjectionParams(method="pca")).coords()
        ws.embed("demo:sentences", "baseline:text")
        if DEMO_BUNDLE.is_file():
            ws.open(f"bundle:{DEMO_BUNDLE}")
    finally:
        if saved is not None:
            os.environ["PARALLAX_SERVER_PATHS"] = saved
    np.save(root.parent / "digits-pca.npy", coords)  # beside the cache, for comparing
    # Use leases have no file yet in a cache copied in read-only (e.g. baked into an image);
    # the writer locks stay, so both ways of holding a lock on a read-only cache are used.
    shutil.rmtree(root / "locks" / "use", ignore_errors=True)
    now = time.time()
    (root / "jobs").mkdir()
    job = {
        "id": "0123456789abcdef",
        "kind": "embed",
        "dataset": "demo:shapes?n=100",
        "model": "baseline:pixels",
        "modality": None,
        "client": "addr:127.0.0.1",
        "status": "running",
        "created": now,
        "updated": now,
        "progress": {"done": 0, "total": None, "rate": 0.0, "eta_s": None},
        "result": None,
        "error": None,
    }
    (root / "jobs" / f"{job['id']}.json").write_text(json.dumps(job))
    return root


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


# -- the engine on a read-only cache --------------------------------------------------------
ENGINE_CHILD = """
import hashlib, json, sys
from pathlib import Path
import numpy as np
from engine.params import ProjectionParams
from engine.store.atomic import ReadOnlyCache
from engine.store.memo import json_entry
from engine.workspace import Workspace

out = {}
ws = Workspace()
out["writable"] = ws.cache.writable
ds = ws.open("demo:digits")
coords = ws.map_coords(ds, "baseline:pixels", ProjectionParams(method="pca"))
out["pca"] = coords.tolist()
out["vectors"] = list(ws.vectors(ds, "baseline:pixels").load().shape)
bundle = Path(sys.argv[1])
if bundle.is_file():
    b = ws.open(f"bundle:{bundle}")
    out["bundle"] = [len(b), sorted(ws.embeddings(b))]
    out["sheet"] = ws.thumbnail_sheet_url(b, 0)[:23]  # built, not stored
memo = json_entry(ws.cache, "identities", "k" * 64, lambda: {"dim": 3})
out["memo"] = [memo.value, memo.cached]
for name, write in (
    ("embed", lambda: ws.embed("demo:shapes?n=100", "baseline:pixels")),
    ("prune", lambda: ws.prune(0)),
):
    try:
        write()
        out[name] = None
    except ReadOnlyCache as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_engine_reads_a_read_only_cache_and_refuses_writes_in_one_line(ro_cache):
    before = _tree(ro_cache)
    out = _run(ro_cache, sys.executable, "-c", ENGINE_CHILD, str(DEMO_BUNDLE))
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["writable"] is False
    np.testing.assert_array_equal(
        np.asarray(got["pca"], np.float32), np.load(ro_cache.parent / "digits-pca.npy")
    )
    assert got["vectors"] == [1797, 768]
    if DEMO_BUNDLE.is_file():
        assert got["bundle"][0] == 2000 and len(got["bundle"][1]) >= 2
        assert got["sheet"] == "data:image/webp;base64,"
    assert got["memo"] == [{"dim": 3}, False]  # computed, returned, not stored
    for name in ("embed", "prune"):
        assert got[name] is not None and "\n" not in got[name], name
    assert "not writable" in got["embed"] and "read-only" in got["prune"]
    assert _tree(ro_cache) == before  # nothing was written, not even a use (mtime)
    assert "Traceback" not in out.stderr


# -- the CLI ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["datasets", "--inspect", "demo:digits"], "1797 items"),
        (["models"], "baseline:pixels"),
        (["cache", "ls"], "vectors"),
    ],
)
def test_cli_read_commands_work_on_a_read_only_cache(ro_cache, args, expect):
    out = _run(ro_cache, sys.executable, "-m", "engine", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout and "Traceback" not in out.stderr


def test_cli_write_on_a_read_only_cache_is_one_json_error(ro_cache):
    out = _run(
        ro_cache,
        sys.executable,
        "-m",
        "engine",
        "--json",
        "embed",
        "--dataset",
        "demo:shapes?n=100",
        "--model",
        "baseline:pixels",
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "read_only_cache" and "not writable" in error["message"]


# -- the dashboard's Home ---------------------------------------------------------------------
HOME_CHILD = """
import json, os, sys
from pathlib import Path
from streamlit.testing.v1 import AppTest
from tests.apptest_maps import scatter_maps
if os.environ.get("NO_DEMO_BUNDLE"):  # the full app's Home without a bundle: the digits demo
    from dashboard import viewonly
    viewonly.DEMO_BUNDLE = Path("/nonexistent/none.parallax.zip")
at = AppTest.from_file(sys.argv[1], default_timeout=180)
at.run()
print(json.dumps({
    "exceptions": [e.value for e in at.exception],
    "errors": [e.value for e in at.error],
    "warnings": [e.value for e in at.warning],
    "infos": [e.value for e in at.info],
    "buttons": [b.label for b in at.button],
    "maps": [[m.get("title"), m.get("n")] for m in scatter_maps(at)],
}))
"""


@pytest.mark.parametrize(
    ("env", "titles"),
    [
        ({"PARALLAX_VIEW_ONLY": "1"}, "bundle"),
        ({"PARALLAX_VIEW_ONLY": "off"}, "bundle"),
        ({"PARALLAX_VIEW_ONLY": "off", "NO_DEMO_BUNDLE": "1"}, ["baseline:pixels · PCA"]),
    ],
    ids=["view-only", "full-app", "full-app-digits"],
)
def test_home_shows_cached_maps_with_one_read_only_line(ro_cache, env, titles):
    if titles == "bundle" and not DEMO_BUNDLE.is_file():
        pytest.skip("bundles/demo-shapes.parallax.zip not built")
    app = str(REPO / "dashboard" / "app.py")
    out = _run(ro_cache, sys.executable, "-c", HOME_CHILD, app, **env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["exceptions"] == [] and got["errors"] == []
    assert [w for w in got["warnings"] if NOTICE in w] == got["warnings"]
    assert len(got["warnings"]) == 1
    if titles == "bundle":
        assert len(got["maps"]) == 2 and all(n == 2000 for _, n in got["maps"])
    else:
        assert got["maps"] == [[titles[0], 1797]]
        # the UMAP map is not cached and could not be saved: no job, no button to start one
        assert not [i for i in got["infos"] if "UMAP" in i]
        assert "Compute the UMAP map" not in got["buttons"]


# -- the HTTP service -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_service_starts_reads_and_refuses_jobs_on_a_read_only_cache(ro_cache):
    httpx = pytest.importorskip("httpx")
    port = _free_port()
    cmd = [sys.executable, "-m", "engine", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        read_only(ro_cache, *cmd),
        cwd=REPO,
        env=_env(ro_cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the service exited: {proc.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, "the service did not start in 120 s"
            try:
                health = httpx.get(f"{base}/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)  # polling a port that is not open yet
        with httpx.Client(base_url=base, timeout=120) as c:
            assert health.status_code == 200 and health.json()["status"] == "ok"
            specs = [m["spec"] for m in c.get("/v1/models").json()["models"]]
            assert "baseline:pixels" in specs
            coords = c.get("/v1/maps/demo%3Adigits/baseline%3Apixels", params={"method": "pca"})
            assert coords.status_code == 200, coords.text
            reference = np.load(ro_cache.parent / "digits-pca.npy")
            assert coords.json()["n"] == 1797
            np.testing.assert_allclose(coords.json()["x"], reference[:, 0], rtol=1e-6)
            hits = c.post(
                "/v1/search",
                json={"dataset": "demo:sentences", "model": "baseline:text", "query": "football"},
            )
            assert hits.status_code == 200, hits.text
            assert hits.json()["results"]
            job = c.post(
                "/v1/jobs/embed", json={"dataset": "demo:shapes?n=100", "model": "baseline:pixels"}
            )
            assert job.status_code == 503
            error = job.json()["error"]
            assert error["code"] == "read_only_cache" and "read-only" in error["message"]
            # the job a writable run left running is shown, not resumed (it could not save)
            left = c.get("/v1/jobs/0123456789abcdef").json()
            assert left["status"] == "failed" and "read-only" in left["error"]
    finally:
        proc.terminate()
        log = proc.communicate(timeout=60)[0]
    assert "Traceback" not in log, log[-3000:]
    assert sum("serving what is cached" in line for line in log.splitlines()) == 1


# -- a failed embed's shards ------------------------------------------------------------------
def _fail_shard_writes(monkeypatch, on_call: int, code: int = errno.ENOSPC) -> list[Path]:
    """The embed's shard writer, failing with ``code`` from its ``on_call``-th shard on."""
    import engine.embed.local as local

    real = local.atomic_save_npy
    written: list[Path] = []

    def writer(path: Path, array: np.ndarray) -> None:
        if len(written) + 1 >= on_call:
            raise OSError(code, os.strerror(code), str(path))
        real(path, array)
        written.append(path)

    monkeypatch.setattr(local, "atomic_save_npy", writer)
    return written


def test_disk_full_on_the_nth_shard_removes_the_jobs_shards(tmp_path, monkeypatch):
    from engine.embed.local import embed_dataset

    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)
    cache = Cache(tmp_path / "cache")
    model = MeanColourModel(dim=16)
    written = _fail_shard_writes(monkeypatch, on_call=3)
    with pytest.raises(CacheError) as failed:
        embed_dataset(ArrayImageDataset(40), model, cache=cache)
    assert len(written) == 2 and not any(p.exists() for p in written)  # written, then removed
    line = str(failed.value)
    assert "\n" not in line and "the disk is full" in line
    assert format_bytes(40 * 16 * 4) in line  # what the job needs for its vectors
    assert "shards" in line and "removed" in line
    assert not list(cache.root.glob("vectors/*.partial")) and cache.entries() == []
    monkeypatch.undo()
    assert not embed_dataset(ArrayImageDataset(40), MeanColourModel(dim=16), cache=cache).cached


def test_any_write_error_while_finishing_removes_the_shards_and_the_half_entry(
    tmp_path, monkeypatch
):
    """The join writes the whole array again (the job's peak), then its manifest: an I/O
    error at the manifest leaves neither the shards nor an array without its manifest."""
    from engine.embed.local import embed_dataset

    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)
    cache = Cache(tmp_path / "cache")
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == "manifest.json":
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CacheError, match="Input/output error") as failed:
        embed_dataset(ArrayImageDataset(24), MeanColourModel(), cache=cache)
    assert "shards" in str(failed.value) and "\n" not in str(failed.value)
    assert not list(cache.root.glob("vectors/*")), list(cache.root.glob("vectors/*"))
    monkeypatch.setattr(os, "replace", real)
    assert embed_dataset(ArrayImageDataset(24), MeanColourModel(), cache=cache).n == 24


def test_a_failure_that_is_not_a_write_keeps_the_shards_to_resume(tmp_path, monkeypatch):
    from engine.embed.local import embed_dataset

    class Stop(Exception):
        pass

    class StopsAfterTwoShards(MeanColourModel):
        def embed_preprocessed(self, batch):
            if sum(self.batches) >= 16:
                raise Stop
            return super().embed_preprocessed(batch)

    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(Stop):
        embed_dataset(ArrayImageDataset(40), StopsAfterTwoShards(), cache=cache, batch_size=8)
    assert len(list(cache.root.glob("vectors/*.partial/shard-*.npy"))) == 2


def test_read_only_errors_are_their_own_class_and_code():
    exc = write_error(Path("/x/y"), OSError(errno.EROFS, "Read-only file system"))
    assert isinstance(exc, ReadOnlyCache) and isinstance(exc, CacheError)
    assert (exc.http_status, exc.code) == (503, "read_only_cache")
    full = write_error(Path("/x/y"), OSError(errno.ENOSPC, "No space left on device"))
    assert type(full) is CacheError and "the disk is full" in str(full)
    assert "\n" not in str(exc)
