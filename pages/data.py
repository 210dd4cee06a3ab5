"""Data: choose the dataset every page works on, and see what is in it.

Sources: a built-in demo, a folder on the server, any dataset spec, or an upload (a zip; a
Parallax bundle ``.parallax.zip``; a manifest, alone or with a zip of its images; loose images).
Uploads are staged by ``Workspace.stage_upload`` under this session's folder in the cache
(sanitised names, the engine's own suffix lists, atomic, a per-session quota) and named by a
link (``upload:<token>/<name>``), never a server path. A source that cannot be opened shows one
error line and leaves the previous dataset selected. Every spec is opened through this
session's policy: never another session's uploads, and only ``PARALLAX_SERVER_PATHS`` when
that is set.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import keys, links, resources, state, ui, urlstate, viewonly
from engine.errors import DatasetError
from engine.params import SHAPES

links.start_page("Data")


# -- opening ----------------------------------------------------------------------------------
def try_select(spec: str, action: str) -> None:
    """Open ``spec``; on success make it the current dataset and rerun the app. Errors are
    shown, not raised, and leave the current dataset as it was."""
    with ui.guard(action) as g:
        state.check_spec_allowed(spec)
        bar = ui.ProgressBar(f"Checking the items of {spec}")
        ds = state.get_dataset(spec, progress=bar)
        bar.clear()
        if len(ds) == 0:
            raise DatasetError(f"{spec} has no usable items")
        state.set_dataset_spec(spec, ds)
    if not g.failed:
        st.rerun()  # redraw everything (sidebar included) for the new dataset


def typed_and_opened(
    box: tuple[str, str], placeholder: str, button: tuple[str, str], missing: str
) -> str | None:
    """A text box (label, key) and its Open button (label, key): the typed text once the
    button is pressed; None before, or with the ``missing`` warning while the box is empty."""
    typed = st.text_input(box[0], key=box[1], placeholder=placeholder).strip()
    if not st.button(button[0], key=button[1]):
        return None
    if not typed:
        st.warning(missing, icon=":material/warning:")
    return typed or None


# -- uploads ----------------------------------------------------------------------------------
def handle_upload(files: list) -> None:
    """Save + open an upload once per distinct set of files; remember the outcome."""
    signature = tuple(sorted((f.file_id, f.name, f.size) for f in files))
    done = st.session_state.get(keys.DATA_UPLOAD)
    if done is not None and done["signature"] == signature:
        return
    outcome = {"signature": signature, "spec": None, "error": None}
    try:
        ws = state.workspace()
        # shown and linked as upload:<token>/<file name>: never the server path
        spec = ws.stage_upload([(f.name, f.getbuffer()) for f in files], state.session_id())
        bar = ui.ProgressBar("Checking the uploaded items")
        try:
            ds = ws.open(spec, progress=bar)
        finally:
            bar.clear()
        if len(ds) == 0:
            raise DatasetError("the upload holds no usable items")
        state.set_dataset_spec(spec, ds)
        outcome["spec"] = spec
    except Exception as exc:
        outcome["error"] = exc
    st.session_state[keys.DATA_UPLOAD] = outcome
    if outcome["spec"]:
        st.rerun()  # redraw everything (sidebar included) for the new dataset


# -- source pickers ---------------------------------------------------------------------------
tab_demo, tab_folder, tab_upload, tab_spec = st.tabs(
    ["Built-in demo", "Folder on the server", "Upload", "Any spec"]
)

with tab_demo:
    demos = []
    with ui.guard("Listing the demos"):
        demos = resources.list_demos()
    if demos:
        specs = [d["spec"] for d in demos]
        described = {d["spec"]: d.get("description", "") for d in demos}
        choice = st.selectbox(
            "Demo",
            specs,
            format_func=lambda s: f"{s} — {described[s]}" if described.get(s) else s,
            key="data_demo_choice",
        )
        spec = choice
        if choice.split("?")[0] == "demo:shapes":
            c1, c2 = st.columns(2)
            low, high = resources.workspace().shapes_items
            n = c1.number_input(
                "Items",
                min_value=low,
                max_value=high,
                value=SHAPES.n,
                step=1_000,
                key="data_shapes_n",
            )
            seed = c2.number_input(
                "Seed", min_value=0, value=SHAPES.seed, step=1, key="data_shapes_seed"
            )
            spec = f"demo:shapes?n={int(n)}&seed={int(seed)}"
        if st.button("Use this demo", key="data_use_demo", type="primary"):
            try_select(spec, f"Opening {spec}")

with tab_folder:
    folder = typed_and_opened(
        ("Folder path on the server", "data_folder_path"),
        "/data/pets (first-level sub-folders are labels)",
        ("Open folder", "data_open_folder"),
        "Type a folder path first.",
    )
    if folder:
        path = Path(folder).expanduser()
        try_select(f"folder:{path}", f"Opening folder {path}")

with tab_upload:
    st.caption(
        "A **zip** of an image folder (sub-folders = labels) or of a manifest with its images; "
        "a **manifest** (CSV / Parquet / JSONL with `image` and/or `text` columns, optional "
        "`label`), alone or with a zip of its images; or **loose images**. A Parallax "
        "**bundle** (`.parallax.zip`, from `python -m engine bundle`) opens with its maps."
    )
    if state.view_only():
        st.caption(
            f"{viewonly.sentence()}: a bundle opens with its "
            "maps; any other upload can be browsed here but not embedded."
        )
    uploaded = st.file_uploader(
        "Files",
        type=resources.workspace().upload_types,
        accept_multiple_files=True,
        key="data_upload_files",
    )
    if uploaded:
        with st.spinner("Saving and opening the upload…"):
            handle_upload(list(uploaded))
        outcome = st.session_state.get(keys.DATA_UPLOAD)
        if outcome and outcome["error"] is not None:
            ui.show_error(outcome["error"], "This upload cannot be used")
            st.caption(f"The current dataset is still {ui.plain(state.dataset_spec())}.")
        elif outcome and outcome["spec"]:
            st.success(f"Opened the upload as {ui.plain(outcome['spec'])}", icon=":material/check:")
            kind = resources.workspace().source_kind(outcome["spec"])
            if state.view_only() and kind != "bundle":
                state.view_only_notice("This upload cannot be embedded here")

with tab_spec:
    any_spec = typed_and_opened(
        ("Dataset spec", "data_any_spec"),
        "manifest:/data/captions.parquet · zip:/data/set.zip · folder:/data/pets",
        ("Open spec", "data_open_spec"),
        "Type a dataset spec first.",
    )
    if any_spec:
        try_select(any_spec, f"Opening {any_spec}")


# -- the current dataset ----------------------------------------------------------------------
st.divider()
current = state.dataset_spec()
st.subheader("Current dataset")
st.code(current, language=None)
ds = None
with ui.guard(f"Opening {current}"):
    ds = state.get_dataset(current)
    ui.dataset_metrics(ds)
    t_labels, t_gallery, t_meta, t_skipped = st.tabs(
        ["Labels", "Sample", "Items & metadata", f"Skipped ({len(ds.skipped):,})"]
    )
    with t_labels:
        ui.label_chart(ds)
    with t_gallery:
        ui.sample_gallery(ds)
    with t_meta:
        ui.metadata_preview(ds)
    with t_skipped:
        ui.skipped_table(ds)
    if resources.workspace().source_kind(current) == "bundle":
        ui.page_link("map.py", "Next: explore its maps", ":material/arrow_forward:")
    else:
        ui.page_link("embed.py", "Next: embed this dataset", ":material/arrow_forward:")
models = state.model_specs()
state.sidebar(current, ds, models)
links.sync_url(urlstate.View(dataset=current, models=models))
