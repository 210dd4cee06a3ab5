"""Embedding runner + cache: hits, keys, failures, resume after a crash, concurrent writers."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from engine.embed.local import embed_dataset
from engine.errors import CacheError, ParallaxError
from engine.store.cache import Cache
from engine.store.catalog import embeddings_by
from tests.fakes import ArrayImageDataset, MeanColourModel

REPO = Path(__file__).resolve().parent.parent


def test_embed_writes_normalised_vectors_and_manifest(tmp_path):
    cache = Cache(tmp_path)
    ds, model = ArrayImageDataset(10), MeanColourModel()
    res = embed_dataset(ds, model, cache=cache)
    v = np.load(res.path)
    assert v.shape == (10, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert (res.n, res.dim, res.modality, res.cached) == (10, 16, "image", False)
    manifest = json.loads((res.path.parent / "manifest.json").read_text())
    assert manifest["model"] == model.spec and manifest["dataset_fingerprint"] == ds.fingerprint()
    # rows are in dataset order: row 3 is item 3's vector
    np.testing.assert_allclose(v[3], model.embed_images([ds.load_image(3)])[0], atol=1e-5)


def test_second_run_is_a_cache_hit_and_computes_nothing(tmp_path):
    cache = Cache(tmp_path)
    first = embed_dataset(ArrayImageDataset(9), MeanColourModel(), cache=cache)
    model = MeanColourModel()
    second = embed_dataset(ArrayImageDataset(9), model, cache=cache)
    assert second.cached and not first.cached
    assert model.batches == []  # no forward pass at all
    assert second.path == first.path
    assert [e.key for e in embeddings_by(ArrayImageDataset(9), model.spec, cache)] == [first.key]


def test_key_changes_with_data_model_and_modality(tmp_path):
    cache = Cache(tmp_path)
    base = embed_dataset(ArrayImageDataset(8), MeanColourModel(), cache=cache)
    other_data = embed_dataset(ArrayImageDataset(8, seed=1), MeanColourModel(), cache=cache)
    other_model = embed_dataset(ArrayImageDataset(8), MeanColourModel(version="2"), cache=cache)
    text = embed_dataset(ArrayImageDataset(8), MeanColourModel(), modality="text", cache=cache)
    keys = {base.key, other_data.key, other_model.key, text.key}
    assert len(keys) == 4
    assert not any(r.cached for r in (other_data, other_model, text))


def test_bad_item_becomes_zero_row_with_reason(tmp_path):
    res = embed_dataset(ArrayImageDataset(6, bad=(2,)), MeanColourModel(), cache=Cache(tmp_path))
    v = np.load(res.path)
    assert np.all(v[2] == 0) and np.all(np.linalg.norm(v[[0, 1, 3, 4, 5]], axis=1) > 0.99)
    assert res.failed == [{"id": "img-00002", "reason": "truncated or corrupt image"}]
    assert res.skipped == 2  # one skipped by the dataset, one failed while embedding


def test_modality_errors_are_user_errors(tmp_path):
    with pytest.raises(ParallaxError, match="has no texts"):
        embed_dataset(
            ArrayImageDataset(4, texts=False),
            MeanColourModel(),
            modality="text",
            cache=Cache(tmp_path),
        )


class _Crash(Exception):
    pass


class _CrashingModel(MeanColourModel):
    """Raises after ``after`` batches, as a process killed mid-job would stop."""

    def __init__(self, after: int):
        super().__init__()
        self.after = after

    def embed_preprocessed(self, batch):
        if len(self.batches) >= self.after:
            raise _Crash
        return super().embed_preprocessed(batch)


def test_resume_after_interruption_gives_identical_vectors(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.embed.local.SHARD_TARGET_ITEMS", 8)  # 2 batches of 4 per shard
    ds = ArrayImageDataset(30)
    reference = np.load(embed_dataset(ds, MeanColourModel(), cache=Cache(tmp_path / "a")).path)

    cache = Cache(tmp_path / "b")
    with pytest.raises(_Crash):
        embed_dataset(ds, _CrashingModel(after=5), cache=cache)
    partial = list((cache.root / "vectors").glob("*.partial/shard-*.npy"))
    assert len(partial) == 2  # shards 0 and 1 were finished before the crash

    resumed_model = MeanColourModel()
    res = embed_dataset(ds, resumed_model, cache=cache)
    assert sum(resumed_model.batches) == 30 - 16  # only the unfinished rows were computed
    np.testing.assert_array_equal(np.load(res.path), reference)
    assert not list((cache.root / "vectors").glob("*.partial"))


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import engine.embed.local
    engine.embed.local.SHARD_TARGET_ITEMS = 8
    from engine.store.cache import Cache
    from engine.embed.local import embed_dataset
    from tests.fakes import ArrayImageDataset, MeanColourModel
    res = embed_dataset(ArrayImageDataset(40), MeanColourModel(delay_s={delay}),
                        cache=Cache({cache!r}))
    print(res.cached, res.path)
    """
)


def _child(cache: Path, delay: float) -> subprocess.Popen:
    code = CHILD.format(repo=str(REPO), cache=str(cache), delay=delay)
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_kill_9_mid_job_then_rerun_resumes_to_identical_vectors(tmp_path):
    reference_cache = tmp_path / "ref"
    ref = _child(reference_cache, 0.0)
    out, err = ref.communicate(timeout=120)
    assert ref.returncode == 0, err
    reference = np.load(out.split()[1])

    cache = tmp_path / "killed"
    proc = _child(cache, 0.15)
    deadline = time.monotonic() + 120
    while not list(cache.glob("vectors/*.partial/shard-000001.npy")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not list(cache.glob("vectors/*/manifest.json"))  # nothing finished, nothing torn

    rerun = _child(cache, 0.0)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    np.testing.assert_array_equal(np.load(out.split()[1]), reference)


def test_two_concurrent_processes_leave_one_valid_entry(tmp_path):
    procs = [_child(tmp_path, 0.02), _child(tmp_path, 0.02)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    flags = sorted(o[0].split()[0] for o in outs)
    paths = {o[0].split()[1] for o in outs}
    assert flags == ["False", "True"]  # one computed, the other waited and found it cached
    assert len(paths) == 1
    entries = Cache(tmp_path).entries("vectors")
    assert len(entries) == 1 and entries[0].load().shape == (40, 16)
    assert not list(tmp_path.glob("vectors/*.partial"))


def test_unwritable_cache_gives_clear_error_and_no_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def refuse(*_args, **_kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(CacheError, match="not writable"):
        embed_dataset(ArrayImageDataset(4), MeanColourModel(), cache=cache)
    monkeypatch.undo()
    assert cache.entries() == []
    assert not [p for p in tmp_path.rglob("*.tmp")]  # temp files cleaned up


class _OomOnBigBatches(MeanColourModel):
    """Pretends to be on a GPU whose memory fits at most 3 images per batch."""

    def __init__(self):
        super().__init__()
        self.device = "cuda"

    def embed_preprocessed(self, batch):
        import torch

        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().embed_preprocessed(batch)


def test_gpu_oom_batch_is_retried_at_half_size(tmp_path):
    ds = ArrayImageDataset(10)
    model = _OomOnBigBatches()
    res = embed_dataset(ds, model, cache=Cache(tmp_path), batch_size=8)
    assert max(model.batches) <= 3 and sum(model.batches) == 10
    reference = MeanColourModel().embed_images([ds.load_image(i) for i in range(10)])
    np.testing.assert_allclose(np.load(res.path), reference, atol=1e-5)


def test_text_rows_stay_in_dataset_order_when_batched_by_length(tmp_path):
    ds = ArrayImageDataset(9)
    ds.texts = ["x" * (10 - i) for i in range(8)] + [""]  # lengths descend; last has no text
    model = MeanColourModel()
    res = embed_dataset(ds, model, modality="text", cache=Cache(tmp_path), batch_size=4)
    v = np.load(res.path)
    np.testing.assert_allclose(v[:8], model.embed_texts(ds.texts[:8]), atol=1e-6)
    assert np.all(v[8] == 0) and res.failed == [{"id": "img-00008", "reason": "no text"}]
