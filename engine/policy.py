"""The visitor policy: what someone using a shared deployment may name.

Trust model (docs/security.md): the **operator** (the environment, the command line, the files
in the repository) is trusted; a **visitor** (anything typed on a page, uploaded, or arriving
in a link) is not. Every surface a visitor reaches (the dashboard's pages, a shared-mode CLI,
the HTTP service) asks one ``VisitorPolicy`` before it opens a dataset spec or loads a model
spec. Deny by default:

- server paths only under the roots the operator lists in ``PARALLAX_SERVER_PATHS``
  (unset = none at all), plus the exact files the operator configured (``PARALLAX_BUNDLE``,
  the committed demo bundle);
- never the cache's own folders (anyone's uploads, extractions, downloads, vectors), nor a
  folder that contains the cache (``folder:<repo>`` would list ``<repo>/cache/uploads``),
  whatever the roots say; the visitor's own namespace (``uploads/<owner>/``) is the exception;
- dataset kinds from the kinds table (``engine.data.DATASET_KINDS``): a kind not listed for
  visitors is refused, and the server path of every kind that carries one is checked;
- model specs to *load*: only an allow-list (the baselines, the shipped ``demo:`` aliases,
  the catalogue's hub names, ``PARALLAX_VISITOR_MODELS``) under a size budget known before
  anything is built; to *name* (cached vectors): hub names, baselines, aliases, and a local
  path (``hf:PATH``, ``st:PATH``, ``open_clip:local-dir:PATH``, a checkpoint file) only under
  the operator's roots; ``trust_remote_code`` never.

Paths are resolved (``..``, symlinks) before any comparison. The policy does no I/O beyond
``resolve``: it decides, the caller opens. No Streamlit import here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from engine import settings
from engine.errors import DatasetError, Forbidden, ModelUnavailable

log = logging.getLogger(__name__)

SERVER_PATHS_ENV = "PARALLAX_SERVER_PATHS"
UPLOADS_DIR = "uploads"  # cache/uploads/<owner>/: each visitor's private namespace
_OWNER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REMOTE_CODE_RE = re.compile(r"trust_remote_code\s*=\s*(?!0\b|false\b|no\b|off\b)", re.I)


class PolicyError(Forbidden):
    """A visitor asked for something this deployment does not let visitors name."""


class DatasetRefused(PolicyError, DatasetError):
    """A dataset spec refused by the visitor policy (a ``DatasetError`` for existing callers)."""


class ModelRefused(PolicyError, ModelUnavailable):
    """A model spec refused by the visitor policy (a ``ModelUnavailable`` for callers)."""


def resolved(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute with ``~``, ``..`` and symlinks resolved (never raises)."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(p))


def server_roots_from_env() -> tuple[Path, ...]:
    """``PARALLAX_SERVER_PATHS`` (``os.pathsep``-separated), resolved; empty when unset."""
    return tuple(resolved(p) for p in settings.server_paths())


def check_owner(owner: str) -> str:
    """``owner`` if it is safe as one folder name (a session id), else ``PolicyError``."""
    if not isinstance(owner, str) or not _OWNER_RE.match(owner):
        raise PolicyError(f"invalid visitor id {str(owner)[:40]!r}")
    return owner


def owner_dir(cache_root: str | os.PathLike[str], owner: str) -> Path:
    """A visitor's upload namespace, ``<cache>/uploads/<owner>`` (not created)."""
    return Path(cache_root) / UPLOADS_DIR / check_owner(owner)


@dataclass(frozen=True)
class VisitorPolicy:
    """What one visitor may name. Build it with ``for_visitor``; it is cheap and immutable.

    ``server_roots``: folders under which typed paths may lie (the operator's list).
    ``operator_files``: exact files the operator configured for everyone (the bundle).
    ``owner``: the visitor's namespace id; their own uploads are always theirs to open.
    """

    cache_root: Path
    owner: str | None = None
    server_roots: tuple[Path, ...] = ()
    operator_files: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def for_visitor(
        cls,
        cache_root: str | os.PathLike[str],
        owner: str | None = None,
        operator_files: Iterable[str | os.PathLike[str] | None] = (),
    ) -> VisitorPolicy:
        """The policy for ``owner`` with the operator's roots read from the environment now."""
        return cls(
            cache_root=resolved(cache_root),
            owner=check_owner(owner) if owner is not None else None,
            server_roots=server_roots_from_env(),
            operator_files=tuple(resolved(p) for p in operator_files if p),
        )

    # -- paths -----------------------------------------------------------------------------
    @property
    def own_dir(self) -> Path | None:
        return None if self.owner is None else owner_dir(self.cache_root, self.owner)

    def path_refusal(self, path: str | os.PathLike[str], *, own_ok: bool = True) -> str | None:
        """Why a visitor may not open ``path`` (None when they may). ``own_ok=False`` for
        model paths: an upload is data, never code or weights to load."""
        p = resolved(path)
        own = self.own_dir
        if own_ok and own is not None and p.is_relative_to(resolved(own)):
            return None
        if p in self.operator_files:
            return None
        cache = self.cache_root
        if p.is_relative_to(cache / UPLOADS_DIR):
            return (
                "it is inside the visitors' uploads"
                if not own_ok
                else ("it is inside another visitor's uploads")
            )
        if p.is_relative_to(cache):
            return "it is inside the server's cache"
        if cache.is_relative_to(p):
            return "it contains the server's cache (other visitors' uploads)"
        if not self.server_roots:
            return (
                f"this deployment opens no server paths (the operator can list folders in "
                f"{SERVER_PATHS_ENV})"
            )
        if not any(p.is_relative_to(r) for r in self.server_roots):
            roots = ", ".join(str(r) for r in self.server_roots)
            return f"this deployment only opens server paths under {SERVER_PATHS_ENV} ({roots})"
        return None

    def _refused(self, exc: PolicyError) -> PolicyError:
        """``exc``, logged: an operator reading the log sees every refusal and whose it was."""
        log.info("policy refused (visitor %s): %s", self.owner or "-", exc)
        return exc

    # -- dataset specs ---------------------------------------------------------------------
    def check_dataset_spec(self, spec: str) -> None:
        """Raise ``DatasetRefused`` (one line) if a visitor may not open ``spec``.

        Read from the kinds table (``engine.data.DATASET_KINDS``), the one the opener reads:
        a kind not listed there, or not marked for visitors, is refused; every server path a
        kind's spec carries (``path_of``) is checked, whatever the kind (``hfds:`` included,
        in any letter case)."""
        from engine.data import DATASET_KINDS, parse_spec

        kind, rest, _ = parse_spec(spec)
        row = DATASET_KINDS.get(kind)
        if row is None or not row.visitor:
            raise self._refused(
                DatasetRefused(f"{kind}: datasets are not open to visitors of this deployment")
            )
        path = row.path_of(rest)
        if path is None:
            return
        why = self.path_refusal(path.strip() or ".")
        if why is not None:
            raise self._refused(DatasetRefused(f"{kind}:{_short(rest.strip())} is refused: {why}"))

    # -- model specs -----------------------------------------------------------------------
    def check_model_name(self, spec: str) -> None:
        """Raise ``ModelRefused`` if a visitor may not even *name* ``spec`` (to read vectors
        already cached under it): remote code, a local path outside the operator's roots, a
        kind the model table does not open to visitors. Loading asks ``check_model_spec``."""
        text = str(spec).strip()
        if _REMOTE_CODE_RE.search(text):
            raise self._refused(
                ModelRefused(
                    f"{_short(text)} is refused: a visitor may never enable trust_remote_code"
                )
            )
        from engine.models.registry import visitor_rule

        kind = text.partition(":")[0]
        if visitor_rule(kind) == "never":
            raise self._refused(
                ModelRefused(f"{_short(text)} is refused: {kind}: models are not for visitors")
            )
        local = _local_model_path(text)
        if local is not None and kind != "demo":
            why = self.path_refusal(local, own_ok=False)
            if why is not None:
                raise self._refused(
                    ModelRefused(f"{_short(text)} is refused: a local model path, and {why}")
                )

    def check_model_spec(self, spec: str) -> None:
        """Raise ``ModelRefused`` (one line) if a visitor may not load ``spec``.

        Checked on the text first (so ``hf:/`` is refused before anything touches the disk),
        then on the parsed spec, then against the allow-list the model table names for its
        kind (``engine.models.registry.visitor_allows``: the baselines, the shipped ``demo:``
        models, the catalogue's hub names, ``PARALLAX_VISITOR_MODELS``) and the size budget
        (``PARALLAX_MAX_MODEL_BYTES``, from the catalogue or the weight files, before anything
        is built). ``open_clip:ARCH/random`` and arbitrary architectures are never built."""
        self.check_model_name(spec)
        from engine.models.registry import visitor_refusal
        from engine.models.spec import parse_spec as parse_model

        text = str(spec).strip()
        parsed = parse_model(text)  # unknown aliases fail here with the registry's own line
        if parsed.trust_remote_code:
            raise self._refused(
                ModelRefused(
                    f"{_short(text)} is refused: a visitor may never enable trust_remote_code"
                )
            )
        if parsed.path is not None and parsed.alias is None:
            why = self.path_refusal(parsed.path, own_ok=False)
            if why is not None:
                raise self._refused(
                    ModelRefused(f"{_short(text)} is refused: a local model path, and {why}")
                )
        why = visitor_refusal(parsed)
        if why is not None:
            raise self._refused(ModelRefused(f"{_short(text)} is refused: {why}"))


def _local_model_path(text: str) -> str | None:
    """The local path a model spec names, read from the text alone (no parsing, no I/O)."""
    kind, _, rest = text.partition(":")
    body = rest.split("?", 1)[0].strip() if kind in ("hf", "st") else rest.strip()
    if kind == "open_clip":
        if body.startswith("local-dir:"):
            return body[len("local-dir:") :].strip() or "."
        tail = body.partition("/")[2].strip()
        if tail.startswith(("/", "~", ".")) or "/" in tail:
            return tail
        from engine.models.spec import CHECKPOINT_SUFFIXES

        return tail if tail.lower().endswith(CHECKPOINT_SUFFIXES) else None
    windows_drive = len(body) > 1 and body[1] == ":"
    if kind in ("hf", "st") and (body.startswith(("/", "~", ".", "\\")) or windows_drive):
        return body
    return None


def _short(text: str, width: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- the model allow-list (issue #27) --------------------------------------------------------
def check_model_allowed(spec: str, allowed: Iterable[str]) -> None:
    """Raise ``ModelRefused`` (one line) unless ``spec`` is one of ``allowed``: the shipped,
    catalogued and operator-configured models. A spec is code-sized input, not data-sized
    (``open_clip:ViT-bigG-14/random`` builds ~10 GB of random weights), so a visitor may only
    name a model whose size is known before it is built."""
    text = str(spec).strip()
    if text not in {str(s).strip() for s in allowed}:
        raise ModelRefused(
            f"{_short(text)} is refused: not one of this deployment's models (the operator "
            "lists them; see the model list)"
        )
