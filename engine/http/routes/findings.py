"""``POST /v1/findings``: label errors, duplicates, outliers, leaks and named clusters of an
embedded dataset under several models, the same JSON object as ``python -m engine findings
--json`` (``Workspace.find``: computed once, then cached).

No model loads here: every model must have finished vectors (404 `not_embedded` otherwise;
``POST /v1/jobs/embed`` embeds). ``cached_only`` answers an entry already computed or 404
`not_computed`, which is what a view-only deployment can serve.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from starlette.concurrency import run_in_threadpool

from engine.http.routes import api_router, needs_json
from engine.http.schemas import FindingsRequest, FindingsResult
from engine.http.service import Service, Svc
from engine.params import FindingsParams

router = api_router("/v1", "findings")


def _find(svc: Service, body: FindingsRequest) -> dict[str, Any]:
    dataset = body.dataset.strip()
    svc.ws.check_dataset_spec(dataset)
    specs = [svc.check_model(m) for m in body.models]  # 403 before anything is read
    params = FindingsParams(
        k=max(body.k, body.label_k, body.outlier_k),
        label_k=body.label_k,
        outlier_k=body.outlier_k,
        seed=body.seed,
    )
    found = svc.ws.find(
        dataset,
        specs,
        label_column=body.label_column,
        split_column=body.split_column,
        params=params,
        embed=False,
        compute=not body.cached_only,
    )
    return svc.scrub.deep(found.to_json())


@router.post("/findings", response_model=FindingsResult, dependencies=[Depends(needs_json)])
async def findings(svc: Svc, body: FindingsRequest) -> dict[str, Any]:
    """Likely label errors (with a suggested label), exact and near duplicates, outliers (most
    outlying first), leaks between the values of a split column and named clusters per model;
    every finding lists the models that see it. Rows are the dataset's row indices."""
    return await run_in_threadpool(_find, svc, body)
