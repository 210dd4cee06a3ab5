"""Parallax dashboard entry point: ``streamlit run dashboard/app.py`` from the repository root.

This file is the frame around every page: it makes ``engine`` and ``dashboard`` importable,
registers the pages with ``st.navigation`` and draws the sidebar (current dataset and models).
Pages that other engineers are still writing (Map, Compare) appear once their file exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ there
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from dashboard import links, state, ui  # noqa: E402
from engine.maps.project import start_warm_up  # noqa: E402

# (file, title, icon); the first is the default page.
PAGE_TABLE = [
    ("home.py", "Home", ":material/home:"),
    ("data.py", "Data", ":material/dataset:"),
    ("embed.py", "Embed", ":material/memory:"),
    ("map.py", "Map", ":material/scatter_plot:"),
    ("compare.py", "Compare", ":material/compare:"),
    ("findings.py", "Findings", ":material/report:"),
]


def build_pages() -> list:
    pages = []
    for i, (name, title, icon) in enumerate(PAGE_TABLE):
        path = state.page_file(name)
        if path.is_file():
            pages.append(st.Page(path, title=title, icon=icon, default=i == 0))
    return pages


def sidebar() -> None:
    with st.sidebar:
        if state.view_only():
            st.caption(
                ":material/visibility: **View-only**: precomputed bundles, no models here "
                "(docs/deploy.md)."
            )
        st.markdown("**Dataset**")
        spec = state.dataset_spec()
        st.code(spec, language=None)
        with ui.guard("Opening the dataset"):
            ds = state.current_dataset()
            st.caption(ui.dataset_caption(ds))
        st.markdown("**Models**")
        for model in state.model_specs():
            st.code(model, language=None)


st.set_page_config(page_title="Parallax", page_icon=":material/scatter_plot:", layout="wide")
start_warm_up()  # the map path's imports run in a background thread while the first page draws
page = st.navigation(build_pages())
links.restore_from_url()  # a shared link reopens the same view (before any page reads state)
sidebar()
page.run()
