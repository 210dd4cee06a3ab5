"""Tables, figures and small parsers for the Compare page (pure functions, no Streamlit).

Everything here takes the engine's result objects (a prediction, a comparison report, trained
heads, a dataset: typed ``Any`` here, they come through ``engine.workspace.Workspace``) and
returns pandas frames, plotly figures, bytes or plain values, so the page stays a thin layer of
widgets and every number it shows can be unit-tested.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dashboard import keys

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from PIL import Image

# The engine's result types, as this module reads them (attributes named in each docstring).
ComparisonReport = Any
HeadResult = Any
ModelPrediction = Any
Dataset = Any

# The Map page clears its selection when the stored fingerprint differs from the current
# dataset's, so the rows, their source and the fingerprint are set together.
MAP_SOURCE = "compare"

THUMB_PX = 48  # disagreement-table thumbnails
MAX_THUMBS = 200  # rows of the disagreement table that get a thumbnail (payload bound)
_SPLIT = re.compile(r"[,\n]")


# -- parsing user input -------------------------------------------------------------------------
def parse_list(text: str | None) -> list[str]:
    """Comma- or newline-separated items, stripped, empty ones dropped, first occurrence kept."""
    items = [x.strip() for x in _SPLIT.split(text or "")]
    return list(dict.fromkeys(x for x in items if x))


def parse_templates(text: str | None) -> list[str]:
    """One prompt template per line (commas are part of a template), blank lines dropped."""
    lines = [x.strip() for x in (text or "").splitlines()]
    return list(dict.fromkeys(x for x in lines if x))


def parse_texts(text: str | None) -> list[str]:
    """One input text per line, blank lines dropped (duplicates kept: they are separate inputs)."""
    return [x.strip() for x in (text or "").splitlines() if x.strip()]


def dataset_label_names(labels: Iterable[Any]) -> list[str]:
    """The distinct label strings of a dataset, in natural order ("2" before "10")."""
    names = {str(x) for x in labels if x is not None and str(x).strip()}
    return sorted(names, key=_natural_key)


def _natural_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value.lower())


def prediction_model_options(
    known: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()
) -> list[str]:
    """Specs that can score labels: a text tower is needed (CLIP-like or text models).

    ``known`` is ``engine.models.known_models()``; ``extra`` (the session's models) is kept
    unless the registry says it has no text tower.
    """
    out = [m["spec"] for m in known if "text" in (m.get("modalities") or ())]
    mods = {m["spec"]: set(m.get("modalities") or ()) for m in known}
    for spec in extra:
        if spec not in mods or "text" in mods[spec]:
            out.append(spec)
    return list(dict.fromkeys(out))


# -- predictions on uploads ---------------------------------------------------------------------
@dataclass(frozen=True)
class InputItem:
    """One thing to classify: an uploaded image (by file name) or a typed text."""

    kind: str  # "image" or "text"
    name: str


def inputs_of(image_names: Sequence[str], texts: Sequence[str]) -> list[InputItem]:
    """Inputs in the order the engine answers them: every image, then every text."""
    return [InputItem("image", n) for n in image_names] + [InputItem("text", t) for t in texts]


def answers_for(pred: ModelPrediction, inputs: Sequence[InputItem]) -> list[list | None]:
    """One top-k list (or None where this model gave no answer) per input, in input order."""
    images = [i for i in inputs if i.kind == "image"]
    texts = [i for i in inputs if i.kind == "text"]
    out: list[list | None] = []
    for items, answers in ((images, pred.images), (texts, pred.texts)):
        for j in range(len(items)):
            out.append(answers[j] if answers is not None and j < len(answers) else None)
    return out


TIE_DECIMALS = 4  # probabilities equal to 4 decimals (0.01 %: what the page shows) are tied


def shared_ranks(probabilities: Sequence[float]) -> list[int]:
    """Competition ranks of probabilities sorted best first: tied answers share one rank
    (three labels at 33.33 % are all rank 1, the next is rank 4), so no tie looks ordered."""
    ranks: list[int] = []
    for i, p in enumerate(probabilities):
        tied = i > 0 and round(float(p), TIE_DECIMALS) == round(
            float(probabilities[i - 1]), TIE_DECIMALS
        )
        ranks.append(ranks[-1] if tied else i + 1)
    return ranks


def topk_frame(top: Sequence[tuple[str, float, int]] | None) -> pd.DataFrame:
    """``rank``, ``label``, ``probability`` of one input's top-k (best first); tied answers
    share their rank."""
    items = list(top or [])
    ranks = shared_ranks([p for _, p, _ in items])
    rows = [
        {"rank": rank, "label": str(lab), "probability": float(p)}
        for (lab, p, _), rank in zip(items, ranks, strict=True)
    ]
    return pd.DataFrame(rows, columns=["rank", "label", "probability"])


def predictions_frame(
    preds: Sequence[ModelPrediction], inputs: Sequence[InputItem]
) -> pd.DataFrame:
    """Long table: one row per (input, model, rank), plus each model's timing and error (an
    input a model did not answer is one row with no rank; tied answers share a rank)."""
    columns = [
        "input",
        "kind",
        "model",
        "rank",
        "label",
        "probability",
        "latency_ms",
        "load_ms",
        "error",
    ]
    rows: list[dict[str, Any]] = []
    for pred in preds:
        for item, top in zip(inputs, answers_for(pred, inputs), strict=True):
            base = {
                "input": item.name,
                "kind": item.kind,
                "model": pred.model,
                "latency_ms": pred.latency_ms,
                "load_ms": pred.load_ms,
                "error": pred.error or "",
            }
            if not top:
                rows.append({**base, "rank": None, "label": "", "probability": None})
                continue
            ranks = shared_ranks([p for _, p, _ in top])
            for (lab, p, _), rank in zip(top, ranks, strict=True):
                rows.append({**base, "rank": rank, "label": lab, "probability": float(p)})
    frame = pd.DataFrame(rows, columns=columns)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def timing_frame(preds: Sequence[ModelPrediction]) -> pd.DataFrame:
    """One row per model: load and inference time (ms), and its one-line error if any."""
    return pd.DataFrame(
        [
            {
                "model": p.model,
                "load_ms": p.load_ms,
                "latency_ms": p.latency_ms,
                "error": p.error or "",
            }
            for p in preds
        ],
        columns=["model", "load_ms", "latency_ms", "error"],
    )


def thumbnail_of(image: Image.Image, box: int = 160) -> Image.Image:
    """A copy of an uploaded image that fits in ``box`` x ``box`` pixels (the upload is kept)."""
    small = image.copy()
    small.thumbnail((box, box))
    return small


# -- comparison tables --------------------------------------------------------------------------
METRIC_COLUMNS = [
    "model",
    "modality",
    "n",
    "dim",
    "knn_accuracy",
    "linear_probe_accuracy",
    "zero_shot_accuracy",
    "failed",
    "error",
]


def metrics_frame(report: ComparisonReport) -> pd.DataFrame:
    """One row per model: kNN / linear-probe / zero-shot accuracy (fractions), n, dim."""
    rows = []
    for m in report.models:
        probe = m.get("linear_probe") or {}
        zs = m.get("zero_shot") or {}
        rows.append(
            {
                "model": m["model"],
                "modality": m.get("modality"),
                "n": m.get("n"),
                "dim": m.get("dim"),
                "knn_accuracy": m.get("knn_accuracy"),
                "linear_probe_accuracy": probe.get("accuracy"),
                "zero_shot_accuracy": zs.get("accuracy"),
                "failed": m.get("failed") or 0,
                "error": m.get("error") or "",
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def ok_models(report: ComparisonReport) -> list[str]:
    return [m["model"] for m in report.models if not m.get("error")]


def per_class_frame(report: ComparisonReport) -> pd.DataFrame:
    """``class`` plus one accuracy column per model (the source of its confusion matrix:
    linear-probe test rows, or zero-shot for a model without a probe)."""
    classes: list[str] = []
    for m in report.models:
        for c in m.get("classes") or []:
            if c not in classes:
                classes.append(c)
    frame = pd.DataFrame({"class": classes})
    for m in report.models:
        if m.get("error") or not m.get("per_class"):
            continue
        per = m["per_class"]
        frame[m["model"]] = [per.get(c) for c in classes]
    return frame


def per_class_figure(frame: pd.DataFrame, height: int = 380) -> go.Figure:
    """Grouped bars: accuracy per class, one colour per model."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for model in [c for c in frame.columns if c != "class"]:
        fig.add_trace(
            go.Bar(
                x=frame["class"].astype(str),
                y=frame[model].astype(float),
                name=model,
                hovertemplate="class %{x}<br>accuracy %{y:.1%}<extra>" + model + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        height=height,
        yaxis={"title": "accuracy", "range": [0, 1], "tickformat": ".0%"},
        xaxis={"title": "class", "type": "category"},
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def confusion_frame(report: ComparisonReport, model: str) -> pd.DataFrame:
    """The model's confusion matrix, rows = true class, columns = predicted class."""
    m = report.metric(model)
    classes = [str(c) for c in m.get("classes") or []]
    z = np.asarray(m.get("confusion") or np.zeros((len(classes), len(classes))), dtype=np.int64)
    frame = pd.DataFrame(z, index=classes, columns=classes)
    frame.index.name = "true"
    frame.columns.name = "predicted"
    return frame


def confusion_source(report: ComparisonReport, model: str) -> str | None:
    src = report.metric(model).get("confusion_source")
    return {"linear_probe": "linear-probe test split", "zero_shot": "zero-shot, all rows"}.get(
        src, src
    )


def _annotate(n_cells: int) -> bool:
    return n_cells <= 30 * 30


def confusion_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Heatmap of a confusion frame (counts written in the cells while they stay readable)."""
    import plotly.graph_objects as go

    z = frame.to_numpy()
    classes = [str(c) for c in frame.columns]
    trace = go.Heatmap(
        z=z,
        x=classes,
        y=[str(c) for c in frame.index],
        colorscale="Blues",
        hovertemplate="true %{y}<br>predicted %{x}<br>%{z} items<extra></extra>",
        colorbar={"title": {"text": "items"}},
    )
    if _annotate(z.size):
        trace.update(texttemplate="%{z}")
    fig = go.Figure(trace)
    side = min(720, 160 + 28 * len(classes))
    fig.update_layout(
        title=title,
        height=side,
        xaxis={"title": "predicted", "type": "category", "side": "bottom"},
        yaxis={"title": "true", "type": "category", "autorange": "reversed"},
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
    )
    return fig


def pairwise_frame(report: ComparisonReport, metric: str) -> pd.DataFrame:
    """Symmetric model x model frame of ``metric`` ("cka" or "knn_overlap")."""
    return report.pairwise_matrix(metric)


def pairwise_long_frame(report: ComparisonReport) -> pd.DataFrame:
    """One row per model pair: ``a``, ``b``, ``cka``, ``knn_overlap`` (the CSV download)."""
    return pd.DataFrame(
        [
            {"a": p["a"], "b": p["b"], "cka": p["cka"], "knn_overlap": p["knn_overlap"]}
            for p in report.pairwise
        ],
        columns=["a", "b", "cka", "knn_overlap"],
    )


def short_name(spec: str, width: int = 28) -> str:
    """A model spec short enough for an axis label (the tail of a long local path)."""
    return spec if len(spec) <= width else "…" + spec[-(width - 1) :]


def pairwise_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Heatmap of a model x model similarity in [0, 1], values written in the cells."""
    import plotly.graph_objects as go

    names = [short_name(str(c)) for c in frame.columns]
    z = frame.to_numpy(dtype=np.float64)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            zmin=0.0,
            zmax=1.0,
            colorscale="Viridis",
            texttemplate="%{z:.3f}",
            customdata=np.array(
                [[[a, b] for b in frame.columns] for a in frame.index], dtype=object
            ),
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<br>%{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        height=min(600, 220 + 60 * len(names)),
        xaxis={"type": "category"},
        yaxis={"type": "category", "autorange": "reversed"},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


# -- disagreements ------------------------------------------------------------------------------
def prediction_sources(report: ComparisonReport) -> list[str]:
    """Prediction sources every compared model has ("knn"; "zero_shot" if all are CLIP-like)."""
    per_model = [set(p) for p in report.predictions.values()]
    if not per_model:
        return []
    common = set.intersection(*per_model)
    return [s for s in ("knn", "zero_shot") if s in common]


def rows_for_ids(dataset_ids: Sequence[str], ids: Iterable[str]) -> np.ndarray:
    """Dataset row indices of ``ids`` (ids not in the dataset are dropped), as int64."""
    position = {str(x): i for i, x in enumerate(dataset_ids)}
    return np.asarray([position[i] for i in map(str, ids) if i in position], dtype=np.int64)


def image_data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def thumbnail_urls(
    dataset: Dataset, rows: Sequence[int], workspace: Any, size: int = THUMB_PX
) -> list[str | None]:
    """Small PNG data URLs of the items at ``rows`` (``Workspace.thumbnails``; sheets not yet
    built are not built for this: only the listed items are decoded)."""
    if not getattr(dataset, "has_images", False) or len(rows) == 0:
        return [None] * len(rows)
    images = workspace.thumbnails(dataset, [int(r) for r in rows], size=size)
    return [image_data_url(im) for im in images]


def disagreement_frame(
    report: ComparisonReport,
    dataset: Dataset,
    source: str = "knn",
    workspace: Any = None,
    max_thumbs: int = MAX_THUMBS,
) -> pd.DataFrame:
    """The engine's disagreement table plus the dataset ``row`` of each item, a ``thumbnail``
    data URL (first ``max_thumbs`` rows) and the item's ``text`` when the dataset has texts."""
    table = report.disagreements(source).copy()
    rows = rows_for_ids(dataset.ids, table["id"])
    if len(rows) != len(table):  # an id no longer in the dataset: keep the rows we can place
        keep = table["id"].astype(str).isin(set(map(str, dataset.ids)))
        table = table[keep].reset_index(drop=True)
    table.insert(0, "row", rows)
    if getattr(dataset, "has_images", False) and workspace is not None:
        urls = thumbnail_urls(dataset, rows[:max_thumbs].tolist(), workspace)
        table.insert(2, "thumbnail", urls + [None] * (len(table) - len(urls)))
    if dataset.texts is not None:  # the item itself, beside its id (not past the last column)
        where = 3 if "thumbnail" in table.columns else 2
        table.insert(where, "text", [dataset.texts[int(r)] for r in rows])
    return table


def map_selection_state(rows: Sequence[int], fingerprint: str) -> dict[str, Any]:
    """Session-state entries that make the Map page select ``rows`` of this dataset."""
    r = np.unique(np.asarray(rows, dtype=np.int64))
    return {
        keys.MAP_ROWS: r,
        keys.MAP_SELECTION_SOURCE: MAP_SOURCE,
        keys.MAP_SELECTION_DATASET: fingerprint,
    }


# -- fusion heads -------------------------------------------------------------------------------
HEAD_COLUMNS = [
    "variant",
    "accuracy",
    "val_accuracy",
    "epochs",
    "best_epoch",
    "mean_gate",
    "seconds",
    "cached",
    "path",
]


def heads_frame(results: Mapping[str, HeadResult]) -> pd.DataFrame:
    """One row per trained variant: held-out accuracy, validation accuracy, epochs, path."""
    rows = []
    for variant, r in results.items():
        j = r.to_json()
        rows.append({c: j.get(c) for c in HEAD_COLUMNS} | {"variant": variant})
    return pd.DataFrame(rows, columns=HEAD_COLUMNS)


# -- export -------------------------------------------------------------------------------------
def to_csv_bytes(frame: pd.DataFrame, index: bool = False) -> bytes:
    """UTF-8 CSV of ``frame`` (thumbnail data URLs are dropped: they are not data)."""
    out = frame.drop(columns=[c for c in ("thumbnail",) if c in frame.columns])
    return out.to_csv(index=index).encode("utf-8")
