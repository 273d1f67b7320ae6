"""The code's structure from its own imports: cycles, upward imports, re-exports, largest modules.

    python tools/import_graph.py              # this checkout
    python tools/import_graph.py --root DIR   # another checkout (e.g. a `git worktree` of an
                                              # older commit, to compare before/after)

Imports are read with :mod:`ast` (lazy imports inside functions and ``TYPE_CHECKING`` blocks
count too). "Upward" means a core module of ``app/`` importing the Streamlit screens
(``app/ui``) or Streamlit itself, or ``inference/`` importing ``app``. A re-export is
``from m import name`` where ``m`` does not define ``name`` (it imported it), or an ``__all__``
naming what the module does not define. ``tests/test_structure.py`` asserts there are no
upward imports, no cycles and no re-exports.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("app", "inference")
#: Folders whose imports are checked for re-exports (everything that imports the packages).
IMPORTERS = (*PACKAGES, "pages", "tests", "bench", "tools")
STREAMLIT = frozenset({"streamlit", "streamlit_folium"})


def module_name(root: Path, path: Path) -> str:
    """``app/ui/state.py`` → ``app.ui.state``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the checked packages by dotted name."""
    return {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every absolute module name a file imports (``from x import y`` gives ``x`` and ``x.y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def graph(root: Path) -> dict[str, set[str]]:
    """Module → the project's modules it imports (packages' ``__init__`` left out)."""
    found = modules(root)
    packages = {name for name, path in found.items() if path.name == "__init__.py"}
    return {name: {i for i in imports(path) if i in found and i != name} - packages
            for name, path in found.items()}


def defined_names(path: Path) -> set[str]:
    """Names a module defines at its top level (``def``, ``class``, assignments), including
    under top-level ``if``/``try``/``with`` blocks; imported names are not definitions."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If | ast.With):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return names


def _dunder_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.List | ast.Tuple)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)):
            return [e.value for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def reexports(root: Path) -> list[str]:
    """Names imported from a project module that does not define them, and ``__all__`` entries
    a module does not define, as ``file:line: text`` (empty when every name is imported from
    where it is defined)."""
    found = modules(root)
    defs = {name: defined_names(path) for name, path in found.items()}
    out: list[str] = []
    for folder in IMPORTERS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"))
            name = module_name(root, path)
            if name in defs:
                out += [f"{rel}: __all__ names {n!r}, defined elsewhere"
                        for n in _dunder_all(tree) if n not in defs[name]]
            for node in ast.walk(tree):
                if not (isinstance(node, ast.ImportFrom) and node.level == 0
                        and node.module in defs):
                    continue
                out += [f"{rel}:{node.lineno}: from {node.module} import {a.name}"
                        for a in node.names if a.name not in defs[node.module]
                        and f"{node.module}.{a.name}" not in found]
    return out


def is_core(name: str) -> bool:
    """Whether a module is core (anything but the Streamlit screens in ``app/ui``)."""
    return not (name == "app.ui" or name.startswith("app.ui."))


def streamlit_in_core(root: Path) -> dict[str, list[str]]:
    """Core modules that import Streamlit, with what they import."""
    out = {}
    for name, path in modules(root).items():
        hits = sorted(i for i in imports(path) if i.split(".")[0] in STREAMLIT)
        if is_core(name) and hits:
            out[name] = hits
    return out


def upward(deps: dict[str, set[str]]) -> dict[str, list[str]]:
    """Imports against the layering: core → ``app.ui``, ``inference`` → ``app``."""
    out = {}
    for name, targets in deps.items():
        bad = sorted(t for t in targets
                     if (is_core(name) and not is_core(t))
                     or (name.startswith("inference") and t.startswith("app")))
        if bad:
            out[name] = bad
    return out


def cycles(deps: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(deps.get(node, ())):
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

    for node in sorted(deps):
        if node not in index:
            visit(node)
    return found


def largest(root: Path, count: int = 8) -> list[tuple[str, int]]:
    """The longest modules (lines)."""
    sizes = [(name, len(path.read_text(encoding="utf-8").splitlines()))
             for name, path in modules(root).items()]
    return sorted(sizes, key=lambda s: -s[1])[:count]


def _lines(title: str, rows: Iterable[str]) -> list[str]:
    rows = list(rows)
    return [f"{title}: {len(rows)}", *(f"  {r}" for r in rows)]


def report(root: Path) -> str:
    """The summary printed by this script."""
    deps = graph(root)
    out = [f"modules: {len(deps)}, imports between them: {sum(map(len, deps.values()))}"]
    out += _lines("cycles", (" <-> ".join(c) for c in cycles(deps)))
    out += _lines("upward imports", (f"{k} -> {', '.join(v)}" for k, v in upward(deps).items()))
    out += _lines("core modules importing Streamlit",
                  (f"{k}: {', '.join(v)}" for k, v in streamlit_in_core(root).items()))
    out += _lines("re-exports", reexports(root))
    out += _lines("largest modules", (f"{n}: {lines} lines" for n, lines in largest(root)))
    return "\n".join(out)


def main() -> None:
    """Print the structure summary of a checkout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    print(report(parser.parse_args().root.resolve()))


if __name__ == "__main__":
    main()
