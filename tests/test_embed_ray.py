"""The Ray Data backend writes the same cache entry as the local one, survives a killed actor,
and resumes what either backend left. A local Ray cluster is started by the tests (2 CPUs)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from engine.embed.local import embed_dataset
from engine.errors import ParallaxError
from engine.store.cache import Cache

ray = pytest.importorskip("ray")
from engine.embed.ray_backend import RayOptions, embed_dataset_ray  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(30):
            arr = (rng.random((16 + i % 5, 20, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"not a png")
    return tmp_path / "imgs"


def test_image_folder_pixels_same_entry_as_local(ray_cluster, image_folder, tmp_path):
    spec = f"folder:{image_folder}"
    via_ray = embed_dataset_ray(spec, "baseline:pixels", cache=Cache(tmp_path / "r"))
    local = embed_dataset(spec, "baseline:pixels", cache=Cache(tmp_path / "l"))
    assert via_ray.key == local.key and via_ray.n == local.n == 90
    assert np.abs(via_ray.vectors() - local.vectors()).max() <= 1e-5
    # The local backend sees the Ray job's entry as its own.
    again = embed_dataset(spec, "baseline:pixels", cache=Cache(tmp_path / "r"))
    assert again.cached and again.key == via_ray.key


def test_texts_with_minilm_same_as_local(ray_cluster, tmp_path):
    via_ray = embed_dataset_ray(
        "demo:sentences", "st:all-MiniLM-L6-v2", cache=Cache(tmp_path / "r")
    )
    local = embed_dataset("demo:sentences", "st:all-MiniLM-L6-v2", cache=Cache(tmp_path / "l"))
    assert via_ray.key == local.key and via_ray.dim == 384
    assert np.abs(via_ray.vectors() - local.vectors()).max() <= 1e-5


def _embed_actor_pids() -> list[int]:
    """PIDs of the live model actors, from the GCS actor table (no dashboard needed)."""
    from ray._private import state

    return [
        int(info["Pid"])
        for info in state.actors().values()
        if "EmbedActor" in str(info.get("ActorClassName"))
        and info.get("State") == "ALIVE"
        and info.get("Pid")
    ]


def test_a_killed_actor_is_restarted_and_the_vectors_are_the_same(ray_cluster, tmp_path):
    spec = "demo:shapes?n=3000&seed=1"
    killed: list[int] = []
    seen: list[int] = []

    def progress(p) -> None:
        seen.append(p.done)

    def killer() -> None:  # SIGKILL the model actor once it has started embedding
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            pids = _embed_actor_pids()
            if pids and seen and seen[-1] > 0:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    via_ray = embed_dataset_ray(
        spec,
        "st:all-MiniLM-L6-v2",
        modality="text",
        cache=Cache(tmp_path / "r"),
        batch_size=64,
        options=RayOptions(max_restarts=3),
        progress=progress,
    )
    thread.join(timeout=5)
    assert killed, "the actor was never seen alive mid-job"
    local = embed_dataset(
        spec, "st:all-MiniLM-L6-v2", modality="text", cache=Cache(tmp_path / "l"), batch_size=64
    )
    assert via_ray.key == local.key and via_ray.failed == []
    assert np.abs(via_ray.vectors() - local.vectors()).max() <= 1e-5


class _Stop(Exception):
    pass


def test_either_backend_resumes_the_other(ray_cluster, tmp_path):
    spec = "demo:shapes?n=5000&seed=2"  # 3 shards of 2,048 rows
    cache = Cache(tmp_path / "c")

    def stop_after_first_shard(p) -> None:
        if p.done > 2048:  # shard 0 is written before shard 1's first batch reports
            raise _Stop

    with pytest.raises(_Stop):
        embed_dataset(spec, "baseline:pixels", cache=cache, progress=stop_after_first_shard)
    partial = cache.partial_dir(
        "vectors", embed_dataset(spec, "baseline:pixels", cache=Cache(tmp_path / "ref")).key
    )
    assert sorted(p.name for p in partial.glob("shard-*.npy")) == ["shard-000000.npy"]
    started: list[int] = []
    via_ray = embed_dataset_ray(
        spec, "baseline:pixels", cache=cache, progress=lambda p: started.append(p.done)
    )
    assert started[0] == 2048  # the finished shard was not recomputed
    reference = embed_dataset(spec, "baseline:pixels", cache=Cache(tmp_path / "ref"))
    assert via_ray.key == reference.key
    np.testing.assert_array_equal(via_ray.vectors(), reference.vectors())


def test_missing_ray_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ParallaxError, match=r"requirements-ray\.txt") as info:
        embed_dataset_ray("demo:digits", "baseline:pixels", cache=Cache(tmp_path))
    assert "\n" not in str(info.value)
