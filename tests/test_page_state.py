"""AppTests of state that sticks: each page's choices survive leaving the page and coming back
(the whole app, through its navigation), a result that no longer matches the inputs is not
shown as theirs, and the Run page says when the Search AOI moved away from the loaded scene."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from app.aoi import AOI
from app.job_store import JobState, JobStore
from app.settings import load_settings
from app.ui import run_view
from app.ui.state import W
from tests.fixtures.app_server import PAGES, page_test
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat
from tests.test_page_run import _scene
from tests.test_page_search import AOI_A_UTM

RUN = str(PAGES / "2_Run.py")
SEARCH = str(PAGES / "1_Search.py")
RUNS = str(PAGES / "4_Runs.py")
ITEMS = ({"id": "S2A_TEST_SCENE", "collection": "sentinel-2-l2a", "properties": {}},)


def _app_with_scene() -> tuple[AppTest, AOI]:
    """The whole app (navigation included) with a scene loaded, on the Run page."""
    scene, aoi = _scene()
    at = page_test("main", timeout=180)
    at.session_state["scene"] = scene
    at.session_state["scene_items"] = ITEMS
    at.session_state["scene_aoi"] = aoi.to_json()
    at.session_state["aoi"] = aoi.to_json()
    at.run()
    at.switch_page(RUN).run()
    assert not at.exception, at.exception
    return at, aoi


def _leave_and_come_back(at: AppTest, page: str, away: str = RUNS) -> AppTest:
    at.switch_page(away).run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_run_page_choices_survive_leaving_and_coming_back(app_env: Path) -> None:
    at, _ = _app_with_scene()
    at.selectbox(key=W.SIZE).set_value("small").run()
    at.multiselect(key=W.OUTPUTS).set_value(["DEM", "S1GRD"]).run()
    at.number_input(key=W.TIMESTEPS).set_value(3).run()
    at.number_input(key=W.SEED).set_value(42).run()
    _leave_and_come_back(at, RUN)
    assert at.title[0].value == "Run TerraMind"
    assert at.selectbox(key=W.SIZE).value == "small"
    assert at.multiselect(key=W.OUTPUTS).value == ["DEM", "S1GRD"]
    assert at.number_input(key=W.TIMESTEPS).value == 3
    assert at.number_input(key=W.SEED).value == 42
    # Another task hides the timesteps; back on generation they are still 3.
    at.radio(key=W.TASK).set_value("water").run()
    assert W.TIMESTEPS not in [n.key for n in at.number_input]
    _leave_and_come_back(at, RUN, away=SEARCH)
    assert at.radio(key=W.TASK).value == "water"
    at.radio(key=W.TASK).set_value("generation").run()
    assert at.number_input(key=W.TIMESTEPS).value == 3
    assert at.number_input(key=W.SEED).value == 42


def _job(app_env: Path, aoi: AOI, *, seed: int, end: JobState, run_id: str | None = None,
         error: str | None = None) -> int:
    spec = run_view.build_spec(items=ITEMS, aoi=aoi, task="generation",
                               outputs=["LULC", "NDVI"], size="tiny", timesteps=10, seed=seed,
                               checkpoint=None)
    jobs = JobStore.beside(app_env / "runs")
    job, _ = jobs.submit(spec, key=spec.key(load_settings().weights), device="cpu",
                         runner="cli")
    jobs.finish(job.id, end, run_id=run_id, error=error)
    return job.id


def test_a_finished_panel_that_no_longer_matches_the_inputs_is_not_shown(
    app_env: Path, app_run: Any
) -> None:
    at, aoi = _app_with_scene()
    at.session_state["run_job_id"] = _job(app_env, aoi, seed=0, end=JobState.DONE,
                                          run_id=app_run.id)
    at.run()
    assert any("Finished" in s.value for s in at.success), [s.value for s in at.success]
    # Another seed is another request: the old result is not shown as its result.
    at.number_input(key=W.SEED).set_value(7).run()
    assert not any("Finished" in s.value for s in at.success)
    assert any("was for other choices" in c.value for c in at.caption)
    # Back to the choices of that run: its result is shown again.
    at.number_input(key=W.SEED).set_value(0).run()
    assert any("Finished" in s.value for s in at.success)
    # Leaving the page and coming back keeps both the choices and the matching result.
    _leave_and_come_back(at, RUN)
    assert any("Finished" in s.value for s in at.success)


def test_a_failed_run_of_other_outputs_is_cleared(app_env: Path) -> None:
    at, aoi = _app_with_scene()
    at.session_state["run_job_id"] = _job(app_env, aoi, seed=0, end=JobState.FAILED,
                                          error="Out of memory on the device")
    at.run()
    assert any("Out of memory" in e.value for e in at.error)
    at.multiselect(key=W.OUTPUTS).set_value(["LULC"]).run()
    assert not any("Out of memory" in e.value for e in at.error)
    assert any("was for other choices" in c.value for c in at.caption)


def test_run_page_warns_when_the_search_aoi_no_longer_matches_the_scene(app_env: Path) -> None:
    at, _ = _app_with_scene()
    assert not any("not the one this scene was loaded for" in w.value for w in at.warning)
    other = AOI.from_bbox(15.0, 45.0, 15.03, 45.02)
    at.session_state["aoi"] = other.to_json()
    at.run()
    [warning] = [w.value for w in at.warning if "not the one this scene was loaded for" in w.value]
    assert f"({other.area_km2:,.2f} km²)" in warning and "Load the scene again" in warning


def test_search_form_and_filters_survive_leaving_and_coming_back(app_env: Path) -> None:
    at = page_test("main", timeout=60)
    at.session_state["aoi"] = AOI.from_bbox(15.0, 45.0, 15.03, 45.02).to_json()
    at.run()
    assert at.title[0].value == "Search scenes"
    start, end = dt.date(2024, 6, 1), dt.date(2024, 6, 30)
    at.date_input(key=W.START).set_value(start)
    at.date_input(key=W.END).set_value(end)
    at.slider(key=W.MAX_CLOUD).set_value(12)
    at.number_input(key=W.LIMIT).set_value(7)
    at.button(key="FormSubmitter:search_form-Search").click().run()  # the catalog is down
    assert not at.exception
    _leave_and_come_back(at, SEARCH)
    assert at.date_input(key=W.START).value == start
    assert at.date_input(key=W.END).value == end
    assert at.slider(key=W.MAX_CLOUD).value == 12
    assert at.number_input(key=W.LIMIT).value == 7


@pytest.mark.integration
def test_search_results_filters_and_the_ticked_row_survive_leaving_and_coming_back(
    app_env: Path, stac_api_url: str, s2_scene_set: SceneSet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    at = page_test("main", timeout=120)
    at.session_state["aoi"] = AOI.from_geojson(utm_box_to_lonlat(*AOI_A_UTM)).to_json()
    at.run()
    at.date_input(key=W.START).set_value(dt.date(2021, 1, 1))
    at.date_input(key=W.END).set_value(dt.date(2023, 12, 31))
    at.slider(key=W.MAX_CLOUD).set_value(100)
    at.button(key="FormSubmitter:search_form-Search").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.slider(key=W.FILTER_CLOUD).set_value(40).run()
    shown = list(at.dataframe[0].value["Item id"])
    assert len(shown) >= 2
    # The row the analyst ticked (AppTest cannot click a dataframe row: seed the choice).
    at.session_state["selected_scene_id"] = shown[1]
    at.run()
    _leave_and_come_back(at, SEARCH)
    assert at.date_input(key=W.START).value == dt.date(2021, 1, 1)
    assert at.slider(key=W.FILTER_CLOUD).value == 40
    assert list(at.dataframe[0].value["Item id"]) == shown
    ticked = json.loads(at.dataframe[0].proto.selection_default)
    assert ticked["selection"]["rows"] == [1]
    assert any(shown[1] in h.value for h in at.subheader)
