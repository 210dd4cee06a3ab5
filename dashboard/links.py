"""Shareable URLs: a page's view (dataset, models, colour, projection, selection) in its link.

``dashboard.urlstate`` encodes and decodes; this module applies a link to the session once and
keeps the address bar in step with what a page shows.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from dashboard import keys, state, ui, urlstate
from engine.errors import ParallaxError


def url_params() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in st.query_params}


def restore_from_url() -> None:
    """Once per session: apply the view in the page URL (``urlstate``) to the session state.

    A link is visitor input: its dataset spec goes through ``check_spec_allowed`` and its model
    specs through the same policy; a refused one is left out and reported by ``url_error``.
    """
    if st.session_state.get(keys.URL_RESTORED):
        return
    st.session_state[keys.URL_RESTORED] = True
    view = urlstate.decode_view(url_params())
    if view.dataset:
        try:
            state.check_spec_allowed(view.dataset)
        except ParallaxError as exc:
            st.session_state[keys.URL_ERROR] = f"The link's dataset was not opened: {exc}"
            view = dataclasses.replace(view, selection=None)  # its rows are not this dataset's
        else:
            state.set_dataset_spec(view.dataset)
    if view.models:
        # A link's model list is visitor input too: refused specs never reach the session.
        specs = list(dict.fromkeys(m.split(" · ")[0] for m in view.models))
        allowed, refused = state.workspace().allowed_model_specs(specs)
        if refused:
            st.session_state.setdefault(
                keys.URL_ERROR, f"The link's model was not used: {refused[0]}"
            )
        models = [m for m in view.models if m.split(" · ")[0] in allowed]
        if models:
            st.session_state[keys.MAP_MODELS] = models
            specs = [m.split(" · ")[0] for m in models]
            state.set_model_specs([*specs, *[s for s in state.model_specs() if s not in specs]])
    if view.colour:
        st.session_state[keys.MAP_COLOUR] = view.colour
    if view.method:
        st.session_state[keys.MAP_METHOD] = view.method
        st.session_state[keys.HOME_METHOD] = view.method
    if view.selection is not None:
        st.session_state[keys.URL_SELECTION] = view.selection


def url_error() -> str | None:
    return st.session_state.pop(keys.URL_ERROR, None)


def show_url_error() -> None:
    """What of a shared link was refused (``restore_from_url``), as one warning."""
    if (link_error := url_error()) is not None:
        st.warning(ui.plain(link_error), icon=":material/link_off:")


def start_page(title: str) -> None:
    """A page's first lines: its title, the view its link asks for, what of it was refused."""
    st.title(title)
    restore_from_url()
    show_url_error()


def sync_url(view: urlstate.View) -> None:
    """Make the page URL describe ``view`` (only when it differs: no needless URL churn)."""
    params = urlstate.encode_view(view)
    if params != url_params():
        st.query_params.from_dict(params)
