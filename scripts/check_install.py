"""Which torch build does ``pip install -r requirements.txt`` give on a Linux x86-64 GPU box?

Resolves the requirements for a Linux x86-64 target with pip's ``--dry-run --report`` (nothing is
installed; PyPI only, the local pip configuration ignored) and checks that the chosen torch wheel
pulls in NVIDIA CUDA runtime packages, i.e. is the CUDA build, and that no pip retry happened.
pip evaluates environment markers for the machine it runs on, so run this on Linux. For macOS /
Windows targets use ``uv pip compile --python-platform`` (docs/deploy.md shows how).

    python scripts/check_install.py [--requirements requirements.txt] [--python-version 3.11]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# pip does not widen a manylinux_2_28 --platform to older manylinux tags: list them all.
LINUX_X86_64 = [f"manylinux_2_{v}_x86_64" for v in range(28, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]


def resolve(requirements: Path, python_version: str) -> tuple[dict, str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run",
               "--ignore-installed", "--only-binary=:all:", "--target", str(Path(tmp) / "t"),
               "--python-version", python_version, "--report", str(report),
               "-r", str(requirements)]  # fmt: skip
        for tag in LINUX_X86_64:
            cmd += ["--platform", tag]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"pip could not resolve {requirements}:\n{log[-2000:]}")
        return json.loads(report.read_text()), log


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requirements", type=Path, default=ROOT / "requirements.txt")
    p.add_argument("--python-version", default="3.11")
    args = p.parse_args()
    report, log = resolve(args.requirements, args.python_version)
    installs = {i["metadata"]["name"].lower(): i for i in report["install"]}
    torch = installs.get("torch")
    if torch is None:
        raise SystemExit("torch is not in the resolution")
    cuda = sorted(n for n in installs if n.startswith(("nvidia-", "cuda-")))
    retries = log.count("Retrying")
    print(f"target: linux x86-64, CPython {args.python_version}")
    wheel = torch["download_info"]["url"].rsplit("/", 1)[-1]
    print(f"torch {torch['metadata']['version']} from {wheel}")
    print(f"CUDA runtime packages pulled in: {len(cuda)} ({', '.join(cuda[:4])}, ...)")
    print(f"pip 'Retrying' warnings: {retries}")
    if not cuda or "+cpu" in torch["metadata"]["version"] or retries:
        raise SystemExit("FAIL: a Linux x86-64 GPU box would not get CUDA torch cleanly")
    print("OK: a Linux x86-64 GPU box gets the CUDA build of torch from PyPI")


if __name__ == "__main__":
    main()
