"""Parallax dashboard entry point: ``streamlit run dashboard/app.py`` from the repository root.

This file is the frame around every page: it makes ``engine`` and ``dashboard`` importable,
registers the pages with ``st.navigation`` and applies a shared link once. Each page draws the
sidebar itself (``state.sidebar``) once it knows what it shows, so the sidebar always names the
dataset and models on the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ there
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from dashboard import keys, links, resources, ui  # noqa: E402

# (file, title, icon); the first is the default page.
PAGE_TABLE = [
    ("home.py", "Home", ":material/home:"),
    ("data.py", "Data", ":material/dataset:"),
    ("embed.py", "Embed", ":material/memory:"),
    ("map.py", "Map", ":material/scatter_plot:"),
    ("compare.py", "Compare", ":material/compare:"),
    ("findings.py", "Findings", ":material/lightbulb:"),
]


def build_pages() -> list:
    pages = []
    for i, (name, title, icon) in enumerate(PAGE_TABLE):
        path = ui.page_file(name)
        if path.is_file():
            pages.append(st.Page(path, title=title, icon=icon, default=i == 0))
    return pages


st.set_page_config(page_title="Parallax", page_icon=":material/scatter_plot:", layout="wide")
resources.workspace().warm_up()  # the map path's imports run in a background thread meanwhile
page = st.navigation(build_pages())
links.restore_from_url()  # a shared link reopens the same view (before any page reads state)
# Streamlit forgets a widget's value once a page without that widget runs: the Map's view
# (its maps, projection, colour) would reset on every visit to another page. Assigned back
# here, it is the session's, as its dataset and models are.
for kept in (keys.MAP_MODELS, keys.MAP_METHOD, keys.MAP_COLOUR):
    if kept in st.session_state:
        st.session_state[kept] = st.session_state[kept]
page.run()
