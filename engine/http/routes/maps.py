"""``GET /v1/maps/{dataset}/{model}``: a cached 2-D map as JSON or an Arrow IPC stream."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

import numpy as np
from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.http.routes import api_router
from engine.http.schemas import MapCoords
from engine.http.service import ApiError, Service, Svc
from engine.params import PROJECTION_METHODS, ProjectionParams

router = api_router("/v1", "maps")

ARROW_STREAM = "application/vnd.apache.arrow.stream"
_SPEC = "one URL-encoded path segment (`demo%3Adigits`; `/` as `%2F`)"


def _specs(request: Request, dataset: str, model: str) -> tuple[str, str]:
    """The two specs from the raw path: a server decodes `%2F` into `/` before routing, so a
    spec holding a slash (`open_clip:ViT-B-32/openai`) is only whole in the raw path."""
    raw = request.scope.get("raw_path")
    if not raw:
        return dataset, model
    parts = raw.decode("latin-1").split("?")[0].split("/v1/maps/", 1)[-1].split("/")
    if len(parts) != 2 or not all(parts):
        raise ApiError(
            404,
            "not_found",
            "use /v1/maps/DATASET/MODEL with each spec URL-encoded (e.g. demo%3Adigits)",
        )
    return unquote(parts[0]), unquote(parts[1])


def _table(svc: Service, dataset_spec: str, model_spec: str, method: str, seed: int) -> Any:
    import pyarrow as pa

    params = ProjectionParams(method=method, seed=seed)  # an unknown method: 400
    dataset = svc.ws.open(dataset_spec)
    model_spec = svc.check_model(model_spec)
    coords = svc.ws.map_coords(dataset, model_spec, params)  # 404 not_embedded / not_mapped
    key = params.cache_key(svc.ws.vectors(dataset, model_spec).key)
    coords = np.asarray(coords, dtype=np.float32)
    table = pa.table(
        {
            "id": pa.array(dataset.ids, pa.string()),
            "label": pa.array(dataset.labels, pa.string()),
            "x": pa.array(coords[:, 0]),
            "y": pa.array(coords[:, 1]),
        }
    )
    meta = {"dataset": svc.scrub(dataset.spec), "model": model_spec, "method": method, "key": key}
    return table.replace_schema_metadata(meta)


@router.get(
    "/maps/{dataset}/{model:path}",
    response_model=MapCoords,
    responses={200: {"content": {ARROW_STREAM: {}}, "description": "the map"}},
)
async def maps(
    svc: Svc,
    request: Request,
    dataset: Annotated[str, Path(description=f"a dataset spec, {_SPEC}")],
    model: Annotated[str, Path(description=f"a model spec, {_SPEC}")],
    method: Annotated[
        str,
        Query(description="the projection", json_schema_extra={"enum": list(PROJECTION_METHODS)}),
    ] = "umap",
    seed: Annotated[int, Query(description="the projection's seed")] = 0,
) -> Response:
    """The cached 2-D map of a dataset under a model: JSON columns, or an Arrow IPC stream of
    `id, label, x, y` with `Accept: application/vnd.apache.arrow.stream`. 404 `not_mapped`
    until the map is computed (`python -m engine project`, or the dashboard)."""
    dataset_spec, model_spec = _specs(request, dataset, model)
    table = await run_in_threadpool(_table, svc, dataset_spec, model_spec, method, seed)
    if ARROW_STREAM in request.headers.get("accept", ""):
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return JSONResponse({**meta, "n": table.num_rows, **table.to_pydict()})
