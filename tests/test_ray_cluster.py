"""The Ray backend on a cluster of three nodes (a head and two workers, on this machine) that
loses a worker node mid-job: the job still finishes, with the local backend's vectors and key.

``ray.cluster_utils.Cluster`` starts each node as its own raylet and object store, as
``ray start`` does on separate machines; the model actors need a custom resource that only the
workers advertise, so they run there, and removing a node kills its raylet, its object store
and every process on it."""

from __future__ import annotations

import numpy as np
import pytest

from engine.embed.local import embed_dataset
from engine.store.cache import Cache

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from engine.embed.ray_backend import RayOptions, embed_dataset_ray  # noqa: E402

pytestmark = pytest.mark.slow

WORKER = "parallax_worker"  # the custom resource that pins model actors to the worker nodes
SPEC = "demo:shapes?n=2000&seed=3"
MODEL = "baseline:pixels"


@pytest.fixture
def cluster():
    # Node loss is noticed by the GCS's health checks: checked every second, so the test waits
    # a few seconds, not the default ~15 s, before Ray reschedules the lost actor (and not so
    # often that a busy machine's slow answer looks like a dead node).
    system = {"health_check_period_ms": 1000, "health_check_failure_threshold": 4}
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "object_store_memory": 80 * 1024**2,
            "_system_config": system,
        },
    )
    # Room for both actors on either worker: whichever node is lost, the other takes its actor.
    workers = [
        c.add_node(num_cpus=2, resources={WORKER: 2}, object_store_memory=80 * 1024**2)
        for _ in range(2)
    ]
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _actor_nodes() -> list[str]:
    """Node ids of the live model actors, from the GCS actor table (no dashboard needed)."""
    from ray._private import state

    return [
        str(info["Address"]["NodeID"])
        for info in state.actors().values()
        if "EmbedActor" in str(info.get("ActorClassName"))
        and info.get("State") == "ALIVE"
        and info.get("Address", {}).get("NodeID")
    ]


def test_a_lost_worker_node_costs_time_not_vectors(cluster, tmp_path):
    c, workers = cluster
    lost: list[str] = []
    done_at_loss: list[int] = []

    def progress(p) -> None:
        # The first finished batches are back, so the actors are alive and working: remove a
        # worker node that runs one of them (its raylet, object store and workers all die).
        if lost or p.done == 0 or p.done >= p.total:
            return
        hosting = set(_actor_nodes())
        victim = next((w for w in workers if w.node_id in hosting), None)
        if victim is None:
            return
        c.remove_node(victim, allow_graceful=False)
        lost.append(victim.node_id)
        done_at_loss.append(p.done)

    via_ray = embed_dataset_ray(
        SPEC,
        MODEL,
        cache=Cache(tmp_path / "ray"),
        batch_size=50,
        options=RayOptions(actors=2, cpus_per_actor=0.5, actor_resources={WORKER: 1}),
        progress=progress,
    )
    assert lost, "no worker node was seen running a model actor mid-job"
    assert 0 < done_at_loss[0] < via_ray.n
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert lost[0] not in {n["NodeID"] for n in alive} and len(alive) == 2

    local = embed_dataset(SPEC, MODEL, cache=Cache(tmp_path / "local"), batch_size=50)
    assert via_ray.key == local.key
    assert via_ray.n == local.n == 2000 and via_ray.failed == []
    np.testing.assert_array_equal(via_ray.vectors(), local.vectors())
