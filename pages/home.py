"""Home: what Parallax is, and a live map of an offline demo with no clicks needed.

Home opens on a bundle (``PARALLAX_BUNDLE``, else the committed demo bundle: demo:shapes under
three models) and shows two of its models side by side at once, aligned and linked (hovering or
selecting an item highlights it in both; the hover card shows its thumbnail): its UMAP (or PCA)
maps are installed in the cache when the bundle is opened, so nothing is computed and no model
is loaded.

Without any bundle: demo:digits embedded with baseline:pixels (no weights, no network). The
embedding is cached after the first time; the PCA map is drawn at once; the UMAP map is
computed in a background job (a fresh process pays numba compilation) while the PCA map stays
on screen, and replaces it when ready.
"""

from __future__ import annotations

from concurrent.futures import wait

import streamlit as st

from dashboard import (
    keys,
    linked_maps,
    links,
    projections,
    resources,
    state,
    ui,
    urlstate,
    viewonly,
)

POLL_S = 1.0

links.restore_from_url()

st.title("Parallax")
st.markdown(
    "Explore an image or text dataset through **several embedding models at once**: embed it "
    "with each model (cached on disk, resumable), look at 2-D maps of the vectors, and compare "
    "how the models arrange the same items."
)
page_links = st.columns(4)
for col, (name, label, icon) in zip(
    page_links,
    [
        ("data.py", "Choose or upload a dataset", ":material/dataset:"),
        ("embed.py", "Embed it with models", ":material/memory:"),
        ("map.py", "Explore the maps", ":material/scatter_plot:"),
        ("compare.py", "Compare models", ":material/compare:"),
    ],
    strict=True,
):
    ui.page_link(name, label, icon, container=col)

links.show_url_error()
# A read-only cache still browses: one line says why nothing new is made (maps come from it).
read_only = resources.cache_read_only()
if read_only:
    st.warning(resources.READ_ONLY_NOTICE, icon=":material/lock:")


def _bundle_home(bundle) -> None:
    """The bundle's maps of two models side by side, linked: cached UMAP (else PCA), hover
    previews, no model loaded."""
    spec = viewonly.bundle_spec(bundle)
    ds = state.get_dataset(spec)
    models = [m for m in viewonly.bundle_model_specs(bundle) if projections.cached_vectors(ds, m)]
    if not models:
        state.sidebar(spec, ds, [])
        raise viewonly.ViewOnlyError(f"{bundle.name} holds no vectors to draw")
    # the models that fit the data first: the image–text models on images, not a baseline
    ranked = state.workspace().default_models(ds, n=len(models) + 8)
    models.sort(key=lambda m: ranked.index(m) if m in ranked else len(ranked))
    st.subheader(f"{ui.plain(ds.name)} · {len(ds):,} items · {len(models)} models")
    st.caption(
        "The same items seen through different models, side by side: each map is aligned onto "
        "the first, and hovering or selecting an item in one map highlights it in the others. "
        "A precomputed bundle: its maps were made where the models are, so this page loads no "
        "model. The Map page has selections, neighbours, agreement and search."
    )
    c1, c2 = st.columns([3, 1])
    picked = st.session_state.get(keys.HOME_BUNDLE_MODEL)
    if not isinstance(picked, list) or not set(picked) <= set(models):
        linked = [m for m in st.session_state.get(keys.MAP_MODELS) or [] if m in models]
        st.session_state[keys.HOME_BUNDLE_MODEL] = linked[:4] or models[:2]  # a link's first
    chosen = (
        c1.multiselect("Models", models, key=keys.HOME_BUNDLE_MODEL, max_selections=4) or models[:1]
    )
    entries = [projections.cached_vectors(ds, m) for m in chosen]
    methods = ["UMAP", "PCA"] if all(projections.umap_in_cache(e) for e in entries) else ["PCA"]
    if st.session_state.get(keys.HOME_METHOD) not in methods:
        st.session_state[keys.HOME_METHOD] = methods[0]
    method = c2.segmented_control("Projection", methods, key=keys.HOME_METHOD) or methods[0]
    linked_maps.draw_cached_maps(ds, spec, chosen, method, "home_bundle_map")
    if method == "PCA" and "UMAP" not in methods and state.view_only():
        st.caption(f"No UMAP map in this bundle; {viewonly.MESSAGE}")
    state.sidebar(spec, ds, chosen)
    if st.button("Explore these maps", icon=":material/scatter_plot:"):
        state.set_dataset_spec(spec, ds)
        st.session_state[keys.MAP_MODELS] = list(chosen)
        st.switch_page(ui.page_file("map.py"))
    links.sync_url(urlstate.View(dataset=spec, models=list(chosen), method=method))


# A configured bundle, else the committed demo bundle (three models of demo:shapes): Home opens
# on several models at once with nothing to compute.
home_bundle = viewonly.configured_bundle() or (
    viewonly.DEMO_BUNDLE if viewonly.DEMO_BUNDLE.is_file() else None
)
if home_bundle is not None or state.view_only():
    if home_bundle is None:
        state.view_only_notice("No bundle is configured (set PARALLAX_BUNDLE)")
        state.sidebar(None, None, [])
    else:
        with ui.guard(f"Opening the bundle {home_bundle.name}"):
            _bundle_home(home_bundle)
    st.stop()

st.subheader(f"Demo: {state.HOME_DATASET} · {state.HOME_MODEL}")
st.caption(
    "8x8 handwritten digits, embedded by their raw pixels: no weights, no network. "
    "Similar digits land together; hover a point to see its id and label."
)


def _embed_demo():  # -> (dataset, vectors Entry)
    ds = state.get_dataset(state.HOME_DATASET)
    entry = projections.cached_vectors(ds, state.HOME_MODEL)
    if entry is None and not read_only:  # (read-only: nothing to draw; the notice says why)
        bar = ui.ProgressBar(f"Embedding {state.HOME_DATASET} with {state.HOME_MODEL}")
        try:
            state.get_model(state.HOME_MODEL)  # view-only and the policy decide first
            state.workspace().embed(ds, state.HOME_MODEL, progress=bar)
        finally:
            bar.clear()
        entry = projections.cached_vectors(ds, state.HOME_MODEL)
    return ds, entry


demo = None
with ui.guard("Preparing the demo map"):
    demo = _embed_demo()
state.sidebar(state.HOME_DATASET, demo[0] if demo else None, [state.HOME_MODEL])

if demo is not None and demo[1] is not None:
    ds, entry = demo
    auto_umap = st.session_state.get(keys.HOME_AUTO_UMAP, True)
    # On a read-only cache a UMAP map is only read, never computed (it could not be saved).
    can_umap = not read_only or projections.umap_in_cache(entry)
    job = projections.projection_job(entry, "umap") if auto_umap and can_umap else None
    if job is not None:
        wait([job.future], timeout=0.3)  # a map already in the cache comes back at once
    umap_ready = job is not None and job.future.done() and job.future.exception() is None

    methods = ["UMAP", "PCA"] if umap_ready else ["PCA"]
    if st.session_state.get(keys.HOME_METHOD) not in (None, *methods):
        st.session_state[keys.HOME_METHOD] = methods[0]
    method = (
        st.segmented_control(
            "Projection",
            methods,
            default=None if keys.HOME_METHOD in st.session_state else methods[0],
            key=keys.HOME_METHOD,
            label_visibility="collapsed",
        )
        if umap_ready
        else "PCA"
    )
    method = method or methods[0]

    with ui.guard(f"Drawing the {method} map"):
        linked_maps.draw_cached_maps(ds, state.HOME_DATASET, [state.HOME_MODEL], method, "home_map")
    links.sync_url(
        urlstate.View(dataset=state.HOME_DATASET, models=[state.HOME_MODEL], method=method)
    )

    if job is None:
        if can_umap and st.button("Compute the UMAP map", icon=":material/play_arrow:"):
            st.session_state[keys.HOME_AUTO_UMAP] = True
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
            projections.job_runner().forget(job.key)
            st.rerun()
