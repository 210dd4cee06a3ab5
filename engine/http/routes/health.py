"""``/v1/health`` (no key needed) and the catalogues, ``/v1/datasets`` and ``/v1/models``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

import engine
from engine.http.routes import api_router
from engine.http.schemas import DatasetList, Health, ModelList
from engine.http.service import Svc

open_router = APIRouter(prefix="/v1", tags=["health"])  # no key needed
router = api_router("/v1", "catalogue")


@open_router.get("/health", response_model=Health)
def health(svc: Svc) -> dict[str, Any]:
    """Whether the service is up; open to everyone, even when keys are configured."""
    return {
        "status": "ok",
        "version": engine.__version__,
        "uptime_s": round(time.time() - svc.started, 1),
        "auth": bool(svc.settings.api_keys),
        "jobs_active": len(svc.jobs.active()),
        "batchers": svc.batchers.stats(),
    }


@router.get("/datasets", response_model=DatasetList)
def datasets(svc: Svc) -> dict[str, Any]:
    """The demo datasets (what `python -m engine datasets` lists)."""
    return {"datasets": svc.scrub.deep(svc.ws.demos())}


@router.get("/models", response_model=ModelList)
def models(svc: Svc) -> dict[str, Any]:
    """The models a client may name (the catalogue, and the operator's own)."""
    listed = svc.ws.models()
    known = {m["spec"] for m in listed}
    for spec in svc.allowed_models:
        if spec not in known:
            kind = spec.partition(":")[0]
            listed.append(
                {
                    "spec": spec,
                    "kind": kind,
                    "modalities": [],
                    "description": "configured by the operator",
                    "available_offline": False,
                }
            )
    if not svc.settings.trusted_clients:
        listed = [m for m in listed if m["spec"] in svc.allowed_models]
    return {"models": svc.scrub.deep(listed)}
