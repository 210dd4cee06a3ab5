"""The CLI end to end: the issue's own commands, JSON on stdout, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def engine(*args: str, cache: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "engine", *args, "--cache-dir", str(cache)]
    env = {"PARALLAX_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **env}
    )


def test_minilm_embed_reports_dim_384_then_cached(tmp_path):
    first = engine(
        "embed",
        "--dataset",
        "demo:sentences",
        "--model",
        "st:all-MiniLM-L6-v2",
        "--json",
        cache=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["dim"] == 384 and out["n"] >= 300 and out["cached"] is False
    for key in ("dataset", "model", "n", "dim", "skipped", "cached", "seconds", "path"):
        assert key in out
    vectors = np.load(out["path"])
    assert vectors.shape == (out["n"], 384)
    second = engine(
        "embed",
        "--dataset",
        "demo:sentences",
        "--model",
        "st:all-MiniLM-L6-v2",
        "--json",
        cache=tmp_path,
    )
    assert json.loads(second.stdout)["cached"] is True


def test_folder_embed_and_umap_project(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("red", "blue"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(12):
            arr = np.zeros((40, 40, 3), np.uint8)
            arr[..., 0 if label == "red" else 2] = 150 + rng.integers(0, 100)
            Image.fromarray(arr).save(tmp_path / "imgs" / label / f"{i}.jpg")
    (tmp_path / "imgs" / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    spec = f"folder:{tmp_path / 'imgs'}"
    emb = engine(
        "embed", "--dataset", spec, "--model", "baseline:pixels", "--json", cache=tmp_path / "c"
    )
    assert emb.returncode == 0, emb.stderr
    e = json.loads(emb.stdout)
    assert (e["n"], e["skipped"], e["modality"]) == (24, 1, "image")
    proj = engine(
        "project",
        "--dataset",
        spec,
        "--model",
        "baseline:pixels",
        "--method",
        "umap",
        "--json",
        cache=tmp_path / "c",
    )
    assert proj.returncode == 0, proj.stderr
    p = json.loads(proj.stdout)
    assert p["n"] == 24 and p["method"] == "umap" and p["cached"] is False
    coords = np.load(p["path"])
    assert coords.shape == (24, 2) and np.isfinite(coords).all()


def test_list_commands_print_json(tmp_path):
    datasets = json.loads(engine("datasets", "--json", cache=tmp_path).stdout)
    assert {d["spec"] for d in datasets["demos"]} >= {
        "demo:digits",
        "demo:shapes",
        "demo:sentences",
    }
    models = json.loads(engine("models", "--json", cache=tmp_path).stdout)
    offline = {m["spec"] for m in models["models"] if m["available_offline"]}
    assert {"baseline:pixels", "baseline:text", "st:all-MiniLM-L6-v2"} <= offline
    inspect = json.loads(
        engine("datasets", "--inspect", "demo:digits", "--json", cache=tmp_path).stdout
    )
    assert inspect["n"] == 1797 and len(inspect["labels"]) == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (("embed", "--dataset", "demo:nope", "--model", "baseline:pixels"), "unknown demo"),
        (
            ("embed", "--dataset", "demo:digits", "--model", "hf:openai/clip-vit-base-patch32"),
            "openai/clip-vit-base-patch32",
        ),
        (("embed", "--dataset", "demo:sentences", "--model", "baseline:pixels"), "texts"),
        (
            ("embed", "--dataset", "folder:/definitely/not/here", "--model", "baseline:pixels"),
            "/definitely/not/here",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    out = engine(*args, cache=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in out.stderr


def test_common_options_work_before_and_after_the_command(tmp_path, capsys):
    """``--cache-dir`` / ``--json`` before the command are not reset by the command's own copy."""
    from engine.cli import main

    before, after = tmp_path / "before", tmp_path / "after"
    assert (
        main(
            [
                "--cache-dir",
                str(before),
                "--json",
                "embed",
                "--dataset",
                "demo:digits",
                "--model",
                "baseline:pixels",
            ]
        )
        == 0
    )
    first = json.loads(capsys.readouterr().out)
    assert str(before) in first["results"][0]["path"] if "results" in first else first["path"]
    assert (
        main(
            [
                "embed",
                "--dataset",
                "demo:digits",
                "--model",
                "baseline:pixels",
                "--cache-dir",
                str(after),
                "--json",
            ]
        )
        == 0
    )
    second = json.loads(capsys.readouterr().out)
    path = second["results"][0]["path"] if "results" in second else second["path"]
    assert str(after) in path and not (tmp_path / "cache").exists()
