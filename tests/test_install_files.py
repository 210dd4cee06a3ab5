"""The requirement files: PyPI alone for the README's command, CPU torch for Community Cloud."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path) -> list[str]:
    return [
        ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for ln in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", ln)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_root_requirements_name_no_other_index() -> None:
    # An index a machine cannot reach costs five retries per package; a CPU index beside PyPI
    # can hand a GPU box the +cpu torch (PEP 440 sorts it above the plain version).
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-gpu.txt"):
        for ln in _lines(ROOT / name):
            assert not ln.startswith(("--index-url", "--extra-index-url", "-i ", "--find-links")), (
                name,
                ln,
            )
    pins = _pins(_lines(ROOT / "requirements.txt"))
    assert "+" not in pins["torch"] and "+" not in pins["torchvision"]


def test_cloud_requirements_are_the_root_pins_with_cpu_torch() -> None:
    cloud = _lines(ROOT / "dashboard" / "requirements.txt")
    root_pins = _pins(_lines(ROOT / "requirements.txt"))
    assert "-r ../requirements.txt" in cloud  # pip resolves it relative to dashboard/
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in cloud
    cloud_pins = _pins(cloud)
    for pkg in ("torch", "torchvision"):
        # The same release as the root pin, narrowed to its +cpu local build.
        assert cloud_pins[pkg] == root_pins[pkg] + "+cpu"
    assert set(cloud_pins) == {"torch", "torchvision"}  # everything else comes from the root file
