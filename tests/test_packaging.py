"""``pip install .`` gives the engine and a ``parallax`` command equal to ``python -m engine``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = [
    "engine",
    "models",
    "setup.py",
    "README.md",
    "requirements.txt",
    "requirements-hf.txt",
    "requirements-serve.txt",
]


@pytest.mark.slow
def test_pip_install_gives_the_parallax_command(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:  # a copy, so the build leaves nothing in the checkout
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    env_dir = tmp_path / "venv"
    # System site-packages carry the heavy dependencies already installed; --no-deps keeps the
    # test to what this package itself installs.
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    out = subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr

    work = tmp_path / "elsewhere"  # not the checkout: the installed copy must be what runs
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PARALLAX_CACHE": str(tmp_path / "c")}
    cmd = [str(env_dir / "bin" / "parallax"), "models", "--json"]
    via_command = subprocess.run(
        cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert via_command.returncode == 0, via_command.stderr
    # --help names the cache the installed command really uses (not a checkout's ./cache)
    shown = subprocess.run(
        [str(env_dir / "bin" / "parallax"), "--help"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.stdout.startswith("usage: parallax ")
    # argparse wraps long words at hyphens: compare with the whitespace taken out
    assert str(tmp_path / ".cache" / "parallax") in "".join(shown.stdout.split())
    via_module = subprocess.run(
        [sys.executable, "-m", "engine", "models", "--json"],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert via_module.returncode == 0, via_module.stderr
    installed = json.loads(via_command.stdout)["models"]
    checkout = json.loads(via_module.stdout)["models"]
    # The same catalogue, shipped CLIPs included (installed under <prefix>/share/parallax/models).
    assert [m["spec"] for m in installed] == [m["spec"] for m in checkout]
    shipped = {m["spec"]: m for m in installed if m["spec"].startswith("demo:")}
    assert shipped and all(m["available_offline"] for m in shipped.values())
    # A bad limit in the environment is one line and exit 2, as with ``python -m engine``.
    bad = subprocess.run(
        [str(env_dir / "bin" / "parallax"), "datasets"],
        cwd=work,
        env={**env, "PARALLAX_MAX_ITEMS": "lots"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().startswith("error:") and "PARALLAX_MAX_ITEMS" in bad.stderr
    where = subprocess.run(
        [py, "-c", "import engine; print(engine.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert str(env_dir) in where.stdout
