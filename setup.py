"""``pip install .``: the engine as a library with a ``parallax`` command (``python -m engine``).

A setup.py rather than a pyproject.toml on purpose: Streamlit Community Cloud treats a
pyproject.toml at the root as a Poetry project and would stop reading requirements.txt. The
dashboard is not part of the package (it runs from a checkout: ``streamlit run dashboard/app.py``).
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
# The engine's own needs: requirements.txt minus what only the dashboard uses.
DASHBOARD_ONLY = {"streamlit", "plotly"}


def requirements(name: str) -> list[str]:
    lines = (ROOT / name).read_text().splitlines()
    reqs = [line.split("#")[0].strip() for line in lines]
    return [r for r in reqs if r and not r.startswith(("-", "--"))]


def version() -> str:
    for line in (ROOT / "engine" / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip("\"'")
    raise RuntimeError("engine/__init__.py has no __version__")


def shipped_models() -> list[tuple[str, list[str]]]:
    """models/<name>/* -> <prefix>/share/parallax/models/<name>/ (engine.settings finds them)."""
    out = []
    for folder in sorted((ROOT / "models").iterdir()):
        if (folder / "open_clip_config.json").is_file():
            files = [str(p.relative_to(ROOT)) for p in sorted(folder.iterdir()) if p.is_file()]
            out.append((f"share/parallax/models/{folder.name}", files))
    return out


base = requirements("requirements.txt")
setup(
    name="parallax-engine",
    version=version(),
    description="See one dataset through several models at once: datasets -> embeddings -> maps",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["engine", "engine.*"]),
    # /docs serves Swagger UI from these files (engine/http/static/swagger-ui/README.md)
    package_data={"engine.http": ["static/swagger-ui/*"]},
    install_requires=[r for r in base if r.split("=")[0].split("[")[0] not in DASHBOARD_ONLY],
    extras_require={
        "dashboard": [r for r in base if r.split("=")[0] in DASHBOARD_ONLY],
        "hf": requirements("requirements-hf.txt"),
        "serve": requirements("requirements-serve.txt"),  # python -m engine serve
    },
    data_files=shipped_models(),
    entry_points={"console_scripts": ["parallax = engine.__main__:run"]},
)
