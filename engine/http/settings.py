"""The HTTP service's settings: every default once, each overridable by an environment variable.

The operator (environment, command line) sets these; a client cannot. docs/api.md lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine import settings
from engine.errors import ParallaxError


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


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
        """Defaults, then ``PARALLAX_API_*`` variables, then explicit ``overrides`` (the CLI)."""
        env = os.environ
        values: dict[str, object] = {
            "api_keys": _split(env.get("PARALLAX_API_KEYS", "")),
            "cors_origins": _split(env.get("PARALLAX_CORS_ORIGINS", "")),
        }
        numeric = {
            "PARALLAX_API_MAX_BATCH": ("max_batch", int),
            "PARALLAX_API_BATCH_WAIT_MS": ("batch_wait_ms", float),
            "PARALLAX_API_MAX_IMAGES": ("max_images", int),
            "PARALLAX_API_MAX_TEXTS": ("max_texts", int),
            "PARALLAX_API_MAX_BODY_BYTES": ("max_body_bytes", settings.parse_size),
        }
        for var, (name, parse) in numeric.items():
            raw = env.get(var, "").strip()
            if raw:
                try:
                    values[name] = parse(raw)
                except (ValueError, ParallaxError):
                    raise ParallaxError(f"{var}={raw!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
