"""AppTest of the entry point: navigation, sidebar settings summary, shared run links."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app.escaping import markdown_text
from tests.fixtures.app_server import PAGES, page_test


def _sidebar_text(at: Any) -> str:
    parts = [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption]
    parts += [w.value for w in at.sidebar.warning]
    return "\n".join(parts)


def test_sidebar_summarises_the_settings(app_env: Path) -> None:
    at = page_test("main").run()
    assert not at.exception
    text = _sidebar_text(at)
    assert os.environ["TERRALENS_STAC_URL"] in text
    assert "untrained — outputs are noise" in text
    assert "`cpu`" in text
    assert str(app_env / "runs") in text
    # The default page is Search.
    assert at.title[0].value == "Search scenes"


def test_hub_weights_are_not_flagged(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRALENS_WEIGHTS", "hub")
    at = page_test("main").run()
    assert not at.sidebar.warning
    assert "Hugging Face hub" in _sidebar_text(at)


def test_bad_configuration_is_explained(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRALENS_DEVICE", "tpu")
    at = page_test("main").run()
    assert not at.exception
    assert any("TERRALENS_DEVICE" in e.value and "'tpu'" in e.value for e in at.error)


def test_a_shared_run_link_opens_the_run(app_run: Any) -> None:
    at = page_test("main")
    at.query_params["run"] = app_run.id
    at.run()
    assert at.session_state["run_id"] == app_run.id
    at.switch_page(str(PAGES / "3_Layers.py")).run()
    assert not at.exception and not at.error
    assert any(c.label.endswith(markdown_text(" · [G] LULC")) for c in at.checkbox)
