"""Questions answered from the cache alone: a model's identity, the embeddings of a dataset,
cached maps and comparisons, and a fully cached CLI run that never imports torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.analysis.compare import compare_models
from engine.embed.local import embed_dataset
from engine.maps.project import project
from engine.models import clear_cache, load_model
from engine.models.identity import recall, remember
from engine.params import ProjectionParams
from engine.store import catalog
from engine.store.cache import Cache
from tests.fakes import ArrayImageDataset, MeanColourModel
from tests.model_fixtures import tiny_open_clip_dir  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent
SHAPES_CLIP = REPO / "models" / "shapes-clip"


# -- identity without the model ---------------------------------------------------------------
@pytest.mark.parametrize("spec", ["baseline:pixels", "baseline:text"])
def test_baseline_identity_comes_from_parameters(spec: str, tmp_path: Path) -> None:
    known = recall(spec, Cache(tmp_path))
    model = load_model(spec)
    assert known is not None
    assert (known.identity, known.spec, known.modalities) == (
        model.identity,
        model.spec,
        model.modalities,
    )


def test_a_built_model_identity_is_recalled_and_any_file_change_forgets_it(
    tiny_open_clip_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_open_clip_dir, folder)
    spec = f"open_clip:local-dir:{folder}"
    cache = Cache(tmp_path / "cache")
    assert recall(spec, cache) is None  # never built: unknown
    clear_cache()
    model = load_model(spec)
    remember(spec, model, cache)
    known = recall(spec, cache)
    assert known is not None
    assert (known.identity, known.spec, known.modalities, known.dim) == (
        model.identity,
        model.spec,
        model.modalities,
        model.dim,
    )
    config = folder / "open_clip_config.json"
    config.write_text(config.read_text() + "\n")  # same model, but not the same files
    assert recall(spec, cache) is None
    clear_cache()


def test_unknown_and_malformed_specs_are_not_known(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    assert recall("fake:meancolour/1", cache) is None
    tag = "open_clip:ViT-B-32/laion2b_s34b_b79k"
    assert recall(tag, cache) is None  # a pretrained tag is resolved by open_clip itself
    assert recall(f"open_clip:local-dir:{tmp_path / 'missing'}", cache) is None


# -- what the cache holds -----------------------------------------------------------------------
def test_embeddings_of_a_dataset_check_the_fingerprint_and_the_row_count(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    ds = ArrayImageDataset(12)
    model = MeanColourModel()
    result = embed_dataset(ds, model, cache=cache)
    found = catalog.embeddings(ds, cache)
    assert {m: {k: e.key for k, e in v.items()} for m, v in found.items()} == {
        model.spec: {"image": result.key}
    }
    assert [e.key for e in catalog.embeddings_by(ds, model.spec, cache)] == [result.key]
    assert catalog.embeddings(ArrayImageDataset(12, seed=1), cache) == {}  # another dataset
    manifest = result.path.parent / "manifest.json"
    stale = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**stale, "n": 11}))  # same fingerprint, another size
    assert catalog.embeddings(ds, cache) == {}
    assert catalog.embeddings_by(ds, model.spec, cache) == []


def test_cached_vectors_maps_and_comparisons(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    ds = ArrayImageDataset(30)
    assert catalog.cached_vectors(ds, "baseline:pixels", cache=cache) is None
    result = embed_dataset(ds, "baseline:pixels", cache=cache)
    entry = catalog.cached_vectors(ds, "baseline:pixels", cache=cache)
    assert entry is not None and entry.key == result.key

    pca = ProjectionParams(method="pca")
    assert catalog.cached_map(entry, pca, cache) is None
    made = project(entry, "pca", cache=cache)
    hit = catalog.cached_map(entry, pca, cache)
    assert hit is not None and hit.key == made.key
    assert catalog.cached_map(entry.key, ProjectionParams(method="umap"), cache) is None

    report = compare_models(ds, ["baseline:pixels", MeanColourModel()], cache=cache)
    keys = [m["vectors_key"] for m in report.models]
    stored = catalog.cached_comparison(ds, keys, report.params, cache)
    assert stored is not None and stored["key"] == report.key
    assert catalog.cached_comparison(ds, keys, {**report.params, "k": 3}, cache) is None


# -- a fully cached CLI run imports no torch -----------------------------------------------------
def _cli(args: list[str], cache: Path) -> tuple[dict, list[str]]:
    code = (
        "import json, sys\n"
        "from engine.cli import main\n"
        f"rc = main({[*args, '--json', '--quiet', '--cache-dir', str(cache)]!r})\n"
        "heavy = ('torch', 'open_clip', 'transformers', 'sentence_transformers')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    payload, heavy = done.stdout.strip().splitlines()[-2:]
    return json.loads(payload), json.loads(heavy)


@pytest.mark.slow
@pytest.mark.skipif(not SHAPES_CLIP.is_dir(), reason="models/shapes-clip not in this checkout")
def test_cached_embed_project_and_compare_never_import_torch(tmp_path: Path) -> None:
    data = "demo:shapes?n=100&seed=3"
    model = "demo:shapes-clip"
    first, heavy = _cli(["embed", "--dataset", data, "--model", model], tmp_path)
    assert not first["cached"] and "torch" in heavy  # the first run builds the model
    compare = ["compare", "--dataset", data, "--model", model, "--model", "baseline:pixels"]
    computed, _ = _cli(compare, tmp_path)

    again, heavy = _cli(["embed", "--dataset", data, "--model", model], tmp_path)
    assert again["cached"] and again["key"] == first["key"]
    assert heavy == []
    proj = ["project", "--dataset", data, "--model", model, "--method", "pca"]
    mapped, heavy = _cli(proj, tmp_path)
    assert mapped["vectors"] == first["path"] and heavy == []
    cached, heavy = _cli(compare, tmp_path)
    assert cached["cached"] and cached["key"] == computed["key"] and heavy == []
