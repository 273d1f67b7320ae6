"""AppTest of the Runs page: list, provenance, reopen onto the Layers page, delete with a
confirmation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.aoi import AOI
from app.escaping import markdown_text
from app.runs import RunStore
from app.ui.state import W
from tests.fixtures.app_server import PAGES, page_test

PAGE = "4_Runs.py"


def test_empty_store_says_so(app_env: Path) -> None:
    at = page_test(PAGE).run()
    assert not at.exception
    assert any("No runs stored yet" in i.value for i in at.info)


def test_lists_the_stored_run_with_its_provenance(app_run: Any) -> None:
    at = page_test(PAGE).run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["Run id"]) == [app_run.id]
    row = table.iloc[0]
    assert row["Scene"] == app_run.request.scene_id
    assert row["Model"] == app_run.request.model
    assert row["AOI km²"] == round(AOI(app_run.request.aoi).area_km2, 2)
    text = "\n".join(m.value for m in at.markdown)
    assert app_run.request.model in text
    assert "seed=0" in text and "timesteps=10" in text
    assert "generated, not measured" in text


def test_reopen_switches_to_layers_with_the_run(app_run: Any) -> None:
    at = page_test("main")
    at.run()
    at.switch_page(str(PAGES / "4_Runs.py")).run()
    assert not at.exception
    at.button(key=W.RUNS_OPEN).click().run()
    assert not at.exception and not at.error
    assert at.session_state["run_id"] == app_run.id
    # Now on the Layers page: its layer checkboxes are there.
    assert any(c.label.endswith(markdown_text(" · [G] LULC")) for c in at.checkbox)
    assert at.query_params["run"] in (app_run.id, [app_run.id])


def test_delete_asks_first_then_removes(app_run: Any, app_env: Path) -> None:
    at = page_test(PAGE)
    at.session_state["run_id"] = app_run.id
    at.run()
    at.button(key=W.RUNS_DELETE).click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key=W.RUNS_KEEP).click().run()
    assert RunStore(app_env / "runs").list_runs(), "'Keep it' keeps the run"
    assert not any("cannot be undone" in w.value for w in at.warning)

    at.button(key=W.RUNS_DELETE).click().run()
    at.button(key=W.RUNS_CONFIRM).click().run()
    assert not at.exception and not at.error
    assert RunStore(app_env / "runs").list_runs() == []
    assert at.session_state["run_id"] is None
    assert any("No runs stored yet" in i.value for i in at.info)


def test_the_table_shows_key_columns_that_tell_runs_apart(app_run: Any, app_env: Path) -> None:
    from app.ui.runs_view import KEY_COLUMNS, run_label
    from tests.fixtures.runs import write_sample_run

    _, other = write_sample_run(app_env / "runs", seed=3)  # same scene and outputs, other seed
    at = page_test(PAGE).run()
    assert not at.exception and not at.error
    [frame] = at.dataframe
    # Only the narrow key columns are shown (no horizontal scrolling); long ids stay below.
    assert list(frame.proto.column_order) == list(KEY_COLUMNS)
    assert {"Task", "Outputs", "Acquired", "AOI km²", "Status"} <= set(KEY_COLUMNS)
    assert "Run id" not in KEY_COLUMNS and "Scene" not in KEY_COLUMNS
    table = frame.value
    rows = {tuple(str(v) for v in row) for row in table[list(KEY_COLUMNS[:-1])].itertuples(
        index=False)}
    assert len(rows) == 2, "two runs of one scene differ in the shown columns"
    by_id = dict(zip(table["Run id"], table.to_dict("records"), strict=True))
    assert by_id[other.id]["Settings"].endswith("seed 3")
    assert by_id[app_run.id]["Settings"] == "10 steps · seed 0"
    assert by_id[app_run.id]["Outputs"] == ", ".join(app_run.request.params_dict["outputs"])
    assert by_id[app_run.id]["Acquired"] == app_run.datetime.strftime("%Y-%m-%d")
    assert by_id[app_run.id]["Status"].startswith("stored")
    # The run chooser tells them apart the same way.
    assert run_label(app_run) != run_label(other)
    assert sorted(at.selectbox(key=W.RUNS_CHOICE).options) == sorted(
        [run_label(app_run), run_label(other)])
