"""Compare: several models side by side on your own inputs, on the current dataset, and fused.

* Predictions on uploads: zero-shot labels for uploaded images and typed texts, one column per
  model, with each model's latency and load time; a model that fails shows its reason.
* Dataset comparison: kNN / linear-probe / zero-shot accuracy of the models already embedded,
  per-class accuracy, confusion matrices, CKA and kNN-overlap between models, and the items on
  which they disagree (which can be sent to the Map page's selection).
* Fusion classifier: small heads trained on cached image and text vectors (image / text /
  concat / gated), with their held-out accuracy.

The work is the engine's (``engine.zeroshot``, ``engine.compare``, ``engine.fusion``); the tables
and figures come from ``dashboard.compare_view``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import compare_view as cv
from dashboard import keys, projections, resources, state, ui
from engine.compare import comparison_key
from engine.errors import ParallaxError
from engine.params import COMPARE, HEADS, PREDICT, CompareParams, PredictParams

TAB_PREDICT = "Predictions on uploads"
TAB_DATASET = "Dataset comparison"
TAB_FUSION = "Fusion classifier"
TABS = [TAB_PREDICT, TAB_DATASET, TAB_FUSION]
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
TYPED = "Type them"
FROM_DATASET = "The current dataset's labels"
MAX_COMPARE_MODELS = 6
SHAPES_CLIP_DIR = state.REPO_ROOT / "models" / "shapes-clip"

K_PRED_RESULT = keys.CMP_PRED_RESULT
K_REPORT = keys.CMP_REPORT
K_FUSION = keys.CMP_FUSION
K_DISAGREE_CACHE = keys.CMP_DISAGREE_CACHE

PERCENT = st.column_config.NumberColumn(format="percent")
PROB = st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")


class StageProgressBar(ui.ProgressBar):
    """``ui.ProgressBar`` whose text names the engine's current stage (embed, compare, train)."""

    def __call__(self, p: Any) -> None:
        self.label = p.stage or self.label
        super().__call__(p)


def download(frame: pd.DataFrame, name: str, key: str, index: bool = False) -> None:
    st.download_button(
        "Download CSV",
        data=cv.to_csv_bytes(frame, index=index),
        file_name=name,
        mime="text/csv",
        icon=":material/download:",
        key=key,
    )


def registry() -> list[dict[str, Any]]:
    try:
        return resources.known_models()
    except Exception:  # the catalogue only fills the menus: typed specs still work without it
        return []


def open_current_dataset() -> Any:
    spec = state.dataset_spec()
    ds = None
    with ui.guard(f"Opening {spec}"):
        ds = resources.get_dataset(spec)
    if ds is None:
        ui.page_link("data.py", "Choose another dataset", ":material/dataset:")
    return ds


def load_models(specs: list[str]) -> tuple[list[Any], list[str]]:
    """(loaded models, one-line errors) for ``specs``; every model is tried."""
    models, errors = [], []
    for spec in specs:
        try:
            models.append(state.get_model(spec))
        except Exception as exc:  # one broken spec must not stop the others
            errors.append(ui.error_line(exc, f"Loading {spec}"))
    return models, errors


# ================================================================ 1. predictions on uploads
def shapes_clip_spec(known: list[dict[str, Any]]) -> str | None:
    """The demo shapes CLIP shipped in models/shapes-clip (its alias when registered)."""
    for m in known:
        if m["spec"] == "demo:shapes-clip":
            return m["spec"]
    if (SHAPES_CLIP_DIR / "open_clip_config.json").is_file():
        return f"open_clip:local-dir:{SHAPES_CLIP_DIR}"
    return None


def run_predictions(
    specs: list[str],
    images: list[Any],
    names: list[str],
    texts: list[str],
    labels: list[str],
    params: PredictParams,
    fusion: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every model's answer (``engine.predict``), with a status line per model."""
    from engine.predict import fusion_prediction, predict_each

    n_inputs = len(images) + len(texts)
    with st.status(
        f"Classifying {n_inputs} input(s) with {len(specs)} model(s)…", expanded=True
    ) as status:
        bar = st.progress(0.0)

        def step(i: int, spec: str, stage: str, pred: Any) -> None:
            if stage != "done":
                bar.progress(i / max(1, len(specs)), text=f"{spec}: {stage}…")
            elif pred.error and pred.error.startswith("cannot load"):
                st.write(f"{spec}: could not be loaded")
            else:
                st.write(f"{spec}: " + (pred.error or f"{pred.latency_ms:.0f} ms"))

        run = predict_each(
            specs, images, texts, labels, params=params, load=state.get_model, on_step=step
        )
        if fusion is not None:
            heads = fusion_prediction(
                fusion["results"],
                f"fusion heads · {fusion['dataset']}",
                fusion["image_model"],
                fusion["text_model"],
                images,
                texts,
                params.top_k,
                load=state.get_model,
            )
            run.preds.append(heads)
        bar.progress(1.0, text="done")
        status.update(label=f"Classified {n_inputs} input(s)", state="complete", expanded=False)
    return {
        "inputs": cv.inputs_of(names, texts),
        "thumbs": [cv.thumbnail_of(image) for image in images],
        "preds": run.preds,
        "scales": run.scales,
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
        + " | ".join(f"`{t}`" for t in result["templates"][:6])
        + (" …" if len(result["templates"]) > 6 else "")
    )
    widths = [1.2] + [2] * len(preds)
    head = st.columns(widths)
    head[0].markdown("**Input**")
    for col, p in zip(head[1:], preds, strict=True):
        with col:
            st.markdown(f"**{p.model}**")
            rule = result.get("scales", {}).get(p.model)
            st.caption(
                f"inference {fmt_ms(p.latency_ms)} · load {fmt_ms(p.load_ms)}"
                + (f" · {rule}" if rule else "")
            )
            if p.error:
                st.error(p.error, icon=":material/error:")
    answers = [cv.answers_for(p, inputs) for p in preds]
    image_no = 0
    for idx, item in enumerate(inputs):
        st.divider()
        row = st.columns(widths)
        if item.kind == "image":
            row[0].image(result["thumbs"][image_no], caption=item.name, width=140)
            image_no += 1
        else:
            row[0].markdown(f"> {item.name}")
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
        st.dataframe(
            timing,
            hide_index=True,
            width="stretch",
            key="cmp_timing",
            column_config={
                "model": st.column_config.TextColumn("model", width="medium"),
                "load_ms": st.column_config.NumberColumn("load (ms)", format="%.1f"),
                "latency_ms": st.column_config.NumberColumn("inference (ms)", format="%.1f"),
            },
        )
        download(timing, "parallax-model-timing.csv", "cmp_dl_timing")
    with c2:
        st.markdown("**All predictions**")
        st.caption("One row per input, model and rank (the CSV below).")
        download(cv.predictions_frame(preds, inputs), "parallax-predictions.csv", "cmp_dl_preds")


def predictions_tab() -> None:
    if state.view_only():
        state.view_only_notice("Predictions need models")
        return
    known = registry()
    st.caption(
        "Zero-shot classification: each label becomes a prompt, and each model scores your "
        "inputs against the prompts in its own space (softmax at the model's own logit scale; "
        "SigLIP's sigmoid is normalised)."
    )
    c1, c2 = st.columns(2)
    files = c1.file_uploader(
        "Images", type=IMAGE_TYPES, accept_multiple_files=True, key="cmp_files"
    )
    texts_raw = c2.text_area(
        "Texts (one per line)", key="cmp_texts", height=110, placeholder="a red circle"
    )
    mode = st.radio("Candidate labels", [TYPED, FROM_DATASET], horizontal=True, key="cmp_lab_mode")
    labels: list[str] = []
    if mode == TYPED:
        labels = cv.parse_list(
            st.text_input("Labels (comma-separated)", key="cmp_labels", placeholder="cat, dog")
        )
    else:
        ds = open_current_dataset()
        if ds is not None:
            labels = cv.dataset_label_names(ds.labels)
            if labels:
                shown = ", ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
                st.caption(f"{len(labels)} labels of {state.dataset_spec()}: {shown}")
            else:
                st.warning(f"{state.dataset_spec()} has no labels: type them instead.")

    extra_specs = list(state.model_specs())
    clip = shapes_clip_spec(known)
    if clip:
        extra_specs.append(clip)
    options = cv.prediction_model_options(known, extra_specs)
    if keys.CMP_MODELS not in st.session_state:
        st.session_state[keys.CMP_MODELS] = [
            s for s in [*state.model_specs(), *([clip] if clip else [])] if s in options
        ][:3]
    st.session_state[keys.CMP_MODELS] = [
        m for m in st.session_state[keys.CMP_MODELS] if m in options
    ]
    m1, m2 = st.columns([3, 2])
    chosen = m1.multiselect(
        "Models (need a text tower: CLIP-like, or a text model for texts)",
        options,
        key=keys.CMP_MODELS,
    )
    typed = cv.parse_list(
        m2.text_input(
            "Other model specs (comma-separated)",
            key="cmp_extra_models",
            placeholder="open_clip:local-dir:PATH, hf:PATH",
        )
    )
    specs = list(dict.fromkeys([*chosen, *typed]))

    with st.expander("Prompt templates and top-k"):
        st.session_state.setdefault(keys.CMP_TEMPLATES, "\n".join(PREDICT.templates))
        templates = cv.parse_templates(
            st.text_area(
                "Templates, one per line ({} stands for the label)",
                key=keys.CMP_TEMPLATES,
                height=150,
            )
        )
        t1, t2 = st.columns(2)
        ensemble = t1.checkbox(
            "Ensemble of templates (average every template; else the first only)",
            PREDICT.ensemble,
            key="cmp_ensemble",
        )
        top_k = int(t2.number_input("Top-k", 1, 50, PREDICT.top_k, key="cmp_topk"))

    fusion = st.session_state.get(K_FUSION)
    use_fusion = False
    if fusion and fusion.get("dataset") == state.dataset_spec():
        use_fusion = st.checkbox(
            f"Add the fusion heads trained on {fusion['dataset']} (image head for images, "
            "text head for texts; their labels are the dataset's)",
            key="cmp_use_fusion",
        )

    if st.button("Predict", type="primary", icon=":material/play_arrow:", key="cmp_predict"):
        with ui.guard("Predicting"):
            from engine.predict import decode_images

            images, names, bad = decode_images((f.name, f.getvalue()) for f in files or [])
            for line in bad:
                st.error(line, icon=":material/broken_image:")
            texts = cv.parse_texts(texts_raw)
            if not images and not texts:
                raise ParallaxError("upload at least one image or type a text to classify")
            if len(images) + len(texts) > cv.MAX_INPUTS:
                raise ParallaxError(f"at most {cv.MAX_INPUTS} inputs at a time")
            if not specs and not use_fusion:
                raise ParallaxError("pick at least one model")
            if specs and not labels:
                raise ParallaxError("give at least one candidate label")
            params = PredictParams(tuple(templates), ensemble, top_k)
            st.session_state[K_PRED_RESULT] = run_predictions(
                specs, images, names, texts, labels, params, fusion if use_fusion else None
            )
    result = st.session_state.get(K_PRED_RESULT)
    if result:
        show_predictions(result)


# ================================================================ 2. dataset comparison
def preferred_order(names: list[str]) -> list[str]:
    pref = state.model_specs()
    return sorted(names, key=lambda s: (s not in pref, pref.index(s) if s in pref else 0, s))


def dataset_tab() -> None:
    from engine.compare import compare_models

    ds = open_current_dataset()
    if ds is None:
        return
    spec = state.dataset_spec()
    if not any(lab is not None for lab in ds.labels):
        st.info(
            f"**{spec}** has no labels: accuracy needs labelled items. Pick a labelled dataset "
            "(e.g. demo:digits) on the Data page.",
            icon=":material/label_off:",
        )
        ui.page_link("data.py", "Go to the Data page", ":material/dataset:")
        return
    cache = resources.engine_cache()
    embedded: dict[str, dict[str, Any]] = {}
    with ui.guard("Reading the cache"):
        embedded = projections.embedded_models(ds, cache)
    if not embedded:
        st.info(
            f"Nothing is embedded yet for **{spec}**. Embed it with one or more models first; "
            "they can be compared here as soon as their vectors are in the cache.",
            icon=":material/compare:",
        )
        ui.page_link("embed.py", "Go to the Embed page", ":material/memory:")
        return

    names = preferred_order(list(embedded))
    if keys.CMP_DS_MODELS not in st.session_state:
        st.session_state[keys.CMP_DS_MODELS] = names[:4]
    st.session_state[keys.CMP_DS_MODELS] = [
        m for m in st.session_state[keys.CMP_DS_MODELS] if m in names
    ]
    chosen = st.multiselect(
        f"Models already embedded for {spec} (up to {MAX_COMPARE_MODELS})",
        names,
        key=keys.CMP_DS_MODELS,
        max_selections=MAX_COMPARE_MODELS,
        format_func=lambda s: f"{s} ({' + '.join(sorted(embedded[s]))})",
    )
    with st.expander("Settings"):
        s1, s2, s3 = st.columns(3)
        k = int(s1.number_input("k (kNN accuracy and overlap)", 1, 100, COMPARE.k, key="cmp_k"))
        max_items = int(
            s2.number_input(
                "Compare at most (0 = all)",
                0,
                1_000_000,
                COMPARE.max_items,
                step=1000,
                key="cmp_max",
            )
        )
        ensemble = s3.checkbox(
            "Zero-shot: ensemble of templates", COMPARE.ensemble, key="cmp_zs_ensemble"
        )
    if not chosen:
        st.info("Pick at least one model above.")
        return

    params = CompareParams(k=k, ensemble=ensemble, max_items=max_items or None)
    modalities = [cv.compare_modality(ds, embedded[s]) for s in chosen]
    key = None
    if all(modalities):
        vectors_keys = [embedded[s][m].key for s, m in zip(chosen, modalities, strict=True)]
        key = comparison_key(ds, vectors_keys, params)
    stored = st.session_state.get(K_REPORT)
    want = (spec, tuple(chosen), k, max_items, ensemble, key)
    report = stored[1] if stored and stored[0] == want else None
    load_errors: list[str] = list(stored[2]) if report is not None else []
    if report is None and key is not None:
        report = cv.cached_report(cache, key)
    if report is None:
        n = len(ds) if not max_items else min(max_items, len(ds))
        st.caption(
            f"Compares {len(chosen)} model(s) on {n:,} items: leave-one-out {k}-NN, a linear "
            "probe, zero-shot for CLIP-like models, CKA and neighbour overlap. Cached once done."
        )
        if st.button(
            "Run the comparison", type="primary", icon=":material/play_arrow:", key="cmp_run"
        ):
            with ui.guard("Comparing the models"):
                with st.status(f"Comparing {len(chosen)} model(s)…", expanded=True) as status:
                    models, load_errors = load_models(chosen)
                    if not models:
                        raise ParallaxError(f"no model could be loaded ({load_errors[0]})")
                    bar = StageProgressBar("Comparing")
                    report = compare_models(
                        ds,
                        models,
                        cache=cache,
                        k=k,
                        ensemble=ensemble,
                        max_items=max_items or None,
                        progress=bar,
                    )
                    bar.clear()
                    status.update(label=f"Compared in {report.seconds:.1f} s", state="complete")
                st.session_state[K_REPORT] = (want, report, load_errors)
    for line in load_errors:  # models left out of the comparison: why
        st.error(line, icon=":material/error:")
    if report is not None:
        show_report(report, ds)


def show_report(report: Any, ds: Any) -> None:
    how = "from the cache" if report.cached else f"computed in {report.seconds:.1f} s"
    st.caption(
        f"{report.n_used:,} of {report.n_total:,} items compared ({report.n_labelled:,} "
        f"labelled), {how} · `compare/{report.key[:12]}…json`"
    )
    for m in report.models:
        if m.get("error"):
            st.error(f"{m['model']}: {m['error']}", icon=":material/error:")
        for note in m.get("notes") or []:
            st.caption(f"{m['model']}: {note}")

    st.subheader("Accuracy per model")
    metrics = cv.metrics_frame(report)
    st.dataframe(
        metrics,
        hide_index=True,
        width="stretch",
        key="cmp_metrics",
        column_config={
            "knn_accuracy": st.column_config.NumberColumn(
                f"kNN (k={report.params['k']})", format="percent"
            ),
            "linear_probe_accuracy": st.column_config.NumberColumn(
                "linear probe", format="percent"
            ),
            "zero_shot_accuracy": st.column_config.NumberColumn("zero-shot", format="percent"),
        },
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
            st.dataframe(
                per_class,
                hide_index=True,
                width="stretch",
                key="cmp_per_class",
                column_config={m: PERCENT for m in per_class.columns if m != "class"},
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
    memo = st.session_state.setdefault(K_DISAGREE_CACHE, {})
    memo_key = (report.key, source, ds.fingerprint())
    if memo_key not in memo:
        with st.spinner("Preparing thumbnails…"):
            memo.clear()  # keep only the current table
            memo[memo_key] = cv.disagreement_frame(report, ds, source, resources.engine_cache())
    table = memo[memo_key]
    if table.empty:
        st.success("The models agree on every compared item.", icon=":material/check:")
        return
    st.caption(
        f"{len(table):,} items on which the models' predictions differ, fewest correct first. "
        "Click a column to sort; tick rows to send only those to the Map."
    )
    config: dict[str, Any] = {"row": st.column_config.NumberColumn("row", format="%d")}
    if "thumbnail" in table.columns:
        config["thumbnail"] = st.column_config.ImageColumn("item", width="small")
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


def switch_to_map(n: int) -> None:
    from streamlit.errors import StreamlitAPIException

    try:
        st.switch_page(state.page_file("map.py"))
    except StreamlitAPIException:  # the page runs outside the app's navigation (tests)
        st.success(f"{n:,} item(s) are now selected on the Map page.", icon=":material/check:")
        ui.page_link("map.py", "Open the Map page", ":material/scatter_plot:")


# ================================================================ 3. fusion classifier
def fusion_tab() -> None:
    from engine.fusion import VARIANTS, train_heads_for_dataset

    ds = open_current_dataset()
    if ds is None:
        return
    spec = state.dataset_spec()
    has_labels = any(lab is not None for lab in ds.labels)
    if not (ds.has_images and ds.texts is not None and has_labels):
        st.info(
            f"Fusion heads need a dataset with images, texts and labels (e.g. demo:shapes); "
            f"**{spec}** has {ui.dataset_caption(ds)}{'' if has_labels else ' and no labels'}.",
            icon=":material/merge:",
        )
        ui.page_link("data.py", "Choose another dataset", ":material/dataset:")
        return
    embedded: dict[str, dict[str, Any]] = {}
    with ui.guard("Reading the cache"):
        embedded = projections.embedded_models(ds)
    image_opts = preferred_order([s for s, e in embedded.items() if "image" in e])
    text_opts = preferred_order([s for s, e in embedded.items() if "text" in e])
    if not image_opts or not text_opts:
        missing = " and ".join(
            x for x, opts in (("images", image_opts), ("texts", text_opts)) if not opts
        )
        st.info(
            f"Embed the {missing} of **{spec}** first (Embed page, modality image / text): the "
            "heads are trained on cached vectors.",
            icon=":material/merge:",
        )
        ui.page_link("embed.py", "Go to the Embed page", ":material/memory:")
        return
    if state.view_only():
        state.view_only_notice("Training heads needs models")
        return
    st.caption(
        "Small MLP heads on cached vectors, all on one seeded split: image only, text only, "
        "concat (both side by side) and gated (a learnt per-dimension mix; the mean gate says "
        "how much it leans on the image)."
    )
    c1, c2 = st.columns(2)
    image_model = c1.selectbox("Image model", image_opts, key="cmp_fusion_image")
    text_model = c2.selectbox("Text model", text_opts, key="cmp_fusion_text")
    v1, v2, v3 = st.columns([3, 1, 1])
    variants = v1.multiselect("Variants", list(VARIANTS), default=list(VARIANTS), key="cmp_var")
    epochs = int(v2.number_input("Max epochs", 5, 500, HEADS.train.max_epochs, key="cmp_epochs"))
    seed = int(v3.number_input("Seed", 0, 10_000, HEADS.seed, key="cmp_seed"))
    if st.button(
        "Train the heads", type="primary", icon=":material/model_training:", key="cmp_train"
    ):
        with ui.guard("Training the heads"):
            if not variants:
                raise ParallaxError("pick at least one variant")
            with st.status(f"Training {len(variants)} head(s)…", expanded=True) as status:
                models, errors = load_models(list(dict.fromkeys([image_model, text_model])))
                if errors:
                    raise ParallaxError(errors[0])
                by_spec = {str(m.spec): m for m in models}
                img = by_spec.get(image_model, models[0])
                txt = by_spec.get(text_model, models[-1])
                bar = StageProgressBar("Training")
                results = train_heads_for_dataset(
                    ds,
                    img,
                    txt,
                    cache=resources.engine_cache(),
                    variants=variants,
                    seed=seed,
                    config=HEADS.with_epochs(epochs).train,
                    progress=bar,
                )
                bar.clear()
                status.update(label="Heads ready", state="complete")
            st.session_state[K_FUSION] = {
                "dataset": spec,
                "image_model": image_model,
                "text_model": text_model,
                "results": results,
            }
    fusion = st.session_state.get(K_FUSION)
    if not fusion or fusion.get("dataset") != spec:
        return
    st.markdown(
        f"**Held-out accuracy** · images: `{fusion['image_model']}` · texts: "
        f"`{fusion['text_model']}`"
    )
    heads = cv.heads_frame(fusion["results"])
    st.dataframe(
        heads,
        hide_index=True,
        width="stretch",
        key="cmp_heads",
        column_config={
            "accuracy": st.column_config.NumberColumn("held-out accuracy", format="percent"),
            "val_accuracy": st.column_config.NumberColumn("validation", format="percent"),
            "mean_gate": st.column_config.NumberColumn("mean gate (image share)", format="%.3f"),
            "seconds": st.column_config.NumberColumn("seconds", format="%.1f"),
        },
    )
    download(heads, "parallax-fusion-heads.csv", "cmp_dl_heads")
    st.markdown("**Saved heads** (safetensors + JSON sidecar)")
    for variant, r in fusion["results"].items():
        st.code(f"{variant}: {r.path}", language=None)
    st.caption(
        f"The image and text heads can also label your uploads in the first tab ({TAB_PREDICT})."
    )


# ================================================================ the page
st.title("Compare")
st.caption(f"Dataset **{state.dataset_spec()}**")
tabs = st.tabs(TABS, key="compare_tab", on_change="rerun")
for tab, body in zip(tabs, (predictions_tab, dataset_tab, fusion_tab), strict=True):
    if tab.open is False:  # lazy tabs: only the open one runs
        continue
    with tab:
        body()
