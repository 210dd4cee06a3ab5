"""``POST /v1/predict``: images and texts x labels -> each model's zero-shot answer.

One prediction loop for every door (``Workspace.predict``); here its forward passes go through
the service's batchers, and its label prompts are kept between requests.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from engine.http.limits import check_predict_work, check_texts, uploads_of
from engine.http.routes import api_router, needs_form
from engine.http.routes.embeddings import decoded_images
from engine.http.schemas import Prediction
from engine.http.service import Svc
from engine.params import PREDICT, PredictParams

router = api_router("/v1", "predict")


def _listed(values: list[str] | None) -> list[str]:
    """Fields given repeatedly, or once as a comma- or newline-separated list."""
    out: list[str] = []
    for raw in values or []:
        out.extend(v.strip() for v in raw.replace("\n", ",").split(",") if v.strip())
    return out


@router.post(
    "/predict",
    response_model=Prediction,
    dependencies=[Depends(needs_form)],
)
async def predict(
    svc: Svc,
    request: Request,
    labels: Annotated[
        list[str], Form(description="candidate labels: repeated, or comma-separated")
    ],
    files: Annotated[
        list[UploadFile] | None, File(description="images to classify (repeatable)")
    ] = None,
    texts: Annotated[list[str] | None, Form(description="texts to classify")] = None,
    models: Annotated[
        list[str] | None, Form(description="model specs (default: the operator's)")
    ] = None,
    templates: Annotated[
        list[str] | None, Form(description="prompt templates with {} for the label")
    ] = None,
) -> dict[str, Any]:
    """Each model's zero-shot top answers for every image and text, its inference latency and
    load time. A model that cannot answer (no text tower, weights missing) has a one-line
    `error`; the others still answer."""
    settings = svc.settings
    names = _listed(labels)
    specs = _listed(models) or list(settings.predict_models)
    prompts = tuple(t for t in templates or [] if t.strip()) or tuple(PREDICT.templates)
    params = PredictParams(templates=prompts, ensemble=PREDICT.ensemble, top_k=PREDICT.top_k)
    text_items = check_texts(_listed(texts), settings)
    # The form is parsed already (``files`` above); read it again for the upload field names
    # older clients used (``file``, ``images``).
    uploads = uploads_of(await request.form())
    per_label = len(prompts) if params.ensemble else 1
    check_predict_work(len(specs), names, per_label, len(uploads) + len(text_items), settings)
    specs = [svc.check_model(s) for s in specs]  # refused (403) before anything loads
    images, image_names = await decoded_images(svc, uploads)
    run = await run_in_threadpool(
        svc.ws.predict,
        specs,
        names,
        images=images,
        texts=text_items,
        params=params,
        embed=svc.embed_memo,
    )
    return {
        "labels": names,
        "inputs": [{"index": i, "kind": "image", "name": n} for i, n in enumerate(image_names)]
        + [{"index": i, "kind": "text"} for i in range(len(text_items))],
        "predictions": [
            {**svc.scrub.deep(p.to_json()), "score": run.scales.get(p.model)} for p in run.preds
        ],
    }
