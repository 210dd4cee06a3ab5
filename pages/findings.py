"""Findings: label errors, duplicates, outliers, leaks and named clusters, under every model.

Engine calls go through one ``Workspace`` (``engine.workspace``). A finding's button puts its
rows into the Map selection (``dashboard.map_view.set_selection``), so they are selected on
every map here and on the Map page; the maps here can be coloured by a finding; a finding's
rows can be kept as a named subset; each list downloads as CSV.

A view-only deployment computes nothing: it shows the findings a bundle carries (installed into
the cache when the bundle is opened), or says there are none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import keys, maps, state, ui
from dashboard import map_view as mv

MAX_SHOWN = 12  # findings listed per kind (the download holds them all)
THUMB = 56


def workspace():
    """This session's view of the deployment's workspace (its visitor policy applies)."""
    return state.workspace()


def _item_caption(ds: Any, row: int) -> str:
    label = ds.labels[row]
    text = ds.texts[row] if ds.texts is not None else None
    out = f"row {row}" + (f" · {label}" if label is not None else "")
    return out + (f" · {text[:80]}" if text else "")


def show_items(ds: Any, rows: list[int]) -> None:
    """Rows side by side: thumbnails for images, texts otherwise."""
    rows = rows[:8]
    cols = st.columns(max(1, len(rows)))
    for col, r in zip(cols, rows, strict=False):
        with col:
            if ds.has_images:
                try:
                    st.image(ds.thumbnail(int(r), THUMB), width=THUMB)
                except Exception:  # an unreadable item: its caption still says which row
                    st.caption("(no preview)")
            st.caption(_item_caption(ds, int(r)))


def select_button(rows: list[int], key: str, source: str) -> None:
    if st.button("Select", key=key, icon=":material/select_all:", help="Select on every map"):
        mv.set_selection(np.asarray(rows, dtype=np.int64), source)
        st.rerun()


def models_line(models: list[str], all_models: list[str]) -> str:
    if not models:
        return "seen by the models together only"
    if len(models) == len(all_models):
        if len(models) == 1:
            return f"seen by {models[0]}"
        return "both models agree" if len(models) == 2 else f"all {len(models)} models agree"
    return "seen by " + ", ".join(models)


def kind_frame(kind: str, items: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per finding, for the download."""
    rows = []
    for i, it in enumerate(items):
        rec = {"finding": i, **{k: v for k, v in it.items() if k not in ("rows", "models")}}
        rec["rows"] = " ".join(str(r) for r in it.get("rows", [it.get("row")]))
        rec["models"] = " ".join(it.get("models", []))
        rows.append(rec)
    return pd.DataFrame(rows)


def kind_rows(kind: str, items: list[dict[str, Any]]) -> list[int]:
    out: set[int] = set()
    for it in items:
        out.update(int(r) for r in it.get("rows", [it.get("row")]))
    return sorted(out)


def colouring_for(found: Any, kind: str, n: int) -> maps.Colouring:
    """Every item coloured by whether (and by how many models) a finding of ``kind`` holds it."""
    values = np.full(n, "none", dtype=object)
    if kind == "clusters":
        first = next(iter(found.clusters.values()), [])
        for c in first:
            values[np.asarray(c["rows"], dtype=np.int64)] = c["name"]
        return maps.categorical(values, "cluster")
    items = getattr(found, kind)
    if kind == "outliers":
        items = [o for o in items if o["models"]]
    for it in items:
        tag = f"{len(it.get('models', []))} model(s)"
        values[np.asarray(it.get("rows", [it.get("row")]), dtype=np.int64)] = tag
    return maps.categorical(values, kind.replace("_", " "))


def keep_subset(ds: Any, name: str, rows: list[int], key: str) -> None:
    if st.button("Keep as subset", key=key, icon=":material/bookmark_add:"):
        with ui.guard("Keeping the subset"):
            kept = workspace().keep_subset(ds, name, np.asarray(rows, dtype=np.int64))
            st.success(f"Kept {len(kept.rows):,} item(s) as **{ui.plain(kept.name)}**.")


def section_header(ds: Any, kind: str, title: str, items: list[dict[str, Any]]) -> None:
    rows = kind_rows(kind, items)
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
    c1.subheader(f"{title} ({len(items):,})")
    with c2:
        if rows:
            select_button(rows, f"sel_all_{kind}", f"findings:{kind}")
    with c3:
        if rows:
            keep_subset(ds, f"findings {kind.replace('_', ' ')}", rows, f"keep_{kind}")
    c4.download_button(
        "CSV",
        data=kind_frame(kind, items).to_csv(index=False).encode("utf-8"),
        file_name=f"parallax-findings-{kind}.csv",
        mime="text/csv",
        icon=":material/download:",
        key=f"csv_{kind}",
        disabled=not items,
    )


def label_errors(ds: Any, found: Any) -> None:
    section_header(ds, "label_errors", "Likely label errors", found.label_errors)
    for i, e in enumerate(found.label_errors[:MAX_SHOWN]):
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        with c1:
            st.markdown(
                f"row **{e['row']}**: labelled **{e['label']}**, looks like "
                f"**{e['suggested']}** (score {e['score']:.2f}; "
                f"{models_line(e['models'], found.models)})"
            )
            show_items(ds, [e["row"]])
        with c2:
            select_button([e["row"]], f"sel_le_{i}", "findings:label_errors")


def groups(ds: Any, found: Any, kind: str, title: str, items: list[dict[str, Any]]) -> None:
    section_header(ds, kind, title, items)
    for i, g in enumerate(items[:MAX_SHOWN]):
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        with c1:
            what = "exact copies" if g.get("exact") else "near copies"
            extra = f" across {' / '.join(g['splits'])}" if "splits" in g else ""
            st.markdown(
                f"**{len(g['rows'])} {what}**{extra}: rows {', '.join(map(str, g['rows']))} "
                f"({models_line(g['models'], found.models)})"
            )
            show_items(ds, list(g["rows"]))  # the group side by side
        with c2:
            select_button(list(g["rows"]), f"sel_{kind}_{i}", f"findings:{kind}")


def outliers(ds: Any, found: Any) -> None:
    flagged = [o for o in found.outliers if o["models"]]
    section_header(ds, "outliers", "Outliers", flagged)
    shown = found.outliers[:MAX_SHOWN]
    st.caption("Most outlying first (a robust score averaged over the models).")
    cols = st.columns(4)
    for i, o in enumerate(shown):
        with cols[i % 4]:
            show_items(ds, [o["row"]])
            st.caption(f"score {o['score']:.2f} · {models_line(o['models'], found.models)}")
            select_button([o["row"]], f"sel_out_{i}", "findings:outliers")


def clusters(ds: Any, found: Any) -> None:
    st.subheader("Clusters")
    tabs = st.tabs(list(found.clusters)) if found.clusters else []
    for tab, (model, cl) in zip(tabs, found.clusters.items(), strict=True):
        with tab:
            for i, c in enumerate(cl[:MAX_SHOWN]):
                c1, c2 = st.columns([6, 1], vertical_alignment="center")
                c1.markdown(f"**{c['name']}** · {len(c['rows']):,} items")
                with c2:
                    select_button(c["rows"], f"sel_cl_{model}_{i}", "findings:clusters")


def draw_maps(ds: Any, found: Any) -> None:
    sources = [s for s in mv.embedded_sources(ds, found.models) if s.model in found.models]
    if not sources:
        return
    kinds = ["label_errors", "duplicates", "outliers", "leaks", "clusters"]
    colour_kind = st.selectbox(
        "Colour the maps by",
        kinds,
        key="findings_colour",
        format_func=lambda k: k.replace("_", " "),
    )
    mv.draw_maps(
        sources[:2], "PCA", colouring_for(found, colour_kind, len(ds)), n_items=len(ds), height=380
    )
    n_sel = len(mv.selected_rows())
    if n_sel:
        st.caption(f"{n_sel:,} item(s) selected on every map (and on the Map page).")


# -- the page ------------------------------------------------------------------------------------
st.title("Findings")
ds = state.open_current_dataset()
if ds is None:
    st.stop()
mv.sync_selection(ds.fingerprint(), len(ds))
embedded = [s.model for s in mv.embedded_sources(ds, state.model_specs())]
if not embedded:
    st.info("Embed this dataset first (Embed page): findings read each model's vectors.")
    st.stop()
meta_cols = [str(c) for c in ds.metadata().columns]
c1, c2 = st.columns([3, 1])
view_only = state.view_only()
chosen = c1.multiselect(
    "Models",
    list(dict.fromkeys(embedded)),
    # View-only: every bundled model, the set a bundle's findings were computed for.
    default=list(dict.fromkeys(embedded))[: None if view_only else 3],
    key="findings_models",
)
split = c2.selectbox(
    "Split column (leaks)",
    ["(none)", *meta_cols],
    index=(meta_cols.index("split") + 1) if "split" in meta_cols else 0,
    key="findings_split",
)
state.sidebar(state.dataset_spec(), ds, chosen)  # the sidebar names what the page shows
if not chosen:
    st.stop()
with ui.guard("Finding"):
    split_column = None if split == "(none)" else split
    if view_only:  # nothing is computed here: the bundle's findings, or a notice
        found = workspace().cached_findings(ds, chosen, split_column=split_column)
        if found is None:
            state.view_only_notice("No findings were bundled for these models")
            st.stop()
    else:
        with st.spinner("Finding label errors, duplicates, outliers, leaks and clusters ..."):
            found = workspace().find(ds, chosen, split_column=split_column)
    counts = found.counts()
    st.markdown(
        " · ".join(
            [
                f"**{counts['label_errors']:,}** label errors",
                f"**{counts['duplicates']:,}** duplicate groups "
                f"({counts['exact_duplicates']:,} exact)",
                f"**{counts['outliers']:,}** outliers",
                f"**{counts['leaks']:,}** {'leak' if counts['leaks'] == 1 else 'leaks'}",
            ]
        )
    )
    draw_maps(ds, found)
    if len(mv.selected_rows()) and st.button(
        "Clear selection", key="findings_clear", icon=":material/deselect:"
    ):
        mv.clear_selection()
        st.rerun()
    label_errors(ds, found)
    groups(ds, found, "duplicates", "Duplicates", found.duplicates)
    groups(ds, found, "leaks", "Leaks between splits", found.leaks)
    outliers(ds, found)
    clusters(ds, found)
    st.session_state[keys.MAP_SELECTION_DATASET] = ds.fingerprint()
