"""Project-wide rules: the engine never imports Streamlit, and the code is ruff clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_engine_sources_never_import_streamlit():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "engine").rglob("*.py")
        if re.search(r"^\s*(import|from)\s+streamlit", p.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_importing_every_engine_module_loads_no_streamlit():
    code = (
        "import importlib, pkgutil, sys, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('streamlit' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed by requirements-dev")
def test_ruff_clean():
    out = subprocess.run(["ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_top_level_layout():
    for name in ["dashboard", "pages", "engine", "cache", "tests", "docs", "benchmarks", ".ci"]:
        assert (REPO / name).is_dir(), name
    for name in ["requirements.txt", "README.md", ".streamlit/config.toml", ".ci/run"]:
        assert (REPO / name).is_file(), name
