"""What every route shares: one ``Workspace`` (the engine's door), the batchers, the job store,
the operator's settings, and the checks a client's request passes before any work.

Every client is a visitor (``Workspace.visitor``) unless the operator sets ``trusted_clients``:
dataset and model specs then pass the same policy as the dashboard's pages, and model specs
come from an allow-list (the catalogue, the shipped demos and the operator's ``models``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, Request

from engine import settings as engine_settings
from engine.errors import ParallaxError, error_code
from engine.http.batching import BatcherPool
from engine.http.jobs import JobStore, public
from engine.http.settings import ServiceSettings
from engine.workspace import Workspace

log = logging.getLogger(__name__)

# Prompt vectors kept between predict requests: one per short text, so at most
# 8192 x 512 characters of keys and 8192 x dim floats.
_MEMO_ENTRIES = 8192
_MEMO_TEXT_CHARS = 512


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def status_of(exc: ParallaxError) -> tuple[int, str]:
    """The HTTP status and code of an engine error: its class's own (``engine.errors``), the
    same mapping the CLI's ``--json`` errors use."""
    return error_code(exc)


# An absolute path of two or more segments not inside a URL ("https://host/a/b" is left alone).
_PATH_RE = re.compile(r"(?<![\w/.~>-])/(?:[^\s/'\"`,;()<>]+/)+([^\s/'\"`,;()<>]*)")


class Scrubber:
    """Takes server paths out of text a client receives (issue #27: error lines, job records,
    catalogue descriptions): the cache, the checkout, the interpreter's prefix and home become
    placeholders; any other absolute path keeps only its last segment."""

    def __init__(self, cache_root: Path) -> None:
        known = {
            str(cache_root): "<cache>",
            str(engine_settings.REPO_ROOT): "<app>",
            sys.prefix: "<python>",
            str(Path.home()): "~",
        }
        self._known = sorted(((k, v) for k, v in known.items() if len(k) > 1), reverse=True)

    def __call__(self, text: str) -> str:
        for path, placeholder in self._known:
            text = text.replace(path, placeholder)
        return _PATH_RE.sub(lambda m: f"…/{m.group(1)}", text)

    def deep(self, value: Any) -> Any:
        """``value`` with every string scrubbed (dicts and lists walked)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        return value


class Service:
    """The state of one running service (built at start-up, closed at shutdown)."""

    def __init__(self, settings: ServiceSettings, root: Path | str | None) -> None:
        self.settings = settings
        self.started = time.time()
        operator = Workspace(root)
        # The door every route uses: a visitor's view unless the operator trusts the clients.
        self.ws = operator if settings.trusted_clients else operator.visitor(None)
        self.scrub = Scrubber(self.ws.root)
        self.batchers = BatcherPool(
            max_batch=settings.max_batch, max_wait_s=settings.batch_wait_ms / 1000.0
        )
        catalogue = [m["spec"] for m in self.ws.models()]
        self.allowed_models: tuple[str, ...] = tuple(
            dict.fromkeys([*catalogue, *settings.predict_models, *settings.models])
        )
        self.jobs = JobStore(
            self.ws.cache.kind_dir("jobs"),
            self._run_job,
            max_active=settings.max_jobs,
            max_per_client=settings.max_jobs_per_client,
            ttl_s=settings.job_ttl_s,
        )
        if self.jobs.read_only:
            log.warning(
                "read-only cache %s: serving what is cached; embed jobs are refused",
                self.ws.root,
            )
        self._memo_lock = threading.Lock()
        self._text_memo: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def close(self) -> None:
        self.batchers.close()
        self.jobs.shutdown(wait=False)

    # -- specs a client names ----------------------------------------------------------------
    def check_model(self, spec: str) -> str:
        """``spec`` stripped, if a client may name it (else 403, or 422 if it does not parse)."""
        spec = spec.strip()
        self.ws.check_model_spec(spec)  # the visitor policy: kinds, allow-list, size budget
        return spec

    def model(self, spec: str) -> Any:
        return self.ws.model(self.check_model(spec))

    # -- batched model calls -------------------------------------------------------------------
    def embed(self, model: Any, modality: str, items: list[Any]) -> np.ndarray:
        """``items`` embedded with ``model`` in a forward pass shared with other requests."""
        fn = model.embed_images if modality == "image" else model.embed_texts
        return self.batchers.get((str(model.spec), modality), fn).submit(items)

    def embed_memo(self, model: Any, modality: str, items: list[Any]) -> np.ndarray:
        """``embed``, with short texts' vectors kept between requests: predict's label prompts
        are the same request after request, so only new texts reach the model."""
        if modality != "text":
            return self.embed(model, modality, items)
        spec = str(model.spec)
        with self._memo_lock:
            found = [self._text_memo.get((spec, t)) for t in items]
            for t, v in zip(items, found, strict=True):
                if v is not None:
                    self._text_memo.move_to_end((spec, t))
        missing = list(dict.fromkeys(t for t, v in zip(items, found, strict=True) if v is None))
        if not missing:
            return np.stack(found)  # type: ignore[arg-type]
        fresh = dict(zip(missing, self.embed(model, "text", missing), strict=True))
        with self._memo_lock:
            for text, row in fresh.items():
                if len(text) <= _MEMO_TEXT_CHARS:
                    self._text_memo[(spec, text)] = row
            while len(self._text_memo) > _MEMO_ENTRIES:
                self._text_memo.popitem(last=False)
        return np.stack([fresh[t] if v is None else v for t, v in zip(items, found, strict=True)])

    # -- jobs ----------------------------------------------------------------------------------
    def _run_job(self, job: dict[str, Any], progress: Any) -> dict[str, Any]:
        result = self.ws.embed(
            job["dataset"], job["model"], modality=job.get("modality"), progress=progress
        ).to_json()
        result.pop("path", None)  # where the vectors lie on the server: not the client's
        return result

    def estimate_job(self, dataset: str, model: str) -> int:
        """The bytes an embed job's vectors take (rows x dim x 4), refused with 413 past the
        job budget or the cache's free disk, before anything is queued (503 at once on a
        read-only cache: nothing is opened or loaded for a job that cannot be stored)."""
        self.jobs.require_writable()
        ds = self.ws.open(dataset)
        dim = int(self.model(model).dim)
        need = len(ds) * dim * 4
        budget = self.settings.job_max_bytes
        try:
            free = shutil.disk_usage(self.ws.root).free
        except OSError:
            free = budget
        if need > min(budget, free):
            raise ApiError(
                413,
                "too_large",
                f"embedding {len(ds):,} items with {model} ({dim}-d) takes "
                f"{need / 1024**2:,.0f} MB, over this deployment's "
                f"{min(budget, free) / 1024**2:,.0f} MB for one job",
            )
        return need

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        return self.scrub.deep(public(job))

    # -- who is asking -------------------------------------------------------------------------
    def authorise(self, request: Request) -> None:
        if not self.settings.api_keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        ok = scheme.lower() == "bearer" and any(
            hmac.compare_digest(token.strip().encode(), key.encode())
            for key in self.settings.api_keys
        )
        if not ok:
            raise ApiError(
                401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)"
            )

    def client_id(self, request: Request) -> str:
        """Who a job belongs to for the per-client bound: the API key (hashed) or the address."""
        token = request.headers.get("authorization", "").partition(" ")[2].strip()
        if self.settings.api_keys and token:
            return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        host = request.client.host if request.client else "unknown"
        return f"addr:{host}"


def service(request: Request) -> Service:
    """The running ``Service`` (a FastAPI dependency)."""
    return request.app.state.service


# A route's parameter for the running service: ``svc: Svc``.
Svc = Annotated[Service, Depends(service)]


def cache_root_of(value: Any) -> Path | None:
    """A cache root from a path, a ``Workspace`` or anything with a ``root`` (a ``Cache``)."""
    if value is None:
        return None
    if isinstance(value, str | os.PathLike):  # (a Path's own ``.root`` is its anchor, "/")
        return Path(os.fspath(value))
    return Path(os.fspath(value.root))
