"""The engine over HTTP (FastAPI on uvicorn): ``python -m engine serve``; see docs/api.md.

FastAPI and uvicorn are optional (requirements-serve.txt); importing this package without them
raises one line saying so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import ParallaxError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from engine.http.settings import ServiceSettings
    from engine.store.cache import Cache

# Installed with pip, the extra names the packages; a checkout has the pinned file.
INSTALL_HINT = (
    'pip install "parallax-engine[serve]", or in a checkout pip install -r requirements-serve.txt'
)

__all__ = ["create_app", "serve"]


def _require() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ParallaxError(
            f"the HTTP service needs fastapi and uvicorn ({INSTALL_HINT}): {exc}"
        ) from None


def create_app(settings: ServiceSettings | None = None, cache: Cache | None = None) -> FastAPI:
    _require()
    from engine.http.app import create_app as build

    return build(settings, cache)


def serve(settings: ServiceSettings, cache: Cache | None = None) -> None:
    """Run the service until SIGINT / SIGTERM; in-flight requests finish first (uvicorn's
    graceful shutdown, bounded by ``settings.graceful_shutdown_s``)."""
    _require()
    import uvicorn

    app = create_app(settings, cache)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
    )
