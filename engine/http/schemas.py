"""The service's request and response bodies as pydantic models: what ``/openapi.json`` shows.

Request models reject unknown types (a number where a text is expected) with a 400 and one
line; the service's own limits (items per request, labels, work) are checked by the routes,
since the operator sets them at run time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.params import FINDINGS, SEARCH

Modality = Literal["image", "text"]


# -- errors ---------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="a stable word: bad_request, forbidden, too_large, ...")
    message: str = Field(description="one line for a person")


class ErrorResponse(BaseModel):
    """Every error, with a 4xx status (a 500 only for a bug)."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": what}
    for status, what in {
        400: "bad request (one line says what)",
        401: "missing or wrong API key",
        403: "the visitor policy refused a dataset or model spec",
        404: "not found, not embedded or not mapped yet",
        413: "past a limit of this deployment",
        415: "unsupported media type",
        422: "the model or dataset cannot be used",
        429: "too many jobs queued",
    }.items()
}


# -- health and catalogues ------------------------------------------------------------------
class BatcherStats(BaseModel):
    batches: int
    items: int


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    uptime_s: float
    auth: bool = Field(description="whether routes need an API key")
    jobs_active: int
    batchers: dict[str, BatcherStats] = Field(description="MODEL/MODALITY -> forward passes")


class DatasetInfo(BaseModel):
    spec: str
    description: str
    modalities: list[str]
    size: int | None = None


class DatasetList(BaseModel):
    datasets: list[DatasetInfo]


class ModelInfo(BaseModel):
    spec: str
    kind: str
    modalities: list[str]
    description: str
    available_offline: bool


class ModelList(BaseModel):
    models: list[ModelInfo]


# -- embeddings -----------------------------------------------------------------------------
class EmbedTexts(BaseModel):
    """Texts to embed (JSON)."""

    model: str = Field(min_length=1, description="a model spec from GET /v1/models")
    input: str | list[str] = Field(description="one text or a list of texts")


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]


class Usage(BaseModel):
    inputs: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    model: str
    modality: Modality
    dim: int
    data: list[Embedding]
    usage: Usage


# -- predict --------------------------------------------------------------------------------
class Answer(BaseModel):
    label: str
    prob: float
    rank: int


class ModelAnswer(BaseModel):
    model: str
    images: list[list[Answer]] | None = Field(None, description="top answers for each image")
    texts: list[list[Answer]] | None = Field(None, description="top answers for each text")
    latency_ms: float | None = None
    load_ms: float | None = None
    error: str | None = Field(None, description="one line when this model could not answer")
    warnings: list[str] = Field(default_factory=list)
    score: str | None = Field(None, description="how cosines became probabilities")


class PredictInput(BaseModel):
    index: int
    kind: Modality
    name: str | None = None


class Prediction(BaseModel):
    labels: list[str]
    inputs: list[PredictInput]
    predictions: list[ModelAnswer]


# -- jobs -----------------------------------------------------------------------------------
class EmbedJobRequest(BaseModel):
    dataset: str = Field(min_length=1, description="a dataset spec, e.g. demo:digits")
    model: str = Field(min_length=1, description="a model spec from GET /v1/models")
    modality: Modality | None = Field(None, description="image or text (default: images first)")


class JobProgress(BaseModel):
    done: int | None = None
    total: int | None = None
    rate: float | None = None
    eta_s: float | None = None


class Job(BaseModel):
    id: str
    kind: Literal["embed"]
    dataset: str
    model: str
    modality: Modality | None = None
    status: Literal["queued", "running", "done", "failed"]
    created: float
    updated: float
    progress: JobProgress
    stage: str | None = None
    result: dict[str, Any] | None = Field(None, description="what `embed --json` prints")
    error: str | None = None
    resumed: int | None = None
    estimate_bytes: int | None = Field(None, description="the vectors' size, estimated")


# -- search ---------------------------------------------------------------------------------
class SearchText(BaseModel):
    """A text query (JSON)."""

    dataset: str = Field(min_length=1)
    model: str = Field(min_length=1)
    query: str = Field(min_length=1, description="what to look for")
    k: int = Field(SEARCH.k, ge=1, le=SEARCH.max_k, description="how many results")


class SearchHit(BaseModel):
    index: int
    id: str
    label: str | None = None
    score: float


class SearchResults(BaseModel):
    dataset: str
    model: str
    query_kind: Modality
    index: str = Field(description="exact, or ivf (an inverted-file index) on large datasets")
    n: int
    results: list[SearchHit]
    warnings: list[str] = Field(description="query words the model does not know")
    ms: float


# -- maps -----------------------------------------------------------------------------------
class MapCoords(BaseModel):
    dataset: str
    model: str
    method: str
    key: str
    n: int
    id: list[str]
    label: list[str | None]
    x: list[float]
    y: list[float]


# -- findings -------------------------------------------------------------------------------
class FindingsRequest(BaseModel):
    """What to look for problems in (JSON): a dataset embedded with one or more models."""

    dataset: str = Field(min_length=1, description="a dataset spec, e.g. demo:digits")
    models: list[str] = Field(
        min_length=1, max_length=8, description="model specs whose vectors are finished"
    )
    label_column: str | None = Field(
        None, description="a metadata column holding the labels (default: the dataset's labels)"
    )
    split_column: str | None = Field(
        None, description="the column leaks cross (default: `split` when the dataset has one)"
    )
    cached_only: bool = Field(
        False, description="answer only findings already computed (404 `not_computed` if none)"
    )
    k: int = Field(FINDINGS.k, ge=2, le=200, description="neighbours per item")
    label_k: int = Field(FINDINGS.label_k, ge=2, le=200)
    outlier_k: int = Field(FINDINGS.outlier_k, ge=2, le=200)
    seed: int = Field(FINDINGS.seed, ge=0, le=2**31 - 1)


class LabelErrorFinding(BaseModel):
    row: int = Field(description="the dataset's row index")
    label: str
    suggested: str
    score: float
    models: list[str] = Field(description="the models that flag it on their own")


class DuplicateFinding(BaseModel):
    rows: list[int]
    exact: bool
    models: list[str]


class OutlierFinding(BaseModel):
    row: int
    score: float
    models: list[str] = Field(description="the models that flag it (empty: ranked only)")


class LeakFinding(BaseModel):
    rows: list[int]
    splits: list[str]
    models: list[str]
    exact: bool | None = None


class ClusterFinding(BaseModel):
    name: str
    rows: list[int]


class FindingsResult(BaseModel):
    """What `python -m engine findings --json` prints: every finding, the models that see it,
    each model's own (`per_model`) and the settings (`dataset`, columns, `key`, `params`)."""

    model_config = {"extra": "allow"}

    n: int
    models: list[str]
    label_errors: list[LabelErrorFinding]
    duplicates: list[DuplicateFinding]
    outliers: list[OutlierFinding] = Field(description="most outlying first")
    leaks: list[LeakFinding]
    clusters: dict[str, list[ClusterFinding]] = Field(description="model spec -> its clusters")
    per_model: dict[str, dict[str, Any]] = Field(default_factory=dict)
