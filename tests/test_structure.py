"""The code's structure, read from its own imports: no core module imports Streamlit, and no
module of ``app/`` or ``inference/`` takes part in an import cycle.

Imports are read with :mod:`ast` (inside functions and ``TYPE_CHECKING`` blocks too), so a lazy
import that closes a cycle counts as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "inference")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every module name that ``path`` imports (absolute names; ``from x import y`` gives both
    ``x`` and ``x.y``, so importing a submodule by name counts)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {i for i in _imports(path) if i in modules and i != name}
            for name, path in modules.items()}


def _is_core(name: str) -> bool:
    return not (name == "app.ui" or name.startswith("app.ui."))


def test_no_core_module_imports_streamlit() -> None:
    offenders = {
        name: sorted(i for i in _imports(path) if i.split(".")[0] in {"streamlit",
                                                                       "streamlit_folium"})
        for name, path in _modules().items() if _is_core(name)
    }
    assert {k: v for k, v in offenders.items() if v} == {}, (
        "Streamlit belongs in app/ui/ and pages/ only")


def test_the_core_never_imports_the_screens() -> None:
    upward = {name: sorted(i for i in deps if not _is_core(i))
              for name, deps in _graph().items() if _is_core(name)}
    assert {k: v for k, v in upward.items() if v} == {}


def test_inference_never_imports_the_app() -> None:
    upward = {name: sorted(i for i in deps if i.split(".")[0] == "app")
              for name, deps in _graph().items() if name.startswith("inference")}
    assert {k: v for k, v in upward.items() if v} == {}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ is not a module of its own here: drop the edges into packages.
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    graph = {name: deps - packages for name, deps in graph.items()}
    assert _cycles(graph) == []
