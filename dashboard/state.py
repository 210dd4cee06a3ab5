"""This session: its dataset and models, what it may open and load, and the sidebar.

Every engine call of a session goes through ``workspace()``: the one shared
``engine.workspace.Workspace`` seen by this session's visitor (deny by default; its uploads
under ``cache/uploads/<session id>/`` are its own). The shareable URL is ``dashboard.links``'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from dashboard import keys, resources, ui, viewonly
from engine.workspace import Workspace

FALLBACK_DATASET = "demo:digits"
# The home page's map needs no weights and no network: it works on a fresh, offline install.
HOME_DATASET = "demo:digits"
HOME_MODEL = "baseline:pixels"


def workspace() -> Workspace:
    """The engine as this session may use it: the shared workspace through its visitor's
    policy (every dataset and model spec it names is checked there)."""
    return resources.session_workspace()


def session_id() -> str:
    return resources.session_id()


def get_model(spec: str):  # -> EmbeddingModel
    """One loaded model per spec, shared by all sessions (held by the workspace).

    In view-only mode only the weight-free baselines load; anything else raises
    ``viewonly.ViewOnlyError`` (a one-line ``ParallaxError``) without importing torch.
    """
    viewonly.require_model(spec, f"{spec} cannot be loaded here")
    with st.spinner(f"Loading {spec}…", show_time=True):
        return workspace().model(spec)  # the visitor's policy decides first


def load_models(specs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the specs that loaded, one-line errors of the others); every model is tried."""
    loaded, errors = [], []
    for spec in specs:
        try:
            get_model(spec)
            loaded.append(spec)
        except Exception as exc:  # one broken spec must not stop the others
            errors.append(ui.error_line(exc, f"Loading {spec}"))
    return loaded, errors


def view_only() -> bool:
    """True on a host with no models (or with ``PARALLAX_VIEW_ONLY=1``): browse bundles only."""
    return viewonly.is_view_only()


def view_only_notice(what: str | None = None) -> None:
    """The one plain line every model-needing feature shows in view-only mode."""
    text = f"{what}: {viewonly.MESSAGE}" if what else viewonly.sentence()
    st.info(text, icon=":material/visibility:")


# -- the session's dataset and models ----------------------------------------------------------
def default_dataset() -> str:
    """``bundle:PATH`` of the configured bundle (``PARALLAX_BUNDLE``, or the demo bundle in
    view-only mode), else ``FALLBACK_DATASET``."""
    bundle = viewonly.configured_bundle()
    return viewonly.bundle_spec(bundle) if bundle is not None else FALLBACK_DATASET


def default_models(ds: Any | None) -> list[str]:
    """The models a session starts with: a configured bundle's, else those that fit the
    data (``Workspace.default_models``: the image–text models on images, the text model on
    texts, never two sharing a text tower on texts)."""
    bundle = viewonly.configured_bundle()
    specs = viewonly.bundle_model_specs(bundle) if bundle is not None else []
    if specs and ds is not None and ds.spec == viewonly.bundle_spec(bundle):
        return specs
    if ds is None:
        return specs
    try:
        return workspace().default_models(ds)
    except Exception:  # the catalogue only picks defaults: none is better than a broken page
        return []


def dataset_spec() -> str:
    return st.session_state.get(keys.DATASET_SPEC) or default_dataset()


def set_dataset_spec(spec: str, ds: Any | None = None) -> None:
    """Make ``spec`` the session's dataset. With its opened ``ds``, the chosen models that
    cannot embed it are dropped; when none is left the session starts from the defaults that
    fit the new data (the sidebar never lists image models for a text dataset)."""
    changed = st.session_state.get(keys.DATASET_SPEC) != spec
    st.session_state[keys.DATASET_SPEC] = spec
    if changed and ds is not None and keys.MODEL_SPECS in st.session_state:
        fit = workspace().models_for(ds, st.session_state[keys.MODEL_SPECS]).fit
        if fit:
            st.session_state[keys.MODEL_SPECS] = fit
        else:
            st.session_state.pop(keys.MODEL_SPECS)


def model_specs() -> list[str]:
    specs = st.session_state.get(keys.MODEL_SPECS)
    if specs is not None:
        return list(specs)
    ds = None
    try:
        ds = current_dataset()
    except Exception:  # an unopenable dataset has no defaults; the page says why
        ds = None
    return default_models(ds)


def set_model_specs(specs: Sequence[str]) -> None:
    st.session_state[keys.MODEL_SPECS] = list(dict.fromkeys(specs))


def preferred_order(names: list[str]) -> list[str]:
    """``names`` (model specs) with this session's models first, in the order it picked them."""
    pref = model_specs()
    return sorted(names, key=lambda s: (s not in pref, pref.index(s) if s in pref else 0, s))


def get_dataset(spec: str, progress: Any = None):  # -> Dataset
    """The opened dataset for ``spec``, through this session's policy."""
    return workspace().open(spec, progress=progress)


def open_current_dataset():  # -> Dataset | None
    """The session's dataset, or None after showing why it cannot be opened (one line) and a
    link to the Data page."""
    spec = dataset_spec()
    ds = None
    with ui.guard(f"Opening {spec}"):
        ds = get_dataset(spec)
    if ds is None:
        ui.page_link("data.py", "Choose another dataset", ":material/dataset:")
    return ds


def page_dataset():  # -> Dataset
    """The dataset of a page that needs one; when it cannot be opened, the page shows why and
    the sidebar, and stops there."""
    ds = open_current_dataset()
    if ds is None:
        sidebar(dataset_spec(), None, [])
        st.stop()
    return ds


def current_dataset():  # -> Dataset
    """The dataset every page works on (raises ``ParallaxError`` if it cannot be opened)."""
    return get_dataset(dataset_spec())


# -- the visitor policy (security) --------------------------------------------------------------
def check_spec_allowed(spec: str) -> None:
    """Refuse a dataset spec this session's visitor may not open (``DatasetError``)."""
    workspace().check_dataset_spec(spec)


def check_model_allowed(spec: str) -> None:
    """Refuse a model spec this session's visitor may not load (``ModelUnavailable``)."""
    workspace().check_model_spec(spec)


# -- the sidebar ---------------------------------------------------------------------------------
def sidebar(spec: str | None, ds: Any | None, models: Sequence[str], what: str = "Models") -> None:
    """The sidebar names what the page shows: its dataset (spec and size) and its models.
    Each page calls it once it knows (Home a bundle's maps, Map the maps it draws)."""
    with st.sidebar:
        if view_only():
            st.caption(
                ":material/visibility: **View-only**: precomputed bundles, no models here "
                "(docs/deploy.md)."
            )
        st.markdown("**Dataset**")
        if spec is None:
            st.caption("none opened")
        else:
            st.code(spec, language=None)
            if ds is not None:
                st.caption(ui.dataset_caption(ds))
        st.markdown(f"**{what}**")
        for model in dict.fromkeys(models):
            st.code(model, language=None)
        if not models:
            st.caption("none yet")
