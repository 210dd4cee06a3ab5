"""Import graphs: no cycles (engine, dashboard, pages, training), no private names across
engine modules, no Streamlit in the engine, and the dashboard through one door.

Every import counts, wherever it is written: module level, inside functions, under
``TYPE_CHECKING``, ``importlib.import_module("engine.x")`` with a literal name, and a string that
is exactly an engine module's name (a table of lazily imported modules). A cycle
through function-level imports still ties two modules together (neither can be understood,
tested or moved without the other), so it fails here like a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "engine"
REPO = ENGINE.parent
FRONTS = ("dashboard", "pages", "training")  # checked for cycles like the engine
# The dashboard (dashboard/ and pages/ together) reaches the engine through the workspace and
# its parameter, error and settings types, plus at most ``DOOR_EXTRA`` other modules.
DOOR = {"engine.workspace", "engine.params", "engine.errors", "engine.settings"}
DOOR_EXTRA = 2


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """(imported engine module, imported name or "") for every import written in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(name, is_package, node)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules:  # ``from engine.models import st``
                    yield submodule, ""
                elif target in modules:
                    yield target, alias.name
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if called == "import_module" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and arg.value in modules:
                    yield arg.value, ""
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in modules
            and node.value != name
        ):
            # A string that is exactly a module's name is a lazy import through a table
            # (``ADAPTERS = {"st": AdapterEntry("engine.models.st", ...)}``): it counts.
            yield node.value, ""


def front_modules() -> dict[str, Path]:
    """Every module of dashboard/, pages/ and training/ by its dotted name (pages are
    scripts, named ``pages.<file>`` here: nothing imports them, but they import the rest)."""
    return {module_name(p): p for front in FRONTS for p in sorted((REPO / front).rglob("*.py"))}


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = engine_modules() if modules is None else modules
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _ in imports_of(name, path, modules):
            if target != name:
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_finder_sees_function_level_and_importlib_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import importlib\n"
        "def f():\n"
        "    from engine.b import thing\n"
        "    importlib.import_module('engine.c')\n"
        "TABLE = {'d': 'engine.d'}\n",
        encoding="utf-8",
    )
    modules = {name: src for name in ("engine.a", "engine.b", "engine.c", "engine.d")}
    found = set(imports_of("engine.a", src, modules))
    assert found == {("engine.b", "thing"), ("engine.c", ""), ("engine.d", "")}


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_engine_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles in engine/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_front_ends_have_no_import_cycle() -> None:
    """dashboard/, pages/ and training/: the same rule as the engine's (function-level imports
    count: ``state`` <-> ``ui`` was one)."""
    graph = import_graph(front_modules())
    assert "dashboard.state" in graph and "pages.map" in graph  # the finder sees the fronts
    assert "dashboard.ui" in graph["dashboard.state"]
    cycles = find_cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def door_engine_imports(*folders: str) -> dict[str, set[str]]:
    """Every engine module the front end in ``folders`` imports -> the files importing it
    (modules of the front end's own package do not count)."""
    modules = engine_modules()
    own = tuple(f.replace("/", ".") for f in folders)
    used: dict[str, set[str]] = {}
    for front in folders:
        for path in sorted((REPO / front).rglob("*.py")):
            for target, _ in imports_of(module_name(path), path, modules):
                if target == own[0] or target.startswith(tuple(o + "." for o in own)):
                    continue
                used.setdefault(target, set()).add(str(path.relative_to(REPO)))
    return used


@pytest.mark.parametrize(
    "folders", [("dashboard", "pages"), ("engine/cli",), ("engine/http",)], ids=str
)
def test_each_door_reaches_the_engine_through_the_workspace(folders: tuple[str, ...]) -> None:
    """The dashboard, the CLI and the HTTP service call the ``Workspace`` and the parameter,
    error and settings types, plus at most ``DOOR_EXTRA`` other engine modules."""
    used = door_engine_imports(*folders)
    assert "engine.workspace" in used  # the finder sees the door's imports
    others = {m: sorted(files) for m, files in used.items() if m not in DOOR}
    assert len(others) <= DOOR_EXTRA, f"engine modules imported past the door: {others}"
    assert len(used) <= len(DOOR) + DOOR_EXTRA


def test_no_private_name_imported_across_engine_modules() -> None:
    modules = engine_modules()
    offenders = [
        f"{name} imports {target}.{imported}"
        for name, path in modules.items()
        for target, imported in imports_of(name, path, modules)
        if imported.startswith("_") and target != name
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(engine_modules()))
def test_engine_never_imports_streamlit(name: str) -> None:
    tree = ast.parse(engine_modules()[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "streamlit" for a in node.names), name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert (node.module or "").split(".")[0] != "streamlit", name


def test_public_api_resolves_and_import_engine_stays_light() -> None:
    code = (
        "import sys, engine\n"
        "light = sorted(m for m in ('numpy', 'torch', 'pandas', 'sklearn') if m in sys.modules)\n"
        "missing = [n for n in engine.__all__ if getattr(engine, n, None) is None]\n"
        "print(light, missing)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ENGINE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split("\n")[0]
    assert out == "[] []"


@pytest.mark.parametrize("front", ["dashboard", "pages", "training", "benchmarks", "scripts"])
def test_front_ends_import_no_private_engine_name(front: str) -> None:
    modules = engine_modules()
    offenders = []
    for path in sorted((ENGINE.parent / front).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                offenders += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert offenders == []
