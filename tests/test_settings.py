"""The one settings table: every PARALLAX_* name in it, one parser per kind, one reader, its doc."""

from __future__ import annotations

import ast
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine import settings
from engine.errors import ParallaxError

REPO = Path(__file__).resolve().parent.parent
NAME = re.compile(r"PARALLAX_[A-Z0-9_]*")
SCANNED = ["engine", "dashboard", "pages", "scripts", "benchmarks", "docs", "Dockerfile"]
SUFFIXES = {".py", ".md", ".toml", ".txt", ".sh", ""}
# Modules besides engine/settings.py that touch os.environ, and why (none reads PARALLAX_*):
OTHER_ENV_MODULES = {
    "engine/models/offline.py": "the hub library's own variables (HF_HOME, HF_ENDPOINT, proxies)",
    "dashboard/viewonly.py": "copies the environment for a child process in no_models_env",
}


def _files() -> list[Path]:
    out: list[Path] = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            out.append(path)
            continue
        for p in sorted(path.rglob("*")):
            if p.is_file() and p.suffix in SUFFIXES and "node_modules" not in p.parts:
                out.append(p)
    return out


def test_the_committed_doc_is_the_generated_one() -> None:
    committed = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == settings.markdown(), (
        "docs/settings.md is stale: python -m engine.settings --markdown > docs/settings.md"
    )


def test_every_row_has_its_help_on_one_line() -> None:
    """The help is the docstring under each field (read from the source by pydantic): a row
    without one would be documented with an empty meaning."""
    missing = [name for name, info in settings.FIELDS.items() if not info.description]
    assert not missing, missing
    text = settings.markdown()
    for name, info in settings.FIELDS.items():
        assert "\n" not in str(info.description)
        assert f"| `PARALLAX_{name}` |" in text and f"| {info.description} |" in text


def test_every_parallax_name_used_anywhere_is_in_the_table() -> None:
    unknown: set[str] = set()
    for path in _files():
        for name in NAME.findall(path.read_text(encoding="utf-8", errors="replace")):
            if name.endswith("_"):  # a prefix in prose, e.g. ``PARALLAX_API_*``
                if not any(n.startswith(name) for n in settings.NAMES):
                    unknown.add(f"{name}* ({path.relative_to(REPO)})")
            elif name not in settings.NAMES:
                unknown.add(f"{name} ({path.relative_to(REPO)})")
    assert not unknown, sorted(unknown)


def _uses_environ(path: Path) -> bool:
    """Does the module touch ``os.environ`` / ``os.getenv`` at all?"""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(
        isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
        for node in ast.walk(tree)
    )


def test_only_the_settings_module_reads_parallax_variables() -> None:
    readers = sorted(
        str(p.relative_to(REPO))
        for top in ("engine", "dashboard", "pages")
        for p in (REPO / top).rglob("*.py")
        if _uses_environ(p)
    )
    assert set(readers) <= {"engine/settings.py", *OTHER_ENV_MODULES}, readers
    for other in OTHER_ENV_MODULES:
        text = (REPO / other).read_text(encoding="utf-8")
        assert not re.search(r"environ(\.get)?\(?\[?\s*[\"']PARALLAX_", text), other
        assert not re.search(r"getenv\(\s*[\"']PARALLAX_", text), other


FLAGS = [n for n in settings.FIELDS if "Flag" in str(settings.Environment.__annotations__[n])]


@pytest.mark.parametrize("field", FLAGS)
def test_one_yes_no_parser_for_every_flag(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"PARALLAX_{field}"
    for word, expected in [("on", True), ("YES", True), ("1", True), ("true", True)]:
        monkeypatch.setenv(name, word)
        assert settings.value(name) is expected, word
    for word in ("off", "No", "0", "false"):
        monkeypatch.setenv(name, word)
        assert settings.value(name) is False, word
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ParallaxError) as info:
        settings.value(name)
    message = str(info.value)
    assert message.startswith(f"{name}='maybe' is not a yes/no value") and "\n" not in message


def test_torch_compile_on_is_read_as_on_like_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two used to disagree: ``on`` was ignored by one parser and honoured by the other."""
    monkeypatch.setenv("PARALLAX_TORCH_COMPILE", "on")
    monkeypatch.setenv("PARALLAX_OFFLINE", "on")
    assert settings.torch_compile() is True
    assert settings.offline() == "PARALLAX_OFFLINE"
    monkeypatch.setenv("PARALLAX_OFFLINE", "off")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert settings.offline() == "HF_HUB_OFFLINE"


def test_sizes_seconds_words_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLAX_QUOTA_UPLOADS", "500M")
    monkeypatch.setenv("PARALLAX_CACHE_MAX_BYTES", "1.5g")
    monkeypatch.setenv("PARALLAX_ORPHAN_AGE_S", "90")
    monkeypatch.setenv("PARALLAX_GPU_UMAP", "no")
    monkeypatch.setenv("PARALLAX_PRECISION", "BF16")
    monkeypatch.setenv("PARALLAX_SERVER_PATHS", f"/a{':'}/b{':'}")
    monkeypatch.setenv("PARALLAX_API_KEYS", " k1 , k2,")
    env = settings.load()
    assert env.QUOTA_UPLOADS == 500 * 1024**2 == settings.value("QUOTA_UPLOADS")
    assert settings.cache_max_bytes() == int(1.5 * 1024**3)
    assert env.ORPHAN_AGE_S == 90.0
    assert settings.gpu_umap() == "off" and settings.precision() == "bf16"
    assert settings.server_paths() == ("/a", "/b")
    assert settings.service()["api_keys"] == ("k1", "k2")


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("PARALLAX_MAX_ITEMS", "lots", "is not a number (e.g. 1000 or 500M)"),
        ("PARALLAX_DOWNLOAD_TIMEOUT_S", "soon", "is not a number of seconds"),
        ("PARALLAX_ORPHAN_AGE_S", "-5", "is not a number of seconds (not negative)"),
        ("PARALLAX_GPU_UMAP", "maybe", "is not one of auto, on, off"),
        ("PARALLAX_PRECISION", "fp8", "is not one of auto, fp32, bf16, fp16"),
        ("PARALLAX_VIEW_ONLY", "perhaps", "is not a yes/no value"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    name: str, raw: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, raw)
    for read in (settings.load, lambda: settings.value(name)):
        with pytest.raises(ParallaxError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{name}={raw!r} {expected}"), message
        assert "\n" not in message and "docs/settings.md" in message


def test_a_bad_value_stops_the_import_with_one_line() -> None:
    env = {"PATH": "/usr/bin:/bin", "PARALLAX_API_MAX_BODY_BYTES": "huge"}
    out = subprocess.run(
        [sys.executable, "-c", "import engine.settings"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "PARALLAX_API_MAX_BODY_BYTES='huge' is not a number (e.g. 1000 or 500M) "
            "(see docs/settings.md)"
        )
    )


def test_start_values_are_read_once_and_per_call_values_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = settings.MAX_ITEMS
    monkeypatch.setenv("PARALLAX_MAX_ITEMS", "7")
    assert before == settings.MAX_ITEMS  # read at start: a restart changes it
    monkeypatch.delenv("PARALLAX_ALLOW_PRIVATE_URLS", raising=False)
    assert settings.allow_private_urls() is False
    monkeypatch.setenv("PARALLAX_ALLOW_PRIVATE_URLS", "yes")
    assert settings.allow_private_urls() is True


def test_the_service_view_is_built_from_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.http.settings import ServiceSettings

    monkeypatch.setenv("PARALLAX_API_MAX_BODY_BYTES", "1M")
    monkeypatch.setenv("PARALLAX_API_MAX_BATCH", "8")
    monkeypatch.setenv("PARALLAX_CORS_ORIGINS", "https://a.example,https://b.example")
    service = ServiceSettings.from_env(max_batch=16, port=None)
    assert service.max_body_bytes == 1024**2
    assert service.cors_origins == ("https://a.example", "https://b.example")
    assert service.max_batch == 16  # the command line wins over the environment
    assert service.port == ServiceSettings().port


def test_an_unknown_parallax_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLAX_MAX_ITEM", "3")  # a typo of PARALLAX_MAX_ITEMS
    assert "PARALLAX_MAX_ITEM" in settings.unknown_names()
    assert "PARALLAX_MAX_ITEMS" not in settings.unknown_names()


def test_configure_logging_sets_one_handler_and_the_level() -> None:
    logger = logging.getLogger("engine")
    saved_level, saved_handlers = logger.level, list(logger.handlers)
    try:
        settings.configure_logging(1)
        settings.configure_logging(2)
        ours = [h for h in logger.handlers if getattr(h, "_parallax", False)]
        assert len(ours) == 1 and logger.level == logging.DEBUG
        settings.configure_logging(0)
        assert logger.level == logging.WARNING
    finally:
        logger.handlers[:] = saved_handlers
        logger.setLevel(saved_level)


def test_cli_verbose_flag_logs_a_prune_at_info(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "engine", "cache", "prune", "--cache-dir", str(tmp_path)]
    quiet = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    loud = subprocess.run([*cmd, "-v"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "engine.store.space: prune" not in quiet.stderr
    assert "INFO engine.store.space: prune" in loud.stderr


def test_a_policy_refusal_is_logged_at_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine.policy import DatasetRefused, ModelRefused, VisitorPolicy

    monkeypatch.delenv("PARALLAX_SERVER_PATHS", raising=False)
    policy = VisitorPolicy.for_visitor(tmp_path / "cache", "visitor1")
    with caplog.at_level(logging.INFO, logger="engine.policy"):
        with pytest.raises(DatasetRefused):
            policy.check_dataset_spec("folder:/etc")
        with pytest.raises(ModelRefused):
            policy.check_model_spec("hf:org/repo?trust_remote_code=1")
        policy.check_dataset_spec("demo:digits")  # allowed: not logged
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.policy"]
    assert len(lines) == 2 and all(x.startswith("policy refused (visitor visitor1)") for x in lines)
    assert "folder:/etc is refused" in lines[0] and "trust_remote_code" in lines[1]
