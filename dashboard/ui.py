"""UI helpers shared by every page: error display, progress bars, dataset summaries.

Errors are always shown as one ``st.error`` line, as text (never Markdown). A ``ParallaxError``
is a user-facing message and is shown as is; anything else is a bug, shown as a short line with
its traceback in the server log (and, for the operator only, in an expander).
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from engine.errors import ParallaxError
from engine.settings import REPO_ROOT

try:  # Streamlit's own control flow (st.rerun, st.stop) must pass through untouched.
    from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException
except ImportError:  # pragma: no cover - older/newer layout
    ScriptControlException = ()  # type: ignore[assignment,misc]

_LOG = logging.getLogger("parallax.dashboard")
PAGES_DIR = REPO_ROOT / "pages"


# -- errors -------------------------------------------------------------------------------------
def error_line(exc: BaseException, action: str | None = None) -> str:
    """The one line shown for ``exc``."""
    if isinstance(exc, ParallaxError):
        msg = str(exc) or type(exc).__name__
        return f"{action}: {msg}" if action else msg
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    what = action or "Something"
    return (
        f"{what} failed unexpectedly ({type(exc).__name__}: {first})"
        if first
        else (f"{what} failed unexpectedly ({type(exc).__name__})")
    )


# What turns text into a link, an image (fetched by the viewer's browser) or HTML in
# Streamlit's Markdown: brackets (links, images, references), angle brackets (autolinks,
# tags) and the backslash that could undo an escape. Emphasis is left alone (harmless).
_MARKDOWN_SPECIALS = re.compile(r"([\\\[\]<>])")


def plain(text: object) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it literally: an untrusted string
    (a link's spec, a file name, an error line quoting either) can never become an image,
    a link or HTML. Use it wherever visitor input goes into ``st.markdown`` / ``st.error``."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", str(text))


def operator_details() -> bool:
    """Whether tracebacks may be shown on the page: only when the operator configured
    ``client.showErrorDetails`` to show them (the committed config says ``type``)."""
    try:
        value = st.get_option("client.showErrorDetails")
    except Exception:  # an unknown option in another Streamlit version: the safe answer
        return False
    return value is True or str(value).lower() in ("full", "stacktrace", "true")


def show_error(exc: BaseException, action: str | None = None, container: Any = None) -> None:
    """``st.error`` one-liner, shown as text. An unexpected exception's traceback goes to the
    server log; the page adds a "Details" expander only for the operator (see
    ``operator_details``), never for a visitor of a shared deployment."""
    target = container if container is not None else st
    target.error(plain(error_line(exc, action)), icon=":material/error:")
    if not isinstance(exc, ParallaxError):
        _LOG.error("%s", error_line(exc, action), exc_info=exc)
        if operator_details():
            with target.expander("Details (for a bug report)"):
                st.code("".join(traceback.format_exception(exc)), language="text")


class guard:  # lower case: reads like a statement, ``with guard("Opening the dataset"):``
    """Context manager: an exception inside is shown with ``show_error`` and swallowed.

    ``failed`` / ``error`` tell the caller what happened. Streamlit's control-flow exceptions
    (``st.rerun``, ``st.stop``) and ``BaseException``s such as KeyboardInterrupt pass through.
    """

    def __init__(self, action: str | None = None, container: Any = None) -> None:
        self.action = action
        self.container = container
        self.error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def __enter__(self) -> guard:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        if ScriptControlException and isinstance(exc, ScriptControlException):
            return False
        self.error = exc
        show_error(exc, self.action, self.container)
        return True


# -- navigation ---------------------------------------------------------------------------------
def page_file(name: str) -> Path:
    """Absolute path of a page script (``"data.py"``): what st.Page / st.page_link accept."""
    return PAGES_DIR / name


def page_link(name: str, label: str, icon: str | None = None, container: Any = None) -> bool:
    """``st.page_link`` to ``pages/<name>``; a plain caption while that page is not registered
    (its file does not exist yet, or the page runs outside the app's navigation, as in tests)."""
    from streamlit.errors import StreamlitAPIException

    target = container if container is not None else st
    path = page_file(name)
    if path.is_file():
        try:
            target.page_link(str(path), label=label, icon=icon)
            return True
        except StreamlitAPIException:
            pass
    target.caption(f"{label} (not available yet)")
    return False


# -- progress -----------------------------------------------------------------------------------
def _rate(rate: float) -> str:
    return f"{rate:.1f}" if rate < 10 else f"{rate:,.0f}"


def format_progress(p: Any, label: str | None = None) -> str:
    """``"label — N/T items · X items/s · ETA Ys"`` (rate and ETA once they are known)."""
    parts = [f"{p.done:,}/{p.total:,} items"]
    if p.rate > 0:
        parts.append(f"{_rate(p.rate)} items/s")
    if p.done >= p.total:
        parts.append("done")
    elif p.eta_s is not None:
        parts.append(f"ETA {p.eta_s:.0f}s")
    else:
        parts.append("ETA …")
    text = " · ".join(parts)
    return f"{label} — {text}" if label else text


class ProgressBar:
    """An engine ``ProgressCallback`` that drives one ``st.progress`` bar.

    Updates are throttled (the engine reports every batch) but the first and last ones always
    go through. ``clear()`` removes the bar.
    """

    def __init__(self, label: str, container: Any = None, min_interval_s: float = 0.2) -> None:
        self.label = label
        self.min_interval_s = min_interval_s
        self.last: Any = None
        self._last_t = 0.0
        slot = (container if container is not None else st).empty()
        self._slot = slot
        self._bar = slot.progress(0.0, text=f"{label} — starting…")

    def __call__(self, p: Any) -> None:
        self.last = p
        now = time.monotonic()
        final = p.done >= p.total
        if not final and now - self._last_t < self.min_interval_s:
            return
        self._last_t = now
        self._bar.progress(float(p.fraction), text=format_progress(p, self.label))

    def clear(self) -> None:
        self._slot.empty()


class StageProgressBar(ProgressBar):
    """``ProgressBar`` whose text names the engine's current stage (embed, compare, train)."""

    def __call__(self, p: Any) -> None:
        self.label = p.stage or self.label
        super().__call__(p)


# -- dataset summaries --------------------------------------------------------------------------
def modalities(ds: Any) -> list[str]:
    out = []
    if getattr(ds, "has_images", False):
        out.append("images")
    if getattr(ds, "texts", None) is not None:
        out.append("texts")
    return out


def label_counts(ds: Any) -> pd.Series:
    """Items per label, most frequent first (unlabelled items count as "(none)")."""
    labels = ["(none)" if lab is None else str(lab) for lab in ds.labels]
    return pd.Series(labels, dtype="object").value_counts()


def dataset_metrics(ds: Any) -> None:
    counts = label_counts(ds)
    labelled = int(sum(1 for lab in ds.labels if lab is not None))
    cols = st.columns(4)
    cols[0].metric("Items", f"{len(ds):,}")
    cols[1].metric("Modalities", " + ".join(modalities(ds)) or "none")
    cols[2].metric("Labels", f"{len(counts):,}" if labelled else "none")
    cols[3].metric("Skipped", f"{len(ds.skipped):,}")


def label_chart(ds: Any, top: int = 40) -> None:
    counts = label_counts(ds)
    if len(counts) <= 1 and "(none)" in counts.index:
        st.caption("No labels in this dataset.")
        return
    shown = counts.head(top)
    title = (
        f"Items per label (top {top} of {len(counts)})"
        if len(counts) > top
        else ("Items per label")
    )
    st.markdown(f"**{title}**")
    st.bar_chart(shown.rename("items"), horizontal=len(shown) > 12, height=320)


def sample_indices(n: int, k: int, seed: int = 0) -> list[int]:
    """``k`` evenly spread, seeded item indices (same sample on every rerun)."""
    if n <= k:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


def _caption(ds: Any, i: int, width: int = 40) -> str:
    parts = []
    if ds.labels[i] is not None:
        parts.append(str(ds.labels[i]))
    if ds.texts is not None and ds.texts[i]:
        text = str(ds.texts[i])
        parts.append(text if len(text) <= width else text[: width - 1] + "…")
    return plain(" · ".join(parts) or str(ds.ids[i]))  # an image caption is Markdown


def thumbnail(ds: Any, i: int, size: int = 128):  # -> PIL.Image.Image
    """The dataset's own thumbnail when it has one, else a downscaled ``load_image``."""
    thumb = getattr(ds, "thumbnail", None)
    if callable(thumb):
        try:
            return thumb(i, size=size)
        except TypeError:  # a dataset whose thumbnail() takes no size
            return thumb(i)
    image = ds.load_image(i)
    image.thumbnail((size, size))
    return image


def sample_gallery(ds: Any, k: int = 18, columns: int = 6, seed: int = 0) -> None:
    """A grid of thumbnails (captions = label · text), or sample texts for text-only data."""
    idx = sample_indices(len(ds), k, seed)
    if not ds.has_images:
        rows = [
            {"id": ds.ids[i], "label": ds.labels[i], "text": (ds.texts or [""] * len(ds))[i]}
            for i in idx
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        return
    cols = st.columns(columns)
    for slot, i in enumerate(idx):
        col = cols[slot % columns]
        try:
            col.image(thumbnail(ds, i), caption=_caption(ds, i), width="stretch")
        except Exception as exc:  # one broken item must not break the gallery
            col.caption(plain(f"{ds.ids[i]}: {error_line(exc)}"))


def items_frame(ds: Any, rows: int | None = None) -> pd.DataFrame:
    """id / label / text plus the dataset's metadata columns, in dataset order."""
    n = len(ds) if rows is None else min(rows, len(ds))
    frame = pd.DataFrame({"id": ds.ids[:n], "label": ds.labels[:n]})
    if ds.texts is not None:
        frame["text"] = ds.texts[:n]
    meta = ds.metadata()
    if meta is not None and len(meta.columns):
        meta = meta.head(n).reset_index(drop=True)
        for col in meta.columns:
            name = col if col not in frame.columns else f"meta:{col}"
            frame[name] = meta[col].to_numpy()
    return frame


def metadata_preview(ds: Any, rows: int = 50) -> None:
    st.dataframe(items_frame(ds, rows), hide_index=True, width="stretch", height=280)


def skipped_table(ds: Any) -> None:
    if not ds.skipped:
        st.caption("No items were skipped.")
        return
    frame = pd.DataFrame([{"source": s.source, "reason": s.reason} for s in ds.skipped])
    st.warning(f"{len(frame):,} item(s) were skipped; reasons below.", icon=":material/warning:")
    st.dataframe(frame, hide_index=True, width="stretch")


def dataset_caption(ds: Any) -> str:
    kinds = " + ".join(modalities(ds)) or "no content"
    skipped = f", {len(ds.skipped):,} skipped" if ds.skipped else ""
    return f"{len(ds):,} items ({kinds}){skipped}"
