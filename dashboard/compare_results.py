"""The Compare page's results, drawn: predictions side by side, a comparison report, heads.

Tables and figures come from ``dashboard.compare_view`` (pure functions); this module lays them
out with their downloads. ``pages/compare.py`` keeps the controls and calls the engine.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import compare_view as cv
from dashboard import honesty, item_view, keys, state, ui
from engine.params import PredictParams

TAB_PREDICT = "Predictions on uploads"
PERCENT = st.column_config.NumberColumn(format="percent")
PROB = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")


def download(frame: pd.DataFrame, name: str, key: str, index: bool = False) -> None:
    st.download_button(
        "Download CSV",
        data=cv.to_csv_bytes(frame, index=index),
        file_name=name,
        mime="text/csv",
        icon=":material/download:",
        key=key,
    )


def _shown(value: Any, fmt: str | None) -> str:
    if pd.isna(value):
        return "–"
    if fmt == "percent":
        return f"{float(value):.1%}"
    if fmt and "%" in fmt:
        return fmt % float(value)
    return str(value)


def numbers(**columns: tuple[str, str]) -> dict[str, Any]:
    """Number columns of a result table from ``name=(label, format)``."""
    return {
        name: st.column_config.NumberColumn(label, format=fmt)
        for name, (label, fmt) in columns.items()
    }


def show_table(frame: pd.DataFrame, key: str, columns: dict[str, Any]) -> None:
    """A result table as every section draws it: full width, no index, named columns. A
    missing number (a metric a model does not have) reads "–", never "None"."""
    shown, config = frame.copy(), dict(columns)
    for col in shown.columns:
        if not shown[col].isna().any():
            continue
        spec = config.get(col) or {}
        fmt = (spec.get("type_config") or {}).get("format")
        shown[col] = [_shown(v, fmt) for v in shown[col]]
        config[col] = st.column_config.TextColumn(spec.get("label") or str(col))
    st.dataframe(shown, hide_index=True, width="stretch", key=key, column_config=config)


def predict_with_status(
    specs: list[str],
    images: list[Any],
    names: list[str],
    texts: list[str],
    labels: list[str],
    params: PredictParams,
    fusion: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every model's answer (``Workspace.predict``: one loop for every door), with a status
    line per model; the fusion heads' answer after them."""
    ws = state.workspace()
    n_inputs = len(images) + len(texts)
    with st.status(
        f"Classifying {n_inputs} input(s) with {len(specs)} model(s)…", expanded=True
    ) as status:
        bar = st.progress(0.0)

        def step(i: int, spec: str, stage: str, pred: Any) -> None:
            if stage != "done":
                bar.progress(i / max(1, len(specs)), text=f"{spec}: {stage}…")
            elif pred.error and pred.error.startswith("cannot load"):
                st.text(f"{spec}: could not be loaded")
            else:
                st.text(f"{spec}: " + (pred.error or f"{pred.latency_ms:.0f} ms"))

        preds: list[Any] = []
        scales: dict[str, str] = {}
        if specs:
            run = ws.predict(specs, labels, images=images, texts=texts, params=params, on_step=step)
            preds, scales = list(run.preds), dict(run.scales)
        if fusion is not None:
            heads = ws.predict_with_heads(
                fusion["results"],
                f"fusion heads · {fusion['dataset']}",
                fusion["image_model"],
                fusion["text_model"],
                images=images,
                texts=texts,
                top_k=params.top_k,
            )
            preds.append(heads)
        bar.progress(1.0, text="done")
        status.update(label=f"Classified {n_inputs} input(s)", state="complete", expanded=False)
    return {
        "inputs": cv.inputs_of(names, texts),
        "thumbs": [cv.thumbnail_of(image) for image in images],
        "preds": preds,
        "scales": scales,
        "labels": labels,
        "templates": list(params.templates if params.ensemble else params.templates[:1]),
    }


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def show_predictions(result: dict[str, Any]) -> None:
    preds, inputs = result["preds"], result["inputs"]
    st.caption(
        f"{len(result['labels'])} candidate label(s) · prompt(s): "
        + " | ".join(f"“{ui.plain(t)}”" for t in result["templates"][:6])
        + (" …" if len(result["templates"]) > 6 else "")
    )
    # one line per cause, not one per model and consequence (unknown words -> alike -> chance)
    honesty.warnings_banner(honesty.by_cause({p.model: p.warnings or [] for p in preds}))
    widths = [1.2] + [2] * len(preds)
    head = st.columns(widths)
    head[0].markdown("**Input**")
    for col, p in zip(head[1:], preds, strict=True):
        with col:
            st.markdown(f"**{ui.plain(p.model)}**")
            rule = result.get("scales", {}).get(p.model)
            st.caption(
                f"inference {fmt_ms(p.latency_ms)} · load {fmt_ms(p.load_ms)}"
                + (f" · {rule}" if rule else "")
            )
            if p.error:
                st.error(ui.plain(p.error), icon=":material/error:")
    answers = [cv.answers_for(p, inputs) for p in preds]
    image_no = 0
    for idx, item in enumerate(inputs):
        st.divider()
        row = st.columns(widths)
        if item.kind == "image":
            row[0].image(result["thumbs"][image_no], caption=ui.plain(item.name), width=140)
            image_no += 1
        else:
            row[0].markdown(f"> {ui.plain(item.name)}")
        for j in range(len(preds)):
            top = answers[j][idx]
            if top:
                row[j + 1].dataframe(
                    cv.topk_frame(top),
                    hide_index=True,
                    width="stretch",
                    column_config={"probability": PROB},
                    key=f"cmp_top_{idx}_{j}",
                )
            else:
                row[j + 1].caption("no answer")
    st.divider()
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Timing per model**")
        timing = cv.timing_frame(preds)
        show_table(
            timing,
            "cmp_timing",
            {
                "model": st.column_config.TextColumn("model", width="medium"),
                **numbers(load_ms=("load (ms)", "%.1f"), latency_ms=("inference (ms)", "%.1f")),
            },
        )
        download(timing, "parallax-model-timing.csv", "cmp_dl_timing")
    with c2:
        st.markdown("**All predictions**")
        st.caption("One row per input, model and rank (the CSV below).")
        download(cv.predictions_frame(preds, inputs), "parallax-predictions.csv", "cmp_dl_preds")


def show_report(report: Any, ds: Any) -> None:
    how = "from the cache" if report.cached else f"computed in {report.seconds:.1f} s"
    st.caption(
        f"{report.n_used:,} of {report.n_total:,} items compared ({report.n_labelled:,} "
        f"labelled), {how} · `compare/{report.key[:12]}…json`"
    )
    honesty.warnings_banner(report.warnings())
    for m in report.models:
        if m.get("error"):
            st.error(ui.plain(f"{m['model']}: {m['error']}"), icon=":material/error:")
        for note in m.get("notes") or []:
            st.caption(ui.plain(f"{m['model']}: {note}"))

    st.subheader("Accuracy per model")
    metrics = cv.metrics_frame(report)
    show_table(
        metrics,
        "cmp_metrics",
        numbers(
            knn_accuracy=(f"kNN (k={report.params['k']})", "percent"),
            linear_probe_accuracy=("linear probe", "percent"),
            zero_shot_accuracy=("zero-shot", "percent"),
        ),
    )
    st.caption(
        "kNN: leave-one-out vote of the k nearest items (cosine). Linear probe: logistic "
        "regression scored on a held-out 25% split. Zero-shot: CLIP-like models only, labels "
        "as prompts."
    )
    download(metrics, "parallax-compare-metrics.csv", "cmp_dl_metrics")
    ok = cv.ok_models(report)
    if not ok:
        return

    st.subheader("Accuracy per class")
    per_class = cv.per_class_frame(report)
    if len(per_class.columns) > 1:
        st.plotly_chart(cv.per_class_figure(per_class), key="cmp_per_class_chart")
        with st.expander("As a table"):
            show_table(
                per_class,
                "cmp_per_class",
                {m: PERCENT for m in per_class.columns if m != "class"},
            )
        download(per_class, "parallax-per-class.csv", "cmp_dl_per_class")
    else:
        st.caption("No per-class accuracy (no supervised metrics).")

    st.subheader("Confusion matrix")
    with_cm = [m for m in ok if report.metric(m).get("confusion")]
    if with_cm:
        cm_model = st.selectbox("Model", with_cm, key="cmp_cm_model")
        frame = cv.confusion_frame(report, cm_model)
        st.plotly_chart(cv.confusion_figure(frame), key="cmp_confusion_chart")
        st.caption(
            f"Rows: true class; columns: predicted ({cv.confusion_source(report, cm_model)})."
        )
        download(frame, "parallax-confusion.csv", "cmp_dl_confusion", index=True)

    if len(ok) >= 2:
        st.subheader("How alike are the models?")
        p1, p2 = st.columns(2)
        p1.plotly_chart(
            cv.pairwise_figure(cv.pairwise_frame(report, "cka"), "linear CKA"),
            key="cmp_cka_chart",
        )
        p2.plotly_chart(
            cv.pairwise_figure(
                cv.pairwise_frame(report, "knn_overlap"),
                f"mean {report.params['k']}-NN overlap",
            ),
            key="cmp_overlap_chart",
        )
        st.caption(
            "CKA: do the two spaces share their geometry (1 = the same up to rotation and scale)? "
            "kNN overlap: the share of each item's nearest neighbours both models agree on."
        )
        download(cv.pairwise_long_frame(report), "parallax-pairwise.csv", "cmp_dl_pairwise")

    st.subheader("Where the models disagree")
    sources = cv.prediction_sources(report)
    if len(ok) < 2 or not sources:
        st.caption("Disagreements need two models with predictions.")
        return
    source = sources[0]
    if len(sources) > 1:
        source = (
            st.segmented_control(
                "Predictions from",
                sources,
                default=sources[0],
                key="cmp_dis_source",
                format_func=lambda s: {"knn": "kNN vote", "zero_shot": "zero-shot"}[s],
            )
            or sources[0]
        )
    memo = st.session_state.setdefault(keys.CMP_DISAGREE_CACHE, {})
    memo_key = (report.key, source, ds.fingerprint())
    if memo_key not in memo:
        with st.spinner("Preparing thumbnails…"):
            memo.clear()  # keep only the current table
            memo[memo_key] = cv.disagreement_frame(report, ds, source, state.workspace())
    table = memo[memo_key]
    if table.empty:
        st.success("The models agree on every compared item.", icon=":material/check:")
        return
    st.caption(
        f"{len(table):,} items on which the models' predictions differ, fewest correct first. "
        "Click a column to sort; tick rows to send only those to the Map."
    )
    config: dict[str, Any] = numbers(row=("row", "%d"))
    if "thumbnail" in table.columns:
        config["thumbnail"] = st.column_config.ImageColumn("item", width="small")
    if "text" in table.columns:
        config["text"] = st.column_config.TextColumn("text", width="large")
    event = st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=380,
        column_config=config,
        on_select="rerun",
        selection_mode="multi-row",
        key="cmp_disagreements",
    )
    picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    rows = table["row"].to_numpy()[picked] if picked else table["row"].to_numpy()
    d1, d2 = st.columns([1, 2])
    with d1:
        download(table, "parallax-disagreements.csv", "cmp_dl_disagreements")
    label = f"Show {'these ' + str(len(rows)) if picked else 'all ' + str(len(rows))} on the Map"
    if d2.button(label, icon=":material/scatter_plot:", key="cmp_to_map"):
        for k, v in cv.map_selection_state(rows, ds.fingerprint()).items():
            st.session_state[k] = v
        switch_to_map(len(rows))
    if len(picked) == 1:  # one ticked row: that item in detail, under every compared model
        entries = item_view.report_entries(report, ds)
        item_view.show_item(ds, int(rows[0]), entries, key="cmp_item")


def switch_to_map(n: int) -> None:
    from streamlit.errors import StreamlitAPIException

    try:
        st.switch_page(ui.page_file("map.py"))
    except StreamlitAPIException:  # the page runs outside the app's navigation (tests)
        st.success(f"{n:,} item(s) are now selected on the Map page.", icon=":material/check:")
        ui.page_link("map.py", "Open the Map page", ":material/scatter_plot:")


def show_heads(fusion: dict[str, Any]) -> None:
    """The trained heads: held-out accuracy per variant, the CSV, and where they are saved."""
    st.markdown(
        f"**Held-out accuracy** · images: {ui.plain(fusion['image_model'])} · texts: "
        f"{ui.plain(fusion['text_model'])}"
    )
    heads = cv.heads_frame(fusion["results"])
    show_table(
        heads,
        "cmp_heads",
        numbers(
            accuracy=("held-out accuracy", "percent"),
            val_accuracy=("validation", "percent"),
            mean_gate=("mean gate (image share)", "%.3f"),
            seconds=("seconds", "%.1f"),
        ),
    )
    download(heads, "parallax-fusion-heads.csv", "cmp_dl_heads")
    st.markdown("**Saved heads** (safetensors + JSON sidecar)")
    for variant, r in fusion["results"].items():
        st.code(f"{variant}: {r.path}", language=None)
    st.caption(
        f"The image and text heads can also label your uploads in the first tab ({TAB_PREDICT})."
    )
