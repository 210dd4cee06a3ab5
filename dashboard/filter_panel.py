"""Filter the maps by label and metadata, and keep selections as named subsets.

The filter is a list of clauses in their plain JSON form (``Workspace.filter_mask``): the items
outside it are greyed on every map (their colour becomes "missing"), and one click selects the
items inside it. A selection can be kept under a name with the dataset (``Workspace.keep_subset``,
in the cache, in this visitor's own namespace), downloaded, deleted, and reopened by whoever holds
its link (``?subset=TOKEN``: an unguessable token, never a name another visitor could guess). A
subset's name is visitor input: always shown escaped.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import keys, maps, state, ui
from dashboard.map_view import set_selection
from engine.errors import ParallaxError

MAX_COLUMNS = 8  # metadata columns offered as filter controls
MAX_OPTIONS = 200  # values listed in a value filter
LINK_PARAM = "subset"
IN_FILTER = "in the filter"


def _values(series: pd.Series) -> list[str]:
    """The column's most frequent values (up to ``MAX_OPTIONS``) as texts, sorted. Counted by
    value and turned into text afterwards where that reads the same (10M labels: well under a
    second instead of ~1 s a column to make every row a string first)."""
    s = series.dropna()
    if isinstance(s.dtype, pd.CategoricalDtype):  # counted per category, in C
        if maps.texts_follow_values(pd.Series(s.cat.categories)):
            s = s.cat.remove_unused_categories()
            counts = s.value_counts()
            return sorted(str(v) for v in counts.index[counts.to_numpy() > 0][:MAX_OPTIONS])
        s = s.astype(object)
    if not maps.texts_follow_values(s):
        s = s.astype(str)
    return sorted(str(v) for v in s.value_counts().index[:MAX_OPTIONS])


def _column_values(ds: Any, column: str) -> pd.Series:
    if column == "label":
        return pd.Series(list(ds.labels), dtype=object)
    return ds.metadata()[column]


def _control(ds: Any, column: str, kind: str, key: str) -> dict[str, Any] | None:
    """One column's control; its clause (plain JSON), or None while it filters nothing."""
    label = ui.plain(column)  # a metadata column's name is the data's: a widget label is Markdown
    if kind == "values":
        picked = st.multiselect(label, _values(_column_values(ds, column)), key=key)
        return {"column": column, "op": "in", "values": list(picked)} if picked else None
    if kind == "number":
        nums = pd.to_numeric(ds.metadata()[column], errors="coerce").dropna()
        if nums.empty or float(nums.min()) == float(nums.max()):
            return None
        lo, hi = float(nums.min()), float(nums.max())
        chosen = st.slider(label, lo, hi, (lo, hi), key=key)
        if chosen == (lo, hi):
            return None
        return {"column": column, "op": "range", "min": float(chosen[0]), "max": float(chosen[1])}
    text = st.text_input(f"{label} contains", key=key).strip()
    return {"column": column, "op": "contains", "text": text} if text else None


def filter_controls(ds: Any, key: str = "map_filter") -> np.ndarray | None:
    """The filter expander; the mask of matching rows, or None when nothing is filtered."""
    ws = state.workspace()
    kinds = ws.filter_columns(ds)
    shown = ["label", *[c for c in kinds if c != "label"][:MAX_COLUMNS]]
    fingerprint = ds.fingerprint()
    clauses: list[dict[str, Any]] = []
    active = st.session_state.get(keys.MAP_FILTER) or {}
    title = "Filter by label and metadata"
    if active.get("dataset") == fingerprint and active.get("clauses"):
        title += f" ({len(active['clauses'])} active)"
    with st.expander(title, icon=":material/filter_alt:"):
        cols = st.columns(3)
        for i, column in enumerate(shown):
            with cols[i % 3]:
                clause = _control(ds, column, kinds[column], f"{key}_{fingerprint[:8]}_{column}")
            if clause is not None:
                clauses.append(clause)
        mask, described = None, []
        if clauses:
            with ui.guard("Filtering"):
                mask, described = ws.filter_mask(ds, clauses)
        st.session_state[keys.MAP_FILTER] = {"dataset": fingerprint, "clauses": clauses}
        if mask is None:
            st.caption("No filter: every item is drawn in colour.")
            return None
        n = int(mask.sum())
        st.markdown(
            f"**{n:,} of {len(ds):,} items** match: "
            + " · ".join(ui.plain(d) for d in described)
            + "; the others are greyed on every map."
        )
        if st.button(f"Select the {n:,} matching items", key=f"{key}_select", disabled=n == 0):
            set_selection(np.flatnonzero(mask), "filter")
            st.rerun()
    return mask


def dim_outside(colouring: maps.Colouring, mask: np.ndarray | None) -> maps.Colouring:
    """The colouring with every item outside ``mask`` made "missing" (grey on the maps)."""
    if mask is None:
        return colouring
    if colouring.kind == "categorical" and colouring.codes is not None:
        codes = np.where(mask, colouring.codes, -1).astype(np.int32)
        return dataclasses.replace(colouring, codes=codes)
    if colouring.kind == "numeric" and colouring.values is not None:
        values = np.where(mask, colouring.values, np.nan).astype(np.float32)
        return dataclasses.replace(colouring, values=values)
    codes = np.where(mask, 0, -1).astype(np.int32)
    return maps.Colouring("categorical", "filter", codes=codes, categories=(IN_FILTER,))


# -- named subsets ------------------------------------------------------------------------------
def apply_subset_link(ds: Any) -> None:
    """A link's ``?subset=TOKEN``: select that subset once (before the URL is rewritten)."""
    token = st.query_params.get(LINK_PARAM)
    done = (ds.fingerprint(), token)
    if not token or st.session_state.get(keys.MAP_SUBSET_APPLIED) == done:
        return
    st.session_state[keys.MAP_SUBSET_APPLIED] = done
    try:
        subset = state.workspace().subset_from_link(ds, token)
    except ParallaxError as exc:
        st.warning(ui.plain(f"The link's subset was not opened: {exc}"), icon=":material/link_off:")
        return
    set_selection(subset.rows, "subset")


def subset_link(token: str) -> str:
    """The query string that reopens this view with the subset of ``token`` selected."""
    params = {k: v for k, v in st.query_params.to_dict().items() if k not in (LINK_PARAM, "sel")}
    return "?" + urlencode({**params, LINK_PARAM: token})


def subsets_section(ds: Any, rows: np.ndarray) -> None:
    """Keep the selection under a name; open, download or share the subsets kept."""
    st.subheader("Named subsets")
    ws = state.workspace()  # a visitor's subsets are theirs: shared only by link
    with st.form("map_subset_form", border=False, clear_on_submit=True):
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        name = c1.text_input(
            f"Keep the {len(rows):,} selected item(s) as", placeholder="e.g. blurry cats"
        )
        if c2.form_submit_button("Keep", icon=":material/bookmark_add:", disabled=not len(rows)):
            with ui.guard("Keeping the subset"):
                active = st.session_state.get(keys.MAP_FILTER) or {}
                spec = active.get("clauses") if active.get("dataset") == ds.fingerprint() else None
                kept = ws.keep_subset(ds, name, rows, filter_spec=spec or None)
                st.success(f"Kept {len(kept.rows):,} item(s) as **{ui.plain(kept.name)}**.")
    kept = ws.subsets(ds)
    if not kept:
        st.caption("No subset kept with this dataset yet.")
        return
    by_name = {s.name: s for s in kept}
    s1, s2, s3, s4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    chosen = s1.selectbox(
        "Subsets kept with this dataset",
        list(by_name),
        key="map_subset_pick",
        format_func=lambda n: f"{n} ({len(by_name[n].rows):,} items)",
    )
    subset = by_name[chosen]
    if s2.button("Select it", icon=":material/select_all:", key="map_subset_open"):
        set_selection(subset.rows, "subset")
        st.rerun()
    s3.download_button(
        "Download CSV",
        data=lambda: ws.subset_csv(ds, subset),
        file_name=f"parallax-subset-{chosen}.csv",
        mime="text/csv",
        icon=":material/download:",
        key="map_subset_csv",
    )
    if s4.button("Delete", icon=":material/delete:", key="map_subset_delete"):
        with ui.guard("Deleting the subset"):
            ws.delete_subset(ds, chosen)
            st.rerun()
    if subset.token:
        st.caption("Link to reopen it on this deployment (append to the app's Map page address):")
        st.code(subset_link(subset.token), language=None)
