"""``POST /v1/jobs/embed`` and ``GET /v1/jobs/{job_id}``: embed a dataset into the shared cache
in the background, estimated and bounded before it is queued."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from engine.http.routes import api_router, needs_json
from engine.http.schemas import EmbedJobRequest, Job
from engine.http.service import Svc

router = api_router("/v1/jobs", "jobs")


@router.post("/embed", status_code=202, response_model=Job, dependencies=[Depends(needs_json)])
async def submit_job(svc: Svc, body: EmbedJobRequest, request: Request) -> dict[str, Any]:
    """Queue an embed job (202 with its record); asking again for an unfinished job returns
    it. Refused with 413 when its vectors (rows x dim x 4 bytes) would pass this deployment's
    budget, 429 when too many jobs are queued in all or from this client."""
    dataset = body.dataset.strip()
    svc.ws.check_dataset_spec(dataset)
    model = svc.check_model(body.model)
    need = await run_in_threadpool(svc.estimate_job, dataset, model)
    job = svc.jobs.submit(dataset, model, body.modality, client=svc.client_id(request))
    return {**svc.job_view(job), "estimate_bytes": need}


@router.get("/{job_id}", response_model=Job)
def get_job(svc: Svc, job_id: str) -> dict[str, Any]:
    """A job's status (`queued`, `running`, `done`, `failed`), progress and result."""
    return svc.job_view(svc.jobs.get(job_id))
