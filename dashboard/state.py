"""This session: its dataset and models, and what it may open and load.

Anything a user uploads lives under ``cache/uploads/<session id>/`` so one session never sees
another's files. Resources shared by every session (the cache, datasets, models) are
``dashboard.resources``'; cached vectors, maps and UMAP jobs are ``dashboard.projections``';
the shareable URL is ``dashboard.links``'.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import streamlit as st

from dashboard import keys, ui, viewonly
from dashboard.resources import engine_cache, get_dataset, load_model_shared
from engine.settings import REPO_ROOT

DEFAULT_DATASET = "demo:digits"
DEFAULT_MODELS = ["baseline:pixels"]
# The home page's map needs no weights and no network: it works on a fresh, offline install.
HOME_DATASET = "demo:digits"
HOME_MODEL = "baseline:pixels"
PAGES_DIR = REPO_ROOT / "pages"


def page_file(name: str) -> Path:
    """Absolute path of a page script (``"data.py"``): what st.Page / st.page_link accept."""
    return PAGES_DIR / name


def get_model(spec: str):  # -> EmbeddingModel
    """One loaded model per spec, shared by all sessions (forward passes are locked inside).

    In view-only mode only the weight-free baselines load; anything else raises
    ``viewonly.ViewOnlyError`` (a one-line ``ParallaxError``) without importing torch.
    """
    viewonly.require_model(spec, f"{spec} cannot be loaded here")
    check_model_allowed(spec)  # a visitor's or a link's spec: never a server path or remote code
    return load_model_shared(spec)


def get_models(specs: list[str]) -> tuple[list[Any], list[str]]:
    """(loaded models, one-line errors) for ``specs``; every model is tried."""
    models, errors = [], []
    for spec in specs:
        try:
            models.append(get_model(spec))
        except Exception as exc:  # one broken spec must not stop the others
            errors.append(ui.error_line(exc, f"Loading {spec}"))
    return models, errors


def view_only() -> bool:
    """True on a host with no models (or with ``PARALLAX_VIEW_ONLY=1``): browse bundles only."""
    return viewonly.is_view_only()


def view_only_notice(what: str | None = None) -> None:
    """The one plain line every model-needing feature shows in view-only mode."""
    text = f"{what}: {viewonly.MESSAGE}" if what else viewonly.sentence()
    st.info(text, icon=":material/visibility:")


# -- session ------------------------------------------------------------------------------------
def session_id() -> str:
    if keys.SESSION_ID not in st.session_state:
        st.session_state[keys.SESSION_ID] = uuid.uuid4().hex
    return st.session_state[keys.SESSION_ID]


def session_upload_dir() -> Path:
    """This session's private upload folder, inside the cache (``engine.store.uploads``; it may not
    exist yet)."""
    from engine.store.uploads import owner_dir

    return owner_dir(session_id(), engine_cache())


def default_dataset() -> str:
    """``bundle:PATH`` of the configured bundle (``PARALLAX_BUNDLE``, or the demo bundle in
    view-only mode), else ``DEFAULT_DATASET``."""
    bundle = viewonly.configured_bundle()
    return viewonly.bundle_spec(bundle) if bundle is not None else DEFAULT_DATASET


def default_models() -> list[str]:
    bundle = viewonly.configured_bundle()
    specs = viewonly.bundle_model_specs(bundle) if bundle is not None else []
    return specs or list(DEFAULT_MODELS)


def dataset_spec() -> str:
    return st.session_state.get(keys.DATASET_SPEC) or default_dataset()


def set_dataset_spec(spec: str) -> None:
    st.session_state[keys.DATASET_SPEC] = spec


def model_specs() -> list[str]:
    specs = st.session_state.get(keys.MODEL_SPECS)
    return list(specs) if specs is not None else default_models()


def set_model_specs(specs: list[str]) -> None:
    st.session_state[keys.MODEL_SPECS] = list(dict.fromkeys(specs))


def preferred_order(names: list[str]) -> list[str]:
    """``names`` (model specs) with this session's models first, in the order it picked them."""
    pref = model_specs()
    return sorted(names, key=lambda s: (s not in pref, pref.index(s) if s in pref else 0, s))


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


def current_dataset():  # -> Dataset
    """The dataset every page works on (raises ``ParallaxError`` if it cannot be opened)."""
    return get_dataset(dataset_spec())


# -- the visitor policy (security) ---------------------------------------------------------------
def visitor_policy():  # -> engine.policy.VisitorPolicy
    """What this session's visitor may name (``engine.policy``): deny by default, their own
    uploads, the operator's ``PARALLAX_SERVER_PATHS`` roots and configured bundle."""
    from engine.policy import VisitorPolicy

    configured = [viewonly.configured_bundle(), viewonly.DEMO_BUNDLE]
    return VisitorPolicy.for_visitor(engine_cache().root, session_id(), configured)


def check_spec_allowed(spec: str) -> None:
    """Refuse a dataset spec this session's visitor may not open (``DatasetError``)."""
    visitor_policy().check_dataset_spec(spec)


def check_model_allowed(spec: str) -> None:
    """Refuse a model spec this session's visitor may not load (``ModelUnavailable``)."""
    visitor_policy().check_model_spec(spec)
