"""The engine over HTTP (FastAPI on uvicorn): ``python -m engine serve``; see docs/api.md.

FastAPI and uvicorn are optional (requirements-serve.txt); importing this package without them
raises one line saying so.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from engine.errors import ParallaxError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from engine.http.settings import ServiceSettings

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


def create_app(
    settings: ServiceSettings | None = None, cache: str | os.PathLike[str] | Any = None
) -> FastAPI:
    """The ASGI app over the cache root ``cache`` (a path, or a ``Workspace`` or ``Cache``)."""
    _require()
    from engine.http.app import create_app as build

    return build(settings, cache)


def serve(settings: ServiceSettings, cache: str | os.PathLike[str] | Any = None) -> None:
    """Run the service until SIGINT / SIGTERM; in-flight requests finish first (uvicorn's
    graceful shutdown, bounded by ``settings.graceful_shutdown_s``). A non-loopback address
    without API keys is refused unless the operator allowed anonymous clients."""
    from engine.http.settings import is_loopback

    if not is_loopback(settings.host) and not settings.api_keys and not settings.allow_anonymous:
        raise ParallaxError(
            f"refusing to serve on {settings.host} without API keys: set PARALLAX_API_KEYS, "
            "or pass --allow-anonymous to let anyone who reaches it in"
        )
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
