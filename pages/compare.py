"""Compare: several models side by side on your own inputs, on the current dataset, and fused.

* Predictions on uploads: zero-shot labels for uploaded images and typed texts, one column per
  model, with each model's latency and load time; a model that fails shows its reason.
* Dataset comparison: kNN / linear-probe / zero-shot accuracy of the models already embedded,
  per-class accuracy, confusion matrices, CKA and kNN-overlap between models, and the items on
  which they disagree (which can be sent to the Map page's selection).
* Fusion classifier: small heads trained on cached image and text vectors (image / text /
  concat / gated), with their held-out accuracy.

The work is the workspace's (``predict``, ``compare``, ``train_heads``, through this session's
policy); the tables and figures come from ``dashboard.compare_view``. The address carries the
dataset and models, so a reload reopens the same comparison.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import compare_results as cr
from dashboard import compare_view as cv
from dashboard import honesty, keys, links, projections, resources, state, ui, urlstate
from engine.errors import ParallaxError
from engine.params import COMPARE, HEADS, PREDICT, CompareParams, PredictParams

TAB_PREDICT = cr.TAB_PREDICT
TAB_DATASET = "Dataset comparison"
TAB_FUSION = "Fusion classifier"
TABS = [TAB_PREDICT, TAB_DATASET, TAB_FUSION]
TYPED = "Type them"
FROM_DATASET = "The current dataset's labels"
MAX_COMPARE_MODELS = 6
SHAPES_CLIP = "demo:shapes-clip"
# The pages a tab sends to when it has nothing to show: (page, link text, icon).
GO_DATA = ("data.py", "Go to the Data page", ":material/dataset:")
GO_EMBED = ("embed.py", "Go to the Embed page", ":material/memory:")

K_PRED_RESULT = keys.CMP_PRED_RESULT
K_REPORT = keys.CMP_REPORT
K_FUSION = keys.CMP_FUSION
K_DISAGREE_CACHE = keys.CMP_DISAGREE_CACHE


def registry() -> list[dict[str, Any]]:
    try:
        return resources.known_models()
    except Exception:  # the catalogue only fills the menus: typed specs still work without it
        return []


def _elsewhere(message: str, icon: str, page: str, link: str, link_icon: str) -> list[str]:
    """Why this tab has nothing to show, and a link to the page that fixes it: no models shown."""
    st.info(message, icon=icon)
    ui.page_link(page, link, link_icon)
    return []


def _current() -> tuple[Any, str, Any] | None:
    """The current dataset, its spec and the session's workspace; None when the dataset cannot
    be opened (``state`` has said why)."""
    ds = state.open_current_dataset()
    return None if ds is None else (ds, state.dataset_spec(), state.workspace())


def _embedded(ds: Any) -> dict[str, dict[str, Any]]:
    """The models with vectors of ``ds`` in the cache, by modality ({} when it cannot be read:
    the guard shows why)."""
    embedded: dict[str, dict[str, Any]] = {}
    with ui.guard("Reading the cache"):
        embedded = projections.embedded_models(ds)
    return embedded


def _kept_choice(key: str, options: list[str], default: list[str]) -> None:
    """A multiselect's state: ``default`` the first time, later only the choices still offered."""
    if key not in st.session_state:
        st.session_state[key] = default
    st.session_state[key] = [m for m in st.session_state[key] if m in options]


# ================================================================ 1. predictions on uploads
def predictions_tab() -> list[str]:
    """The predictions' controls and results; returns the models it shows."""
    if state.view_only():
        state.view_only_notice("Predictions need models")
        return []
    ws = state.workspace()
    known = registry()
    st.caption(
        "Zero-shot classification: each label becomes a prompt, and each model scores your "
        "inputs against the prompts in its own space (softmax at the model's own logit scale; "
        "SigLIP's sigmoid is normalised)."
    )
    c1, c2 = st.columns(2)
    files = c1.file_uploader(
        "Images", type=ws.image_extensions, accept_multiple_files=True, key="cmp_files"
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
        ds = state.open_current_dataset()
        if ds is not None:
            labels = cv.dataset_label_names(ds.labels)
            if labels:
                shown = ", ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
                st.caption(ui.plain(f"{len(labels)} labels of {state.dataset_spec()}: {shown}"))
            else:
                st.warning(f"{ui.plain(state.dataset_spec())} has no labels: type them instead.")

    extra_specs = list(state.model_specs())
    # the shipped demo CLIP answers offline: offered whenever it is registered
    clip = SHAPES_CLIP if any(m["spec"] == SHAPES_CLIP for m in known) else None
    if clip:
        extra_specs.append(clip)
    options = cv.prediction_model_options(known, extra_specs)
    # first: every image–text model that answers here
    _kept_choice(keys.CMP_MODELS, options, ws.prediction_defaults(options, state.model_specs()))
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
    honesty.domain_captions(specs)

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
            images, names, bad = ws.decode_images((f.name, f.getvalue()) for f in files or [])
            for line in bad:
                st.error(ui.plain(line), icon=":material/broken_image:")
            texts = cv.parse_texts(texts_raw)
            ws.check_predict(len(images) + len(texts), specs, use_fusion, labels)
            params = PredictParams(tuple(templates), ensemble, top_k)
            st.session_state[K_PRED_RESULT] = cr.predict_with_status(
                specs, images, names, texts, labels, params, fusion if use_fusion else None
            )
    result = st.session_state.get(K_PRED_RESULT)
    if result:
        cr.show_predictions(result)
    return specs


# ================================================================ 2. dataset comparison
def dataset_tab() -> list[str]:
    """The comparison of embedded models; returns the models it shows."""
    if (current := _current()) is None:
        return []
    ds, spec, ws = current
    if not any(lab is not None for lab in ds.labels):
        return _elsewhere(
            f"**{ui.plain(spec)}** has no labels: accuracy needs labelled items. Pick a "
            "labelled dataset (e.g. demo:digits) on the Data page.",
            ":material/label_off:",
            *GO_DATA,
        )
    embedded = _embedded(ds)
    if not embedded:
        return _elsewhere(
            f"Nothing is embedded yet for **{ui.plain(spec)}**. Embed it with one or more models "
            "first; they can be compared here as soon as their vectors are in the cache.",
            ":material/compare:",
            *GO_EMBED,
        )

    names = state.preferred_order(list(embedded))
    _kept_choice(keys.CMP_DS_MODELS, names, names[:4])
    chosen = st.multiselect(
        f"Models already embedded for {ui.plain(spec)} (up to {MAX_COMPARE_MODELS})",
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
        return []
    honesty.domain_captions(chosen)

    params = CompareParams(k=k, ensemble=ensemble, max_items=max_items or None)
    stored = st.session_state.get(K_REPORT)
    vectors = tuple(e.key for s in chosen for e in embedded.get(s, {}).values())
    want = (spec, ds.fingerprint(), tuple(chosen), params, vectors)
    report = stored[1] if stored and stored[0] == want else None
    load_errors: list[str] = list(stored[2]) if report is not None else []
    if report is None:
        report = ws.cached_report(ds, embedded, chosen, params)
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
                    loaded, load_errors = state.load_models(chosen)
                    if not loaded:
                        raise ParallaxError(f"no model could be loaded ({load_errors[0]})")
                    bar = ui.StageProgressBar("Comparing")
                    report = ws.compare(ds, loaded, params, progress=bar)
                    bar.clear()
                    status.update(label=f"Compared in {report.seconds:.1f} s", state="complete")
                st.session_state[K_REPORT] = (want, report, load_errors)
    for line in load_errors:  # models left out of the comparison: why
        st.error(ui.plain(line), icon=":material/error:")
    if report is not None:
        cr.show_report(report, ds)
    return list(chosen)


# ================================================================ 3. fusion classifier
def fusion_tab() -> list[str]:
    """The fusion heads' controls and results; returns the models it shows."""
    if (current := _current()) is None:
        return []
    ds, spec, ws = current
    has_labels = any(lab is not None for lab in ds.labels)
    if not (ds.has_images and ds.texts is not None and has_labels):
        return _elsewhere(
            f"Fusion heads need a dataset with images, texts and labels (e.g. demo:shapes); "
            f"**{ui.plain(spec)}** has {ui.dataset_caption(ds)}"
            f"{'' if has_labels else ' and no labels'}.",
            ":material/merge:",
            "data.py",
            "Choose another dataset",
            ":material/dataset:",
        )
    embedded = _embedded(ds)
    image_opts = state.preferred_order([s for s, e in embedded.items() if "image" in e])
    text_opts = state.preferred_order([s for s, e in embedded.items() if "text" in e])
    if not image_opts or not text_opts:
        missing = " and ".join(
            x for x, opts in (("images", image_opts), ("texts", text_opts)) if not opts
        )
        return _elsewhere(
            f"Embed the {missing} of **{ui.plain(spec)}** first (Embed page, modality image / "
            "text): the heads are trained on cached vectors.",
            ":material/merge:",
            *GO_EMBED,
        )
    if state.view_only():
        state.view_only_notice("Training heads needs models")
        return []
    st.caption(
        "Small MLP heads on cached vectors, all on one seeded split: image only, text only, "
        "concat (both side by side) and gated (a learnt per-dimension mix; the mean gate says "
        "how much it leans on the image)."
    )
    c1, c2 = st.columns(2)
    image_model = c1.selectbox("Image model", image_opts, key="cmp_fusion_image")
    text_model = c2.selectbox("Text model", text_opts, key="cmp_fusion_text")
    v1, v2, v3 = st.columns([3, 1, 1])
    variants = v1.multiselect(
        "Variants", list(ws.head_variants), default=list(ws.head_variants), key="cmp_var"
    )
    epochs = int(v2.number_input("Max epochs", 5, 500, HEADS.train.max_epochs, key="cmp_epochs"))
    seed = int(v3.number_input("Seed", 0, 10_000, HEADS.seed, key="cmp_seed"))
    if st.button(
        "Train the heads", type="primary", icon=":material/model_training:", key="cmp_train"
    ):
        with ui.guard("Training the heads"):
            if not variants:
                raise ParallaxError("pick at least one variant")
            with st.status(f"Training {len(variants)} head(s)…", expanded=True) as status:
                _, errors = state.load_models(list(dict.fromkeys([image_model, text_model])))
                if errors:
                    raise ParallaxError(errors[0])
                bar = ui.StageProgressBar("Training")
                results = ws.train_heads(
                    ds,
                    image_model,
                    text_model,
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
    if fusion and fusion.get("dataset") == spec:
        cr.show_heads(fusion)
    return list(dict.fromkeys([image_model, text_model]))


# ================================================================ the page
links.start_page("Compare")
spec = state.dataset_spec()
st.caption(f"Dataset **{ui.plain(spec)}**")
shown: list[str] = []
tabs = st.tabs(TABS, key="compare_tab", on_change="rerun")
for tab, body in zip(tabs, (predictions_tab, dataset_tab, fusion_tab), strict=True):
    if tab.open is False:  # lazy tabs: only the open one runs
        continue
    with tab:
        shown = body()
current = None
with ui.guard(f"Opening {spec}", container=st.sidebar):
    current = state.get_dataset(spec)
state.sidebar(spec, current, shown or state.model_specs())
links.sync_url(urlstate.View(dataset=spec, models=shown or state.model_specs()))
