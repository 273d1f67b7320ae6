"""The code's structure, read from its own imports (``tools/import_graph.py``): no core module
imports Streamlit, the core never imports the screens, ``inference`` never imports ``app``, and
no module of ``app/`` or ``inference/`` takes part in an import cycle, and every name is imported
from the module that defines it (no re-exports)."""

from __future__ import annotations

from pathlib import Path

from tools.import_graph import cycles, graph, reexports, streamlit_in_core, upward

REPO = Path(__file__).resolve().parent.parent


def test_no_core_module_imports_streamlit() -> None:
    assert streamlit_in_core(REPO) == {}, "Streamlit belongs in app/ui/ and pages/ only"


def test_no_upward_imports() -> None:
    assert upward(graph(REPO)) == {}


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "app" / "ui").mkdir(parents=True)
    (tmp_path / "inference").mkdir()
    (tmp_path / "app" / "a.py").write_text("import streamlit as st\nfrom app import b\n")
    (tmp_path / "app" / "b.py").write_text("def f():\n    from app.a import x\n")
    (tmp_path / "app" / "c.py").write_text("from app.ui.view import y\n")
    (tmp_path / "app" / "ui" / "view.py").write_text("import streamlit\n")
    (tmp_path / "inference" / "m.py").write_text("from app.b import f\n")
    assert streamlit_in_core(tmp_path) == {"app.a": ["streamlit"]}
    deps = graph(tmp_path)
    assert cycles(deps) == [["app.a", "app.b"]]
    assert upward(deps) == {"app.c": ["app.ui.view"], "inference.m": ["app.b"]}


def test_the_reexport_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "inference").mkdir()
    (tmp_path / "pages").mkdir()
    (tmp_path / "inference" / "m.py").write_text(
        "import json\nif True:\n    def f():\n        pass\nX: int = 1\n")
    (tmp_path / "inference" / "n.py").write_text(
        "from inference.m import X, f, json\nfrom inference import m\n__all__ = ['f', 'g']\n"
        "g = 1\n")
    (tmp_path / "pages" / "p.py").write_text("from inference.n import g, f\n")
    assert reexports(tmp_path) == ["inference/n.py: __all__ names 'f', defined elsewhere",
                                   "inference/n.py:1: from inference.m import json",
                                   "pages/p.py:1: from inference.n import f"]


def test_no_import_cycles() -> None:
    assert cycles(graph(REPO)) == []


def test_names_are_imported_from_where_they_are_defined() -> None:
    assert reexports(REPO) == [], "import each name from the module that defines it"
