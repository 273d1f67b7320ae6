"""AppTests of runs as jobs across pages and sessions: a job outlives the page that submitted
it, two analysts share the device without reloading each other's model, and jobs can be
cancelled queued or running — with real (tiny/small, untrained) TerraMind models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import app.model_manager
from app.job_store import JobState, JobStore
from app.model_manager import ModelKey
from app.runs import RunStore
from app.ui.state import W
from tests.fixtures.app_server import PAGES, page_test
from tests.fixtures.jobs import use_model, wait_for_job
from tests.test_page_run import _scene

RUN_PAGE = str(PAGES / "2_Run.py")
RUNS_PAGE = str(PAGES / "4_Runs.py")


def _session(page: str = "main") -> Any:
    """An AppTest (one browser session) with the test scene loaded."""
    scene, aoi = _scene()
    at = page_test(page, timeout=300)
    at.session_state["scene"] = scene
    at.session_state["scene_items"] = ({"id": "S2A_TEST_SCENE", "collection": "sentinel-2-l2a",
                                        "properties": {}},)
    at.session_state["scene_aoi"] = aoi.to_json()
    return at


def _ask(at: Any, *, size: str | None = None, seed: int = 0) -> Any:
    """Choose LULC, one step, a seed (and a size) on the Run page and press Run."""
    at.multiselect(key=W.OUTPUTS).set_value(["LULC"]).run()
    at.number_input(key=W.TIMESTEPS).set_value(1).run()
    at.number_input(key=W.SEED).set_value(seed).run()
    if size:
        at.selectbox(key=W.SIZE).set_value(size).run()
    at.button(key=W.RUN).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _sidebar_text(at: Any) -> str:
    parts = [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption]
    return "\n".join(parts)


@pytest.mark.model
def test_a_job_goes_on_while_the_analyst_is_on_other_pages(
    app_env: Path, tiny_lulc_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_model(monkeypatch, tiny_lulc_model)
    at = _session()
    at.run()
    at.switch_page(RUN_PAGE).run()
    _ask(at)
    job_id = at.session_state["run_job_id"]
    # Straight to the Runs page: the job is in the sidebar's queue panel, not lost.
    at.switch_page(RUNS_PAGE).run()
    assert not at.exception
    assert f"#{job_id}" in _sidebar_text(at)
    job = wait_for_job(at, app_env)
    assert job.state is JobState.DONE, job.error
    [run] = RunStore(app_env / "runs").list_runs()
    assert run.id == job.run_id
    assert any(run.request.scene_id in str(df.value.to_dict()) for df in at.dataframe)
    # A toast announces it on whatever page the analyst is, with a link to its layers.
    assert any(f"layers?run={run.id}" in t.value for t in at.toast), [t.value for t in at.toast]
    # Back on the Run page, the finished run is shown with the way to its layers.
    at.switch_page(RUN_PAGE).run()
    assert any("Finished" in s.value for s in at.success)
    assert at.session_state["run_id"] == run.id


@pytest.mark.model
def test_two_sessions_with_different_sizes_share_the_device_without_reloads(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    real = app.model_manager.load_model
    built: list[ModelKey] = []

    def counting(key: ModelKey) -> Any:
        built.append(key)
        torch.manual_seed(1234)
        return real(key)

    monkeypatch.setattr(app.model_manager, "load_model", counting)
    first, second = _session(), _session()
    for at in (first, second):
        at.run()
        at.switch_page(RUN_PAGE).run()
    _ask(first, size="tiny")
    _ask(second, size="small")
    jobs = [wait_for_job(at, app_env) for at in (first, second)]
    assert [j.state for j in jobs] == [JobState.DONE, JobState.DONE], [j.error for j in jobs]
    store = RunStore(app_env / "runs")
    models = [store.open(str(j.run_id)).provenance["model"] for j in jobs]
    assert models == ["terramind_v1_tiny_generate", "terramind_v1_small_generate"]
    assert [k.size for k in built] == ["tiny", "small"], "each model built once, none reloaded"
    for at in (first, second):
        assert any("Finished" in s.value for s in at.success)


@pytest.mark.model
def test_cancel_a_queued_and_a_running_job(
    app_env: Path, tiny_lulc_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.devices import DEVICE_LOCK

    built = use_model(monkeypatch, tiny_lulc_model)
    first, second = _session("2_Run.py"), _session("2_Run.py")
    jobs = JobStore.beside(app_env / "runs")
    with DEVICE_LOCK:  # the device is busy: the first job waits on it, the second in the queue
        _ask(first.run(), seed=1)
        job_id = first.session_state["run_job_id"]
        while jobs.get(job_id).state is JobState.QUEUED:  # the worker takes it up
            time.sleep(0.05)
        _ask(second.run(), seed=2)
        running, queued = (jobs.get(at.session_state["run_job_id"]) for at in (first, second))
        assert queued.state is JobState.QUEUED
        assert any("position 2" in i.value for i in second.info)
        second.button(key=W.CANCEL).click().run()
        assert jobs.get(queued.id).state is JobState.CANCELLED
        assert any("Run cancelled" in w.value for w in second.warning)
        first.run()
        first.button(key=W.CANCEL).click().run()
    ended = wait_for_job(first, app_env)
    assert ended.id == running.id and ended.state is JobState.CANCELLED
    assert any("Run cancelled" in w.value for w in first.warning)
    assert RunStore(app_env / "runs").list_runs() == []
    assert jobs.get(queued.id).started is None, "the cancelled queued job never ran"
    assert len(built) <= 1
