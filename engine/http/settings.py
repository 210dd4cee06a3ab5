"""The HTTP service's settings: its typed view of ``engine.settings`` plus command-line values.

The operator (environment, command line) sets these; a client cannot. The environment part is
in the one settings table (``engine.settings``, docs/settings.md); defaults not read from the
environment stay here. The limits are sized for a small shared box (1 GiB of memory, one CPU):
raise them on a larger one. Each refusal past a limit is one JSON line (413 or 429), before any
work is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    host = host.strip().strip("[]").lower()
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = 8000
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: no auth
    allow_anonymous: bool = False  # a non-loopback host without keys starts only with this
    trusted_clients: bool = False  # True: clients are the operator (no visitor policy)
    models: tuple[str, ...] = ()  # model specs clients may name beyond the catalogue
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all
    max_batch: int = 64  # items in one forward pass of the dynamic batcher
    batch_wait_ms: float = 5.0  # how long the batcher waits for company after the first item
    max_images: int = 64  # images in one request
    max_texts: int = 256  # texts in one request
    max_labels: int = 1000
    max_label_chars: int = 200  # one label (a prompt is a label in a template)
    max_predict_models: int = 4  # models in one /v1/predict
    # models x (labels x templates + inputs): the forward passes one /v1/predict may ask for
    max_predict_work: int = 4096
    max_request_pixels: int = settings.MAX_IMAGE_PIXELS  # all images of one request, together
    max_image_bytes: int = settings.MAX_IMAGE_FILE_BYTES  # one uploaded file
    max_body_bytes: int = 256 * 1024**2  # one multipart body, whatever its transfer encoding
    # Any other body (JSON): parsing expands it several times in memory, and 256 texts of the
    # longest kind are 5 MB.
    max_json_bytes: int = 16 * 1024**2
    job_max_bytes: int = 2 * 1024**3  # one embed job's vectors (rows x dim x 4 bytes)
    max_jobs: int = 16  # queued + running embed jobs in all
    max_jobs_per_client: int = 2  # queued + running embed jobs of one client (key or address)
    job_ttl_s: float = 7 * 24 * 3600.0  # finished job records are forgotten after this
    predict_models: tuple[str, ...] = ("demo:shapes-clip",)  # /v1/predict without "models"
    graceful_shutdown_s: float = 30.0

    @classmethod
    def from_env(cls, **overrides: object) -> ServiceSettings:
        """Defaults, then the ``PARALLAX_API_*`` settings (``engine.settings``, read now), then
        explicit ``overrides`` (the CLI)."""
        values: dict[str, object] = settings.service()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
