"""Home: what Parallax is, and a live map of an offline demo with no clicks needed.

demo:digits embedded with baseline:pixels needs no weights and no network. The embedding is
cached after the first time; the PCA map is drawn at once; the UMAP map is computed in a
background job (a fresh process pays numba compilation) while the PCA map stays on screen,
and replaces it when ready.
"""

from __future__ import annotations

from concurrent.futures import wait

import streamlit as st

from dashboard import state, ui

POLL_S = 1.0

st.title("Parallax")
st.markdown(
    "Explore an image or text dataset through **several embedding models at once**: embed it "
    "with each model (cached on disk, resumable), look at 2-D maps of the vectors, and compare "
    "how the models arrange the same items."
)
links = st.columns(4)
for col, (name, label, icon) in zip(
    links,
    [
        ("data.py", "Choose or upload a dataset", ":material/dataset:"),
        ("embed.py", "Embed it with models", ":material/memory:"),
        ("map.py", "Explore the maps", ":material/scatter_plot:"),
        ("compare.py", "Compare models", ":material/compare:"),
    ],
    strict=True,
):
    ui.page_link(name, label, icon, container=col)

st.subheader(f"Demo: {state.HOME_DATASET} · {state.HOME_MODEL}")
st.caption(
    "8x8 handwritten digits, embedded by their raw pixels: no weights, no network. "
    "Similar digits land together; hover a point to see its id and label."
)


def _embed_demo():  # -> (dataset, vectors Entry)
    from engine.embed import embed_dataset

    ds = state.get_dataset(state.HOME_DATASET)
    entry = state.cached_vectors(ds, state.HOME_MODEL)
    if entry is None:
        bar = ui.ProgressBar(f"Embedding {state.HOME_DATASET} with {state.HOME_MODEL}")
        try:
            model = state.get_model(state.HOME_MODEL)
            embed_dataset(ds, model, cache=state.engine_cache(), progress=bar)
        finally:
            bar.clear()
        entry = state.cached_vectors(ds, state.HOME_MODEL)
    return ds, entry


def _figure(ds, coords, method: str):
    return ui.scatter_figure(coords, ds.ids, ds.labels, ds.texts, title=f"{method} map")


demo = None
with ui.guard("Preparing the demo map"):
    demo = _embed_demo()

if demo is not None and demo[1] is not None:
    ds, entry = demo
    auto_umap = st.session_state.get("home_auto_umap", True)
    job = state.projection_job(entry, "umap") if auto_umap else None
    if job is not None:
        wait([job.future], timeout=0.3)  # a map already in the cache comes back at once
    umap_ready = job is not None and job.future.done() and job.future.exception() is None

    methods = ["UMAP", "PCA"] if umap_ready else ["PCA"]
    method = (
        st.segmented_control(
            "Projection",
            methods,
            default=methods[0],
            key="home_method",
            label_visibility="collapsed",
        )
        if umap_ready
        else "PCA"
    )
    method = method or methods[0]

    with ui.guard(f"Drawing the {method} map"):
        if method == "UMAP":
            result = job.future.result()
            coords = state.load_coords(result.key, str(result.path))
        else:
            coords = state.projection_coords(entry, "pca")
        st.plotly_chart(_figure(ds, coords, method), key=f"home_map_{method}")

    if job is None:
        if st.button("Compute the UMAP map", icon=":material/play_arrow:"):
            st.session_state["home_auto_umap"] = True
            st.rerun()
    elif not job.future.done():

        @st.fragment(run_every=POLL_S)
        def _umap_status() -> None:
            if job.future.done():
                st.rerun()  # the whole page: swap the PCA map for the UMAP one
            st.info(
                f"Computing the UMAP map in the background… {job.elapsed:.0f} s so far "
                "(the first map in a fresh process takes longest: numba compiles UMAP). "
                "You can keep using the app meanwhile.",
                icon=":material/hourglass_top:",
            )

        _umap_status()
    elif job.future.exception() is not None:
        ui.show_error(job.future.exception(), "Computing the UMAP map")
        if st.button("Retry the UMAP map"):
            state.job_runner().forget(job.key)
            st.rerun()
