"""Getting hub weights onto disk, or failing fast with one clear line when that cannot happen.

Order for every hub file: the local Hugging Face cache first (no network at all), then a quick
reachability probe of the hub (a TCP connect with a short timeout, run in a thread so a stuck DNS
lookup cannot hang us; ``PARALLAX_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` skip it), and only then the
library's real download path. Every failure becomes a one-line ``ModelUnavailable`` that names
the model, the cache that was searched and how to supply the weights.

Nothing global is changed (no ``HF_HUB_OFFLINE`` toggling): other code in the process keeps its
own hub behaviour.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from engine import settings
from engine.errors import ModelUnavailable

if TYPE_CHECKING:
    from engine.models.spec import ModelSpec

PROBE_TIMEOUT_S = 2.0
_PROBE_TTL_S = 60.0  # remember the probe's answer for a minute: loading N models pays once
_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, int], tuple[float, bool]] = {}

# Files worth fetching from a transformers / sentence-transformers repo. Weights are listed
# separately so that a repo holding both .safetensors and .bin is not downloaded twice.
CONFIG_PATTERNS = [
    "*.json",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "*/*.json",  # sentence-transformers modules (1_Pooling/config.json, ...)
    "*/*.txt",
]
TOKENIZER_PATTERNS = [
    "tokenizer*",
    "special_tokens_map.json",
    "vocab*",
    "merges.txt",
    "spiece.model",
    "*.model",
    "added_tokens.json",
]


def offline_forced() -> bool:
    """True when the user said "no network": ``PARALLAX_OFFLINE`` or the hub's own flag."""
    return settings.offline() is not None


def hf_home() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HOME)
    except ImportError:
        return os.environ.get("HF_HOME") or str(Path("~/.cache/huggingface").expanduser())


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return str(Path(hf_home()) / "hub")


def _hub_address() -> tuple[str, int]:
    """The host to probe: the HTTPS proxy when one is configured, else the hub endpoint."""
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            value = os.environ[var]
            u = urlparse(value if "://" in value else "http://" + value)
            if u.hostname:
                return u.hostname, u.port or (443 if u.scheme == "https" else 80)
    u = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return u.hostname or "huggingface.co", u.port or (80 if u.scheme == "http" else 443)


def reset_reachability_cache() -> None:
    with _probe_lock:
        _probe_cache.clear()


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can we open a TCP connection to the hub (or the proxy) within ``timeout`` seconds?"""
    if offline_forced():
        return False
    addr = _hub_address()
    now = time.monotonic()
    with _probe_lock:
        hit = _probe_cache.get(addr)
        if hit is not None and now - hit[0] < _PROBE_TTL_S:
            return hit[1]
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(addr, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts, so the probe runs in a daemon thread we stop waiting
    # for: a broken resolver costs ``timeout`` seconds, never a hang.
    t = threading.Thread(target=probe, name="parallax-hub-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    ok = bool(result and result[0])
    with _probe_lock:
        _probe_cache[addr] = (time.monotonic(), ok)
    return ok


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first meaningful line of an error message, without tracebacks, shortened."""
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not first:
        first = type(exc).__name__ if isinstance(exc, BaseException) else "unknown error"
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _local_hint(spec: str) -> str:
    if spec.startswith("st:"):
        return "st:/path"
    if spec.startswith("hf:"):
        return "hf:/path"
    return "open_clip:local-dir:/path or open_clip:ARCH/path/to/weights.safetensors"


def unavailable(spec: str, repo: str, reason: str) -> ModelUnavailable:
    """The one line shown when hub weights for ``spec`` cannot be had."""
    return ModelUnavailable(
        f"model {spec} is not available: the weights of {repo} are not in the Hugging Face "
        f"cache ({hf_cache_dir()}, HF_HOME={hf_home()}) and {reason}. Pass a local path "
        f"({_local_hint(spec)}), or pre-populate the Hugging Face cache on a machine with "
        f"internet with `hf download {repo}` and copy it here / set HF_HOME"
    )


def _why_offline() -> str:
    forced_by = settings.offline()
    if forced_by is not None:
        return f"{forced_by}=1 forbids downloads"
    host, port = _hub_address()
    return f"{host}:{port} cannot be reached (offline?)"


def _ensure_online(spec: str, repo: str) -> None:
    if not hub_reachable():
        raise unavailable(spec, repo, _why_offline())


def commit_of(path: str | os.PathLike[str]) -> str | None:
    """The snapshot commit of a file or folder inside the HF cache (``.../snapshots/<sha>/...``)."""
    parts = Path(path).parts
    if "snapshots" in parts:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


def not_cached_errors() -> tuple[type[BaseException], ...]:
    """What the hub library raises when a cache-only look-up finds nothing (or the repo id is
    not a valid one); any other error is a bug and propagates."""
    from huggingface_hub.errors import EntryNotFoundError

    return (OSError, ValueError, EntryNotFoundError)


def cached_hub_file(repo: str, candidates: Sequence[str]) -> Path | None:
    """The first of ``candidates`` of ``repo`` already in the local HF cache, or None.

    Never touches the network (identity look-ups use it to answer without downloading).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    for name in candidates:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=True))
        except not_cached_errors():  # this file is not in the cache: try the next one
            continue
    return None


def hub_file(repo: str, candidates: Sequence[str], *, spec: str) -> Path:
    """The first of ``candidates`` in ``repo``: from the cache, else downloaded, else raises."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelUnavailable(
            f"model {spec} needs huggingface_hub to fetch {repo}: pip install huggingface_hub"
        ) from None
    cached = cached_hub_file(repo, candidates)
    if cached is not None:
        return cached
    _ensure_online(spec, repo)
    last: BaseException | None = None
    for name in candidates:
        try:
            return Path(hf_hub_download(repo, name))
        except Exception as exc:  # missing file in the repo, auth, network: try the next one
            last = exc
    raise unavailable(spec, repo, f"the download failed: {one_line(last or 'no file')}")


def cached_snapshot(
    repo: str, patterns: Iterable[str], required: Sequence[str] = ()
) -> Path | None:
    """The local snapshot folder of ``repo`` holding ``required``, or None (no network)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        local = Path(snapshot_download(repo, allow_patterns=list(patterns), local_files_only=True))
    except not_cached_errors():  # nothing cached for this repo
        return None
    return local if all((local / r).exists() for r in required) else None


def hub_snapshot(
    repo: str,
    *,
    spec: str,
    patterns: Iterable[str],
    required: Sequence[str] = (),
) -> Path:
    """A snapshot folder of ``repo`` holding the files matching ``patterns``.

    ``required`` names files that must be there for the cached copy to count (a snapshot
    folder can exist holding only, say, a config fetched by another tool).
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelUnavailable(
            f"model {spec} needs huggingface_hub to fetch {repo}: pip install huggingface_hub"
        ) from None
    patterns = list(patterns)
    local = cached_snapshot(repo, patterns, required)
    if local is not None:
        return local
    _ensure_online(spec, repo)
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:
        raise unavailable(spec, repo, f"the download failed: {one_line(exc)}") from exc


def cached_file_exists(repo: str, candidates: Sequence[str]) -> bool:
    """Is one of ``candidates`` of ``repo`` in the local HF cache? (no network, no torch)"""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for name in candidates:
        try:
            hit = try_to_load_from_cache(repo, name)
        except not_cached_errors():
            continue
        if isinstance(hit, str) and os.path.isfile(hit):
            return True
    return False


def model_folder(
    spec: ModelSpec, patterns: Sequence[str], required: Sequence[str], *, download: bool
) -> Path | None:
    """The folder of a ``hf:`` / ``st:`` model: its local path, else a hub snapshot holding
    ``required``. With ``download=False`` only what is already on disk (None when it is not);
    with ``download=True`` a missing model raises ``ModelUnavailable`` (one line)."""
    if spec.path is not None:
        folder = Path(spec.path)
        # A model folder has its config at the top: checked before anything hashes every file
        # below it (``hf:/`` once walked the whole file system first).
        markers = dict.fromkeys([*required, "config.json"])
        if folder.is_dir() and any((folder / name).is_file() for name in markers):
            return folder
        if not download:
            return None
        if folder.is_dir():
            raise ModelUnavailable(
                f"model {spec.display}: {folder} has no {' or '.join(markers)}: not a model folder"
            )
        raise ModelUnavailable(f"model {spec.display}: {folder} is not a folder")
    if not download:
        return cached_snapshot(spec.name, patterns, required)
    folder = hub_snapshot(spec.name, spec=spec.display, patterns=patterns, required=required)
    if not any(folder.glob("*.safetensors")):
        # Older repos only have pytorch_model.bin (transformers loads it with weights_only).
        hub_file(spec.name, ["pytorch_model.bin"], spec=spec.display)
    return folder


def folder_weights_id(spec: ModelSpec, folder: Path, *, local: bool) -> str:
    """The weights part of an identity for a model folder: the digest of a local folder's
    files, or the hub snapshot's commit."""
    from engine.models.base import folder_digest

    if local:
        return f"local:{folder_digest(folder)}"
    return f"hub:{spec.name}@{commit_of(folder) or folder_digest(folder)}"


# How an ``hf:`` / ``st:`` adapter finds its folder (``download`` or only what is on disk) and
# names the weights in it: the two differ only in these, so they share what follows.
FolderFinder = Callable[..., "Path | None"]
WeightsNamer = Callable[["ModelSpec", Path], str]


def present_weights_id(spec: ModelSpec, find: FolderFinder, name: WeightsNamer) -> str | None:
    """The weights part of the identity, from files already on disk (None if they are not)."""
    folder = find(spec, download=False)
    return None if folder is None else name(spec, folder)


def resolve_folder(spec: ModelSpec, find: FolderFinder, name: WeightsNamer) -> tuple[Path, str]:
    """(folder, weights identity), bringing a hub model onto disk first."""
    folder = find(spec, download=True)
    assert folder is not None  # download=True raises instead
    return folder, name(spec, folder)
