"""What every session shares: one ``engine.workspace.Workspace`` per cache root.

The workspace holds the opened datasets and the loaded models under the engine's byte bounds
(one holder for every door: the dashboard, the CLI and the HTTP service), so nothing here
caches datasets or models of its own. It is keyed by the cache root, so a process whose
``PARALLAX_CACHE`` changes (tests do this) never reuses a dataset extracted into another
cache. What one session may open and load (view-only mode, the visitor policy) is
``dashboard.state``'s: pages go through ``state.workspace()``, the visitor's view of this one.
"""

from __future__ import annotations

import uuid
from typing import Any

import streamlit as st

from dashboard import keys, viewonly
from engine.settings import cache_dir
from engine.workspace import Workspace


@st.cache_resource(show_spinner=False, max_entries=4)
def _workspace(root: str) -> Workspace:
    ws = Workspace(root)
    ws.on_release(release_closed_sessions)
    return ws


def release_closed_sessions() -> None:
    """Shut down the sessions of tabs closed more than ``server.disconnectedSessionTTL`` ago.

    Streamlit keeps a closed tab's session (its state, its uploaded files) for reconnection in
    a TTL cache that drops expired entries only when it is next touched, and without shutting
    them down: on a quiet server nobody touches it, so every visitor's last session stays in
    memory. The engine's idle reaper calls this on each tick; the expiry runs on Streamlit's
    event loop, the one thread that may touch that cache. Internals of Streamlit 1.67, reached
    defensively: if they move, nothing happens (and nothing breaks).
    """
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return
    runtime = Runtime.instance()
    storage = getattr(getattr(runtime, "_session_mgr", None), "_session_storage", None)
    cache = getattr(storage, "_cache", None)
    expire = getattr(cache, "expire", None)
    objs = getattr(runtime, "_async_objs", None)
    loop = getattr(objs, "eventloop", None)
    if not callable(expire) or loop is None or loop.is_closed():
        return

    def expire_and_shut_down() -> None:
        for _, info in expire():
            info.session.shutdown()

    loop.call_soon_threadsafe(expire_and_shut_down)


def workspace() -> Workspace:
    """The operator's workspace under the current cache root (``PARALLAX_CACHE`` or
    ``./cache``): shared by every session, trusted. Sessions use ``session_workspace()``."""
    return _workspace(str(cache_dir()))


def session_id() -> str:
    """This browser session's id: its uploads' namespace and its visitor identity."""
    if keys.SESSION_ID not in st.session_state:
        st.session_state[keys.SESSION_ID] = uuid.uuid4().hex
    return st.session_state[keys.SESSION_ID]


def session_workspace() -> Workspace:
    """The shared workspace seen by this session's visitor: every dataset or model spec it
    names is checked by its ``VisitorPolicy`` (deny by default: its own uploads, the
    operator's ``PARALLAX_SERVER_PATHS`` roots and configured bundle). Cheap to build; built
    per call so a changed operator setting holds at once."""
    operator_files = [viewonly.configured_bundle(), viewonly.DEMO_BUNDLE]
    return workspace().visitor(session_id(), operator_files)


READ_ONLY_NOTICE = (
    "This deployment's cache is read-only: what is already in it is shown, and nothing new "
    "can be computed or saved."
)


def cache_read_only() -> bool:
    """Whether this process cannot write the cache (a read-only mount, a folder it may not
    write): pages then show what is cached, say so once, and start no job that must save."""
    return not workspace().cache.writable


def engine_cache():  # -> engine.store.cache.Cache
    """The engine cache under the current cache root (the workspace's)."""
    return workspace().cache


def get_dataset(spec: str, progress: Any = None):  # -> Dataset
    """The opened dataset for ``spec``, shared by every session (datasets are read-only),
    opened through this session's visitor view: the policy decides before anything is read.
    ``progress`` reports a folder's image checks the first time."""
    return session_workspace().open(spec, progress=progress)


@st.cache_data(show_spinner=False, ttl=300)
def known_models() -> list[dict[str, Any]]:
    """The engine's model catalogue (spec, kind, modalities, description, available_offline)."""
    return workspace().models()


@st.cache_data(show_spinner=False, ttl=300)
def list_demos() -> list[dict[str, Any]]:
    return workspace().demos()
