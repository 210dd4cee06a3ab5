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


# -- one door: the CLI reaches the engine through the workspace and three small modules -------
CORE = {"engine.workspace", "engine.params", "engine.errors", "engine.settings"}
MAX_ENGINE_MODULES = 6  # the four above and at most two more (issue 26)


def cli_engine_imports() -> dict[str, set[str]]:
    """Every engine module (outside engine.cli) that a file of engine/cli imports, anywhere in
    it (module level, in functions, under TYPE_CHECKING, or by name to import_module), with the
    files that import it."""
    import ast

    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "engine" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from engine import settings`` imports the module engine.settings
                bare = node.module == "engine"
                names = [f"engine.{a.name}" for a in node.names] if bare else [node.module]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            for name in names:
                if name.startswith("engine.") and not name.startswith("engine.cli"):
                    found.setdefault(name, set()).add(path.name)
    return found


def test_the_cli_reaches_the_engine_through_at_most_six_modules():
    found = cli_engine_imports()
    where = {k: sorted(v) for k, v in sorted(found.items())}
    assert "engine.workspace" in found, where  # the door itself
    assert len(set(found) - CORE) <= MAX_ENGINE_MODULES - len(CORE), where
    assert len(found) <= MAX_ENGINE_MODULES, where


# -- errors: one line on stderr, or one JSON object on stdout with --json ---------------------
@pytest.mark.parametrize(
    "argv, code, words",
    [
        (
            ["embed", "--dataset", "demo:nope", "--model", "baseline:pixels"],
            "dataset_unavailable",
            "unknown demo",
        ),
        (["embed", "--dataset", "demo:digits", "--model", "nope:x"], "model_unavailable", "nope"),
        (["embed", "--dataset", "demo:digits"], "bad_request", "--model"),  # argparse's own
        (["cache", "prune", "--max-bytes", "lots"], "bad_request", "lots"),
        (
            ["datasets", "--inspect", "folder:/definitely/not/here"],
            "dataset_unavailable",
            "/definitely/not/here",
        ),
    ],
)
def test_json_errors_are_one_object_on_stdout_with_the_same_exit_status(
    tmp_path, capsys, argv, code, words
):
    from engine.cli import main

    argv = [*argv, "--cache-dir", str(tmp_path)]
    assert main(argv) == 2
    plain = capsys.readouterr()
    assert plain.out == "" and words in plain.err
    assert main([*argv, "--json"]) == 2
    out = capsys.readouterr()
    assert out.err == ""
    (line,) = out.out.strip().splitlines()  # one object, one line
    body = json.loads(line)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and words in body["error"]["message"]


def test_error_codes_are_the_http_services():
    """One mapping (engine.errors.error_code) for every door: a policy refusal is forbidden even
    when it is also a dataset or model error."""
    from engine.errors import (
        DatasetError,
        ItemError,
        ModelUnavailable,
        ParallaxError,
        error_code,
    )
    from engine.policy import DatasetRefused, ModelRefused

    assert error_code(ParallaxError("x")) == (400, "bad_request")
    assert error_code(ItemError("x")) == (400, "bad_input")
    assert error_code(DatasetError("x")) == (422, "dataset_unavailable")
    assert error_code(ModelUnavailable("x")) == (422, "model_unavailable")
    assert error_code(DatasetRefused("x")) == (403, "forbidden")
    assert error_code(ModelRefused("x")) == (403, "forbidden")
    assert error_code(KeyError("x")) == (500, "internal_error")


def test_a_bug_under_json_still_prints_json_and_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    import engine.cli.listing as listing
    from engine.cli import main

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(listing, "cmd_models", broken)
    with pytest.raises(KeyError):
        main(["models", "--json", "--cache-dir", str(tmp_path)])
    body = json.loads(capsys.readouterr().out)
    assert body["error"]["code"] == "internal_error" and "boom" in body["error"]["message"]


def test_help_names_the_real_cache_default():
    from engine import settings
    from engine.cli import build_parser

    text = "".join(build_parser().format_help().split())  # argparse wraps at hyphens too
    assert str(settings.DEFAULT_CACHE_DIR).replace(" ", "") in text and "./cache" not in text


def test_serve_without_its_packages_names_the_pip_extra(tmp_path, capsys, monkeypatch):
    from engine.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # ``import fastapi`` now fails
    assert main(["serve", "--cache-dir", str(tmp_path), "--json"]) == 2
    message = json.loads(capsys.readouterr().out)["error"]["message"]
    assert 'pip install "parallax-engine[serve]"' in message
    setup = (REPO / "setup.py").read_text()
    assert '"serve": requirements("requirements-serve.txt")' in setup


def test_a_bad_limit_in_the_environment_is_one_error_not_a_traceback(tmp_path):
    env = {**os.environ, "PARALLAX_MAX_ITEMS": "lots"}
    for extra, stream in (([], "stderr"), (["--json"], "stdout")):
        out = subprocess.run(
            [sys.executable, "-m", "engine", "datasets", "--cache-dir", str(tmp_path), *extra],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr
        text = getattr(out, stream).strip()
        if extra:
            assert json.loads(text)["error"]["message"].startswith("PARALLAX_MAX_ITEMS='lots'")
        else:
            assert text.startswith("error: PARALLAX_MAX_ITEMS='lots'")
