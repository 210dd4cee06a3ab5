"""User-facing errors: each carries one clear line meant to be shown as-is.

The CLI prints ``str(err)`` on stderr (or ``error_body`` with ``--json``) and exits non-zero; the
pages show it with ``st.error``; the HTTP service answers ``error_body`` with ``error_code``'s
status. Anything that is *not* a ``ParallaxError`` is a bug and keeps its traceback.

Each class names its HTTP status and machine-readable code once (``http_status``, ``code``), so
every door reports the same error the same way: ``error_code`` is the one mapping.
"""

from __future__ import annotations

from typing import Any

INTERNAL = (500, "internal_error")


class ParallaxError(Exception):
    """Base class for errors caused by user input or the environment (not by bugs).

    A subclass names its status and code in its header (``class X(ParallaxError, status=404,
    code="not_found")``); without them it keeps its base's."""

    http_status = 400
    code = "bad_request"

    def __init_subclass__(
        cls, *, status: int | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.http_status = status
        if code is not None:
            cls.code = code


class DatasetError(ParallaxError, status=422, code="dataset_unavailable"):
    """A dataset spec cannot be opened at all (missing path, unknown kind, empty dataset)."""


class BudgetError(DatasetError, status=413, code="too_large"):
    """Past one of the deployment's budgets (decoded bytes, upload size, pixels): one line,
    nothing half-written (``engine.settings``' budgets section)."""


class ItemError(ParallaxError, status=400, code="bad_input"):
    """One item of a dataset is unusable; the dataset skips it and records the reason."""


class ModelUnavailable(ParallaxError, status=422, code="model_unavailable"):
    """A model spec cannot be loaded: unknown kind, weights not on disk and no network, ..."""


class CacheError(ParallaxError):
    """The cache directory cannot be written (read-only, disk full) or an entry is corrupt."""


class QuotaError(ParallaxError):
    """A write would take a namespace of the cache past its disk quota (``engine.settings``)."""


class Forbidden(ParallaxError, status=403, code="forbidden"):
    """The caller may not name this (a visitor policy's refusal: ``engine.policy``)."""


class NotFound(ParallaxError, status=404, code="not_found"):
    """The named thing does not exist (a job id, a cached result that was never computed)."""


def error_code(exc: BaseException) -> tuple[int, str]:
    """``(HTTP status, code)`` for ``exc``: the class's own (the first one in its MRO, so a
    policy refusal that is also a ``DatasetError`` is ``forbidden``); ``(500, "internal_error")``
    for anything that is not a ``ParallaxError`` (a bug)."""
    if isinstance(exc, ParallaxError):
        return int(exc.http_status), str(exc.code)
    return INTERNAL


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The one line a user sees for ``exc`` (an unexpected one names its type)."""
    text = str(exc).strip().splitlines()
    first = text[0][:limit] if text else ""
    if isinstance(exc, ParallaxError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def error_body(exc: BaseException, limit: int = 500) -> dict[str, Any]:
    """``{"error": {"code", "message"}}``: what the HTTP service answers and the CLI prints
    under ``--json`` (the message on one line, whitespace collapsed)."""
    _, code = error_code(exc)
    message = (str(exc) or type(exc).__name__) if isinstance(exc, ParallaxError) else one_line(exc)
    return {"error": {"code": code, "message": " ".join(message.split())[:limit]}}
