"""View-only mode: browse precomputed bundles on a host with no models (Community Cloud).

The app is view-only when ``PARALLAX_VIEW_ONLY`` says so (``1`` / ``true`` / ``yes`` / ``on``;
``0`` / ``false`` / ``no`` / ``off`` forces the full app), else when torch is not installed. In
view-only mode nothing imports torch, transformers, open_clip or umap-learn: maps come from the
cache (a bundle installs its UMAP and PCA maps there), PCA is computed when missing, UMAP never.

The bundle a fresh session opens is ``PARALLAX_BUNDLE`` (a path, relative to the repository
root or absolute) when set, else, in view-only mode, the committed demo bundle. On Community
Cloud, root-level entries of the app's Secrets become environment variables, so
``PARALLAX_VIEW_ONLY = "1"`` and ``PARALLAX_BUNDLE = "bundles/..."`` there work too.

No Streamlit import here: pure functions, unit-testable.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from engine import settings
from engine.errors import ParallaxError
from engine.settings import REPO_ROOT

VIEW_ONLY_ENV = "PARALLAX_VIEW_ONLY"
BUNDLE_ENV = "PARALLAX_BUNDLE"
DEMO_BUNDLE = REPO_ROOT / "bundles" / "demo-shapes.parallax.zip"
# What view-only mode must never import (the test suite checks sys.modules for these).
HEAVY_MODULES = (
    "torch",
    "torchvision",
    "transformers",
    "open_clip",
    "umap",
    "sentence_transformers",
)
MESSAGE = (
    "view-only: this deployment has no models; run `python -m engine bundle ...` where models "
    "are (see docs/deploy.md)"
)


def sentence() -> str:
    """``MESSAGE`` starting with a capital, for use on its own."""
    return MESSAGE[0].upper() + MESSAGE[1:]


class ViewOnlyError(ParallaxError):
    """A feature that needs a model was asked for in view-only mode."""

    def __init__(self, what: str | None = None) -> None:
        super().__init__(f"{what}: {MESSAGE}" if what else MESSAGE)


@functools.lru_cache(maxsize=1)
def models_installed() -> bool:
    """Whether torch can be imported here (found, not imported; asked once per process)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def is_view_only() -> bool:
    said = settings.view_only()  # the operator's word (engine.settings' yes/no parser)
    return (not models_installed()) if said is None else said


def model_loadable(spec: str) -> bool:
    """Whether ``spec`` may be loaded here: any model normally, weight-free baselines (NumPy
    only) in view-only mode."""
    return not is_view_only() or str(spec).strip().startswith("baseline:")


def require_model(spec: str, what: str | None = None) -> None:
    if not model_loadable(spec):
        raise ViewOnlyError(what or f"{spec} cannot be loaded")


def configured_bundle() -> Path | None:
    """The bundle a new session opens: ``PARALLAX_BUNDLE``, else the demo bundle in view-only
    mode (when it exists), else None."""
    value = settings.bundle()
    if value:
        path = Path(value).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path
    if is_view_only() and DEMO_BUNDLE.is_file():
        return DEMO_BUNDLE
    return None


def bundle_spec(path: str | Path) -> str:
    return f"bundle:{path}"


def read_manifest(path: str | Path) -> dict | None:
    """A bundle's manifest.json, or None when ``path`` is not a zip with a Parallax manifest
    (``Workspace.bundle_manifest``: nothing is unpacked)."""
    from engine.workspace import Workspace

    return Workspace.bundle_manifest(path)


def bundle_model_specs(path: str | Path) -> list[str]:
    manifest = read_manifest(path) or {}
    models = manifest.get("models")
    if not isinstance(models, list):
        return []
    return [str(m["spec"]) for m in models if isinstance(m, dict) and m.get("spec")]


# -- simulating a host without models (tests, the memory benchmark) ---------------------------
_BLOCKER = '''"""Written by dashboard.viewonly.no_models_env: these packages are "not installed"."""
import sys

_BLOCKED = {blocked!r}


class _NoModels:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (view-only test)", name=name)
        return None


sys.meta_path.insert(0, _NoModels())
'''


def no_models_env(folder: str | Path, view_only_flag: bool = False) -> dict[str, str]:
    """An environment for a child process in which the heavy packages cannot be imported.

    Writes a ``sitecustomize.py`` into ``folder`` that puts a meta-path finder in front of
    every other: importing (or ``find_spec``-ing) torch, transformers, open_clip, umap & co.
    raises ``ModuleNotFoundError``, as on a host where they are not installed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blocked = tuple(sorted({*HEAVY_MODULES, "pynndescent", "numba"}))
    (folder / "sitecustomize.py").write_text(_BLOCKER.format(blocked=blocked))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(folder), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop(VIEW_ONLY_ENV, None)
    if view_only_flag:
        env[VIEW_ONLY_ENV] = "1"
    return env
