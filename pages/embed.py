"""Embed: run the current dataset through one or several models, with progress and a cache.

Each model runs on its own: one that cannot load (weights missing offline, wrong modality)
shows its reason and the others still run. Vectors land in the engine cache, so a second run
(or the CLI on another machine sharing the cache) finds them at once. The address carries the
dataset and models (``?ds=...&m=...``): a reload reopens the same choice, an upload included.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import honesty, keys, links, resources, state, ui, urlstate
from engine.errors import ParallaxError

links.start_page("Embed")

spec = state.dataset_spec()
ds = state.page_dataset()
ws = state.workspace()

st.markdown(f"Dataset **{ui.plain(spec)}** · {ui.dataset_caption(ds)}")

if state.view_only():
    state.view_only_notice("Embedding needs models")
    st.caption(
        "Make a bundle where the models are (`python -m engine bundle --dataset D --model M "
        "--out set.parallax.zip`) and open it on the Data page; its maps are on the Map page."
    )
    ui.page_link("map.py", "Look at the maps already here", ":material/scatter_plot:")
    state.sidebar(spec, ds, state.model_specs())
    links.sync_url(urlstate.View(dataset=spec))
    st.stop()

# -- model choice -------------------------------------------------------------------------------
registry: list[dict[str, Any]] = []
with ui.guard("Listing the models"):
    registry = resources.known_models()
by_spec = {m["spec"]: m for m in registry}
fit = ws.models_for(ds, [*by_spec, *state.model_specs()])  # modalities vs the dataset's

WIDGET = keys.EMBED_MODELS
if st.session_state.get(keys.EMBED_DATASET) != spec:  # a new dataset: no stale choices
    st.session_state[keys.EMBED_DATASET] = spec
    st.session_state.pop(keys.EMBED_RESULTS, None)
    kept = [s for s in state.model_specs() if s in fit.fit]
    # none of the chosen models fits this data: start from the ones that do
    state.set_model_specs(kept or [s for s in state.default_models(ds) if s in fit.fit])
PENDING = keys.EMBED_MODELS_ADD
# The widget mirrors state.model_specs(): its state is dropped when the page is left, and
# another page may have changed the models meanwhile. The shared list wins.
if st.session_state.get(WIDGET) != state.model_specs():
    st.session_state[WIDGET] = state.model_specs()
if st.session_state.get(PENDING):
    st.session_state[WIDGET] = list(
        dict.fromkeys([*st.session_state[WIDGET], st.session_state.pop(PENDING)])
    )
options = list(dict.fromkeys([*fit.fit, *state.model_specs(), *st.session_state[WIDGET]]))


def _label(s: str) -> str:
    info = by_spec.get(s)
    if not info:
        return f"{s} (custom)"
    mods = "+".join(sorted(info.get("modalities", [])))
    offline = "" if info.get("available_offline") else " · needs download"
    return f"{s} ({mods}{offline})"


def _store_selection() -> None:  # a callback runs before the sidebar is drawn: it stays current
    state.set_model_specs(st.session_state[WIDGET])


st.multiselect(
    "Models",
    options,
    key=WIDGET,
    format_func=_label,
    on_change=_store_selection,
    help="The Map and Compare pages use the models chosen here.",
)
state.set_model_specs(st.session_state[WIDGET])

with st.form("embed_add_spec", clear_on_submit=True, border=False):
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    typed = c1.text_input(
        "Any other model spec",
        placeholder="open_clip:ViT-B-32/laion2b_s34b_b79k · hf:openai/clip-vit-base-patch32 · "
        "st:all-MiniLM-L6-v2",
    )
    if c2.form_submit_button("Add", icon=":material/add:") and typed.strip():
        with ui.guard("Adding the model") as added:
            state.check_model_allowed(typed.strip())  # visitor input: the policy decides first
        why = None if added.failed else ws.models_for(ds, [typed.strip()]).unfit.get(typed.strip())
        if why:
            st.error(
                f"{ui.plain(typed.strip())} is not for this data: {why}", icon=":material/block:"
            )
        elif not added.failed:
            st.session_state[PENDING] = typed.strip()
            state.set_model_specs([*st.session_state[WIDGET], typed.strip()])
            st.rerun()
if fit.unfit:
    with st.expander(f"Not for this data ({len(fit.unfit)})", icon=":material/block:"):
        st.dataframe(
            pd.DataFrame({"model": list(fit.unfit), "why": list(fit.unfit.values())}),
            hide_index=True,
            width="stretch",
            key="embed_unfit",
        )
honesty.domain_captions(st.session_state[WIDGET])

modality_choice = st.segmented_control(
    "Modality",
    ["auto", "image", "text"],
    default="auto",
    key="embed_modality",
    help="auto: images when both the model and the dataset have them, else texts.",
)
modality = None if modality_choice in (None, "auto") else modality_choice

selected: list[str] = list(st.session_state[WIDGET])


# -- status table -------------------------------------------------------------------------------
def status_rows(specs: list[str]) -> pd.DataFrame:
    rows = []
    for s in specs:
        info = by_spec.get(s, {})
        try:
            entries = ws.vectors_of(ds, s)
        except ParallaxError:
            entries = []
        cached = ", ".join(
            f"{e.manifest.get('modality')} {e.manifest.get('n', '?')}x{e.manifest.get('dim', '?')}"
            for e in entries
        )
        rows.append(
            {
                "model": s,
                "modalities": "+".join(sorted(info.get("modalities", []))) or "?",
                "offline": (
                    "yes" if info.get("available_offline") else ("no" if info else "unknown")
                ),
                "cached for this dataset": cached or "no",
                "description": info.get("description", ""),
            }
        )
    return pd.DataFrame(rows)


if selected:
    st.dataframe(status_rows(selected), hide_index=True, width="stretch")
else:
    st.info("Choose at least one model.", icon=":material/info:")

# -- running ------------------------------------------------------------------------------------
RESULTS = keys.EMBED_RESULTS


def run_one(model_spec: str, container) -> dict[str, Any]:
    """Embed with one model; returns a result row or an error record (never raises)."""
    t0 = time.perf_counter()
    with container:
        bar = ui.ProgressBar(f"{model_spec}")
        try:
            state.get_model(model_spec)  # view-only and the visitor's policy decide first
            result = ws.embed(ds, model_spec, modality=modality, progress=bar)
        except Exception as exc:
            bar.clear()
            return {"model": model_spec, "error": exc}
        bar.clear()
    return {
        "model": result.model,
        "modality": result.modality,
        "n": result.n,
        "dim": result.dim,
        "cached": result.cached,
        "seconds": round(time.perf_counter() - t0, 2),
        "skipped": result.skipped,
        "failed items": len(result.failed),
        "key": result.key[:12],
    }


st.caption(
    "Runs here, one model after the other. Leaving the page stops a run; the next run resumes "
    "from the last finished shard. For large sets, `python -m engine embed` on a GPU box fills "
    "the same cache."
)
if st.button("Embed", type="primary", icon=":material/play_arrow:", disabled=not selected):
    outcome: list[dict[str, Any]] = []
    # the progress shows right under the button that started it, where the eye is
    box = st.status(f"Embedding {ui.plain(spec)} with {len(selected)} model(s)…", expanded=True)
    with box:
        for s in selected:
            st.markdown(f"**{ui.plain(s)}**")
            outcome.append(run_one(s, st.container()))
        failed = [r for r in outcome if "error" in r]
        box.update(
            label=f"Embedded with {len(outcome) - len(failed)} of {len(outcome)} model(s)",
            state="error" if failed and len(failed) == len(outcome) else "complete",
            expanded=False,
        )
    st.session_state[RESULTS] = {"dataset": spec, "rows": outcome}
    failed_specs = {r["model"] for r in outcome if "error" in r}  # the sidebar lists what works
    state.set_model_specs([s for s in selected if s not in failed_specs])
    st.rerun()  # redraw the status table above with what is cached now

# -- results ------------------------------------------------------------------------------------
done = st.session_state.get(RESULTS)
if done and done["dataset"] == spec:
    st.subheader("Results")
    rows = done["rows"]
    ok = [r for r in rows if "error" not in r]
    for r in rows:
        if "error" in r:
            ui.show_error(r["error"], r["model"])
    if ok:
        st.dataframe(pd.DataFrame(ok), hide_index=True, width="stretch")
        ui.page_link("map.py", "Next: look at the maps", ":material/scatter_plot:")

state.sidebar(spec, ds, state.model_specs())
links.sync_url(urlstate.View(dataset=spec, models=state.model_specs()))
