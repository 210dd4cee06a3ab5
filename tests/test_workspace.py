"""engine.workspace: the one door every front end goes through."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ParallaxError
from engine.params import PCA
from engine.workspace import NotEmbedded, NotMapped, Workspace


@pytest.fixture()
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "cache")


def test_open_is_held_and_shared_by_visitors(ws: Workspace) -> None:
    ds = ws.open("demo:digits")
    assert ws.open("demo:digits") is ds
    assert ws.visitor("alice").open("demo:digits") is ds  # same holder, checked by the policy
    assert ws.held()["datasets"] > 0


def test_vectors_before_embedding_say_what_to_do(ws: Workspace) -> None:
    ds = ws.open("demo:digits")
    with pytest.raises(NotEmbedded, match="python -m engine embed"):
        ws.vectors(ds, "baseline:pixels")


def test_embed_map_search_through_the_door(ws: Workspace) -> None:
    ds = ws.open("demo:digits")
    result = ws.embed(ds, "baseline:pixels")
    entry = ws.vectors(ds, "baseline:pixels")
    assert entry.key == result.key
    with pytest.raises(NotMapped, match="python -m engine project"):
        ws.map_coords(ds, "baseline:pixels", PCA)
    ws.map(entry, PCA)
    coords = ws.map_coords(ds, "baseline:pixels", PCA)
    assert coords.shape == (len(ds), 2)
    vectors = np.asarray(entry.load())
    found = ws.search(ds, "baseline:pixels", vectors[7], k=3, all_scores=True)
    assert found.hits[0].row == 7
    assert found.hits[0].label == ds.labels[7]
    assert found.scores is not None and found.scores.shape == (len(ds),)
    assert int(np.argmax(found.scores)) == 7


def test_a_visitor_is_refused_server_paths_an_operator_may_open(ws: Workspace, tmp_path) -> None:
    with pytest.raises(ParallaxError, match="refused"):
        ws.visitor("alice").open(f"folder:{tmp_path}")


def test_unknown_backend_is_one_line(ws: Workspace) -> None:
    with pytest.raises(ParallaxError, match="backend is one of local, ray"):
        ws.embed("demo:digits", "baseline:pixels", backend="spark")  # type: ignore[arg-type]


def test_release_drops_what_is_held(ws: Workspace) -> None:
    ws.open("demo:digits")
    ws.release()
    assert ws.held()["datasets"] == 0
