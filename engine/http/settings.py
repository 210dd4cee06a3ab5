"""The HTTP service's settings: its typed view of ``engine.settings`` plus command-line values.

The operator (environment, command line) sets these; a client cannot. The environment part is
in the one settings table (``engine.settings``, docs/settings.md); defaults not read from the
environment stay here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import settings


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = 8000
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: no auth
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    max_batch: int = 64  # items in one forward pass of the dynamic batcher
    batch_wait_ms: float = 5.0  # how long the batcher waits for company after the first item
    max_images: int = 64  # images in one request
    max_texts: int = 256  # texts in one request
    max_labels: int = 1000
    max_image_bytes: int = settings.MAX_IMAGE_FILE_BYTES  # one uploaded file
    max_body_bytes: int = 256 * 1024**2  # one request body
    predict_models: tuple[str, ...] = ("demo:shapes-clip",)  # /v1/predict without "models"
    graceful_shutdown_s: float = 30.0

    @classmethod
    def from_env(cls, **overrides: object) -> ServiceSettings:
        """Defaults, then the ``PARALLAX_API_*`` settings (``engine.settings``, read now), then
        explicit ``overrides`` (the CLI)."""
        values: dict[str, object] = settings.service()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
