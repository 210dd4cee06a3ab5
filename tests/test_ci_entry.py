"""The README's two commands and `.ci/run` agree: CI runs exactly what the README tells a person."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# cuML installs only on Linux boxes with an NVIDIA GPU; its tests skip without one.
GPU_ONLY = {"requirements-gpu.txt"}


def _two_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def _includes(path: Path) -> set[str]:
    return {
        ln.split(None, 1)[1].strip() for ln in path.read_text().splitlines() if ln.startswith("-r ")
    }


def test_readme_has_two_commands_whose_files_exist() -> None:
    run_app, run_tests = _two_commands()
    assert run_app == "pip install -r requirements.txt && streamlit run dashboard/app.py"
    assert (REPO / "requirements.txt").is_file() and (REPO / "dashboard" / "app.py").is_file()
    assert run_tests == "pip install -r requirements-dev.txt && python -m pytest"
    assert (REPO / "requirements-dev.txt").is_file()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = REPO / ".ci" / "run"
    assert ci.stat().st_mode & stat.S_IXUSR
    _, run_tests = _two_commands()
    lines = [ln.strip() for ln in ci.read_text().splitlines()]
    assert sum(ln.startswith(run_tests) for ln in lines) == 1, "the test command, once"


def test_dev_requirements_install_every_optional_feature_the_tests_use() -> None:
    optional = {p.name for p in REPO.glob("requirements-*.txt")} - {"requirements-dev.txt"}
    included = _includes(REPO / "requirements-dev.txt")
    assert "requirements.txt" in included
    assert optional - GPU_ONLY <= included, sorted(optional - GPU_ONLY - included)
    for name in included:
        assert (REPO / name).is_file(), name


def test_ci_fails_when_pytest_collects_nothing(tmp_path: Path) -> None:
    """pytest exits 5 when it collects no tests; CI must turn that into a failure, not a pass."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, code in (("pip", 0), ("python", 5), ("chromium", 0)):
        stub = bin_dir / tool
        stub.write_text(f"#!/bin/sh\nexit {code}\n")
        stub.chmod(0o755)
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    (repo / ".ci" / "run").write_text((REPO / ".ci" / "run").read_text())
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(
        ["bash", str(repo / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "collected no tests" in out.stderr
