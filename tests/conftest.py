"""Shared, generic fixtures: a private cache root and a small image-file factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    """An empty cache directory private to the test (never the repository's ``cache/``)."""
    root = tmp_path / "cache"
    root.mkdir()
    return root


@pytest.fixture
def make_image() -> Callable[..., Path]:
    """``make_image(path, size=(16, 16), colour=(200, 30, 30), mode="RGB", **save_kwargs)``
    writes a solid image (format from the suffix unless ``format=`` is given) and returns
    the path, creating parent folders."""

    def make(
        path: Path,
        size: tuple[int, int] = (16, 16),
        colour: object = (200, 30, 30),
        mode: str = "RGB",
        **save_kwargs: object,
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size, colour).save(path, **save_kwargs)  # type: ignore[arg-type]
        return path

    return make


def private_app_env(tmp_path_factory: pytest.TempPathFactory):
    """Generator for a module-scoped autouse fixture of the page tests: a private
    ``PARALLAX_CACHE``, ``HF_HUB_OFFLINE=1`` and the test's temp folders as the operator's
    ``PARALLAX_SERVER_PATHS`` for the module, the old values restored after.

    Page modules use it as ``yield from private_app_env(tmp_path_factory)``.
    """
    import os

    keys = ("PARALLAX_CACHE", "HF_HUB_OFFLINE", "PARALLAX_SERVER_PATHS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["PARALLAX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    # The tests play the operator who lists their temp folders (visitors get nothing else).
    os.environ["PARALLAX_SERVER_PATHS"] = str(tmp_path_factory.getbasetemp())
    try:
        yield Path(os.environ["PARALLAX_CACHE"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def fake_model_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' ``fake:`` models (tests/fakes.py) as one more row of the model kinds table,
    open to visitors: the dashboard is a visitor's door, and the policy refuses any kind the
    table does not list. Their vectors are made by passing the model object itself."""
    from engine.models.base import IMAGE
    from engine.models.registry import ADAPTERS, AdapterEntry

    row = AdapterEntry("tests.fakes", lambda spec: frozenset({IMAGE}), False, visitor="any")
    monkeypatch.setitem(ADAPTERS, "fake", row)
