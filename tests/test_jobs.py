"""Runs as jobs: the task table and canonical keys, the model manager, the job store and its
workers, and the CLI on the same path — with the real STAC API and a real (tiny, untrained)
TerraMind model."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from app.aoi import AOI
from app.cli_tasks import progress_line
from app.job_store import JobState, JobStore
from app.jobs import JobRuntime
from app.model_manager import GENERATION, ModelKey, ModelManager
from app.pipeline import model_key
from app.runs import RunStore
from app.settings import load_settings
from app.tasks import TASKS, JobSpec, Knob, Task
from inference.errors import InvalidRequestError
from inference.modalities import Modality
from inference.progress import Phase, Progress, Unit
from inference.throughput import Measured, ThroughputStore, WorkKey, device_id, estimate_run
from tests.fixtures.app_server import REPO
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat

SCENE = "S2B_T33TWL_20211105_A"
AOI_UTM = (500_600.0, 4_984_000.0, 502_200.0, 4_985_400.0)  # 160 x 140 px at 10 m
ITEMS = ({"id": "S2A_TEST", "collection": "sentinel-2-l2a", "properties": {}},)
BBOX_AOI = AOI.from_bbox(15.0, 45.0, 15.01, 45.01)


# -- The task table and the canonical key ---------------------------------------------------------
def test_the_same_request_in_another_output_order_has_the_same_key() -> None:
    a = JobSpec(task=Task.GENERATE, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny",
                outputs=(Modality.LULC, Modality.NDVI, Modality.S1GRD, Modality.DEM))
    b = JobSpec(task="generation", scene_items=ITEMS, aoi=BBOX_AOI, size="TINY",
                outputs=("LULC", "NDVI", "DEM", "S1GRD"))
    assert a == b and a.key("untrained") == b.key("untrained")
    # Defaults are explicit in the key: the size and timesteps are named even when not given.
    params = JobSpec(task=Task.GENERATE, scene_items=ITEMS, aoi=BBOX_AOI).params()
    assert params == {"seed": 0, "extent": "aoi", "size": "base", "timesteps": 10,
                      "outputs": ["LULC"]}
    assert a.key("untrained") != a.key("hub")
    assert a.key("untrained") != dataclasses.replace(a, seed=1).key("untrained")
    assert JobSpec.from_dict(a.to_dict()) == a


def test_knobs_that_do_not_apply_are_not_part_of_the_request() -> None:
    water = [JobSpec(task=Task.WATER, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny", timesteps=t)
             for t in (1, 10, 50)]
    assert len({w.key("untrained") for w in water}) == 1, "water always decodes in one step"
    assert "timesteps" not in water[0].params() and Knob.TIMESTEPS not in TASKS[Task.WATER].knobs
    tim = [JobSpec(task=Task.TIM, scene_items=ITEMS, aoi=BBOX_AOI, size=s, checkpoint="x.ckpt")
           for s in ("tiny", "large")]
    assert tim[0].key("u") == tim[1].key("u")
    with pytest.raises(InvalidRequestError, match="checkpoint"):
        JobSpec(task=Task.TIM, scene_items=ITEMS, aoi=BBOX_AOI)
    with pytest.raises(InvalidRequestError, match="No scene chosen"):
        JobSpec(task=Task.GENERATE, aoi=BBOX_AOI)
    with pytest.raises(InvalidRequestError, match="Unknown task 'paint'"):
        JobSpec(task="paint")


def test_timesteps_are_not_part_of_the_model() -> None:
    settings = load_settings()
    specs = [JobSpec(task=Task.GENERATE, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny",
                     outputs=(Modality.NDVI, Modality.LULC), timesteps=t) for t in (1, 10)]
    assert model_key(specs[0], settings) == model_key(specs[1], settings)
    water = JobSpec(task=Task.WATER, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny")
    lulc = JobSpec(task=Task.GENERATE, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny")
    assert model_key(water, settings) == model_key(lulc, settings), "one model serves both"


# -- The model manager ----------------------------------------------------------------------------
class _Model:
    def __init__(self, key: ModelKey) -> None:
        self.key, self.unloaded = key, False

    def unload(self) -> None:
        self.unloaded = True


def test_a_model_in_use_is_never_unloaded_and_idle_ones_are_evicted_first() -> None:
    made: list[_Model] = []

    def loader(key: ModelKey, **_: Any) -> _Model:
        made.append(_Model(key))
        return made[-1]

    manager = ModelManager(loader, capacity=1)
    tiny, small = ModelKey(GENERATION, "tiny", ("LULC",)), ModelKey(GENERATION, "small", ("LULC",))
    with manager.use(tiny) as first:
        with manager.use(tiny) as again:
            assert again is first and manager.users(tiny) == 2
        assert manager.builds == 1
    assert manager.users(tiny) == 0 and not first.unloaded  # idle, still loaded
    with manager.use(small) as second:
        assert first.unloaded and not second.unloaded  # the idle model made room
        assert manager.loaded() == [small]
    assert manager.builds == 2 and manager.evictions == 1


# -- Progress in the job table, throughput --------------------------------------------------------
def test_an_older_job_database_gains_the_phase_and_unit_columns(tmp_path: Path) -> None:
    import sqlite3

    old = tmp_path / ".jobs.db"
    spec = JobSpec(task=Task.GENERATE, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny")
    with sqlite3.connect(old) as con:  # the first release's table, one job in it
        con.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,"
                    " task TEXT NOT NULL, spec TEXT NOT NULL, label TEXT NOT NULL DEFAULT '',"
                    " device TEXT NOT NULL, session TEXT NOT NULL DEFAULT '', runner TEXT NOT"
                    " NULL DEFAULT 'queue', state TEXT NOT NULL, owner_pid INTEGER, owner_host"
                    " TEXT, submitted REAL NOT NULL, started REAL, finished REAL, phase_started"
                    " REAL, done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL DEFAULT 0,"
                    " message TEXT NOT NULL DEFAULT '', estimate_s REAL, cancel INTEGER NOT NULL"
                    " DEFAULT 0, reused INTEGER NOT NULL DEFAULT 0, error TEXT, error_kind TEXT,"
                    " run_id TEXT, result TEXT)")
        con.execute("INSERT INTO jobs (key, task, spec, device, state, submitted, message) "
                    "VALUES ('k', 'generation', ?, 'cpu', 'done', 1.0, 'stored')",
                    (json.dumps(spec.to_dict()),))
    jobs = JobStore(old)
    [before] = jobs.recent()
    assert (before.message, before.phase, before.unit) == ("stored", "", "")
    job, _ = jobs.submit(spec, key="k2", device="cpu", estimate_s=100.0)
    jobs.claim(job.id)
    jobs.progress(job.id, Progress(Phase.RUNNING, 3, 8, "generating: chip batch 1/2",
                                   Unit.CHIP_STEPS), new_phase=True)
    running = jobs.get(job.id)
    assert (running.phase, running.unit, running.done, running.total) == (
        "running the model", "chip steps", 3, 8)
    # While the model runs, the rate of its chip steps gives the time left.
    assert running.eta_s(now=running.phase_started + 30) == pytest.approx(50.0)


def test_the_estimate_is_refined_after_each_run(tmp_path: Path) -> None:
    store = ThroughputStore.beside(tmp_path)
    key = WorkKey("generation", "base", ("NDVI", "LULC"), 10, 224, device_id("cpu"))
    prior = estimate_run(store, key, chips=4, prior_s=20.0, model="m")
    assert (prior.source, prior.run_s, prior.load_source) == ("prior", 20.0, "prior")
    store.record_run(key, chips=4, seconds=332.0, prior_per_chip=5.0)  # 83 s per chip
    store.record_load("m", 40.0)
    first = estimate_run(store, key, chips=2, prior_s=10.0, model="m")
    assert (first.source, first.runs, first.run_s) == ("measured", 1, 166.0)
    assert (first.load_source, first.load_s, first.total_s) == ("measured", 40.0, 206.0)
    assert estimate_run(store, key, chips=2, prior_s=10.0, model=None).load_s == 0
    store.record_run(key, chips=1, seconds=43.0)  # faster now: the average moves half-way
    assert store.seconds_per_chip(key) == Measured(63.0, 2)
    # The outputs' order does not matter; other settings on this device are scaled from the
    # prior by what this device measured (83 / 5 = 16.6×).
    same = WorkKey("generation", "base", ("LULC", "NDVI"), 10, 224, device_id("cpu"))
    assert store.seconds_per_chip(same) == Measured(63.0, 2)
    other = WorkKey("generation", "base", ("LULC",), 1, 224, device_id("cpu"))
    scaled = estimate_run(store, other, chips=1, prior_s=1.0, model=None)
    assert scaled.source == "scaled" and scaled.run_s == pytest.approx(16.6)
    assert "scaled by 1 run measured on this device" in scaled.describe()
    gpu = WorkKey("generation", "base", ("LULC",), 1, 224, device_id("cuda:0"))
    assert estimate_run(store, gpu, chips=1, prior_s=1.0, model=None).source == "prior"
    assert json.loads((tmp_path / ".throughput.json").read_text())["per_chip"]


def test_the_manager_hands_build_phases_and_download_bytes_to_the_loader() -> None:
    def loader(key: ModelKey, *, progress: Any, on_bytes: Any) -> _Model:
        progress("resolving weight files")
        on_bytes("TerraMind_v1_tiny.pt", 100_000_000, 200_000_000)
        progress("loading TerraMind_v1_tiny.pt")
        return _Model(key)

    seen: list[Any] = []
    manager = ModelManager(loader)
    key = ModelKey(GENERATION, "tiny", ("LULC",))
    with manager.use(key, on_load=lambda k: seen.append(k.describe()), progress=seen.append,
                     on_bytes=lambda *a: seen.append(a)):
        pass
    assert seen == ["TerraMind tiny (LULC)", "resolving weight files",
                    ("TerraMind_v1_tiny.pt", 100_000_000, 200_000_000),
                    "loading TerraMind_v1_tiny.pt"]
    assert manager.load_seconds[key] > 0
    event = Progress(Phase.LOADING, 100_000_000, 200_000_000,
                     "loading weights: downloading TerraMind_v1_tiny.pt (100.0 MB of 200.0 MB)",
                     Unit.BYTES)
    assert progress_line(event) == f"[loading weights] {event.message}", "bytes are in the text"


# -- Jobs -----------------------------------------------------------------------------------------
@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stac_api_url: str) -> Path:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    monkeypatch.setenv("TERRALENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TERRALENS_WEIGHTS", "untrained")
    monkeypatch.setenv("TERRALENS_DEVICE", "cpu")
    return tmp_path


def _spec(s2_scene_set: SceneSet, **changes: Any) -> JobSpec:
    aoi = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM))
    return JobSpec(task=Task.GENERATE, scene_items=(s2_scene_set.scenes[SCENE].item,), aoi=aoi,
                   outputs=(Modality.LULC,), size="tiny", timesteps=1, **changes)


def _copies(model: Any, built: list[ModelKey]) -> Any:
    """A loader handing out copies of the session's tiny model (unloading a copy keeps it)."""

    def loader(key: ModelKey, **_: Any) -> Any:
        assert key.size == "tiny" and key.outputs == ("LULC",), key
        built.append(key)
        return dataclasses.replace(model)

    return loader


def _cli(args: list[str], env: dict[str, str], script: str | None = None) -> subprocess.Popen:
    code = script or "import sys\nfrom app.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO,
                            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _generate_args(out: Path, seed: int = 0) -> list[str]:
    w, s, e, n = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM)).bbox
    return ["generate", "--item", SCENE, "--bbox", f"{w},{s},{e},{n}", "--outputs", "LULC",
            "--model", "tiny", "--timesteps", "1", "--seed", str(seed), "--out", str(out)]


def _run_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "terralens.runlog" and r.levelno == logging.INFO]


def test_a_failed_run_is_one_log_line_with_who_what_how_long_and_the_error_class(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TERRALENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TERRALENS_WEIGHTS", "untrained")
    monkeypatch.setenv("TERRALENS_DEVICE", "cpu")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY", "sekrit-key-123")
    caplog.set_level(logging.INFO, logger="terralens.runlog")
    runtime = JobRuntime(load_settings()).start()
    try:
        # An item without a geometry cannot be windowed: the scene read fails at once.
        spec = JobSpec(task=Task.GENERATE, scene_items=ITEMS, aoi=BBOX_AOI, size="tiny",
                       outputs=("NDVI", "LULC"))
        job = runtime.wait(runtime.submit(spec, session="session-42").id, timeout_s=60)
    finally:
        runtime.shutdown()
    assert job is not None and job.state is JobState.FAILED
    [line] = _run_lines(caplog)
    assert line.startswith("run failed ")
    for part in ("session=session-42", "task=generation", "outputs=LULC,NDVI",
                 f"aoi_km2={BBOX_AOI.area_km2:.2f}", "model='terramind_v1_tiny_generate'",
                 "error=SceneError", "seconds="):
        assert part in line, (part, line)
    # The message (which may quote URLs or paths) and the settings' secrets stay out.
    assert job.error and job.error not in line
    assert "sekrit" not in caplog.text


@pytest.mark.integration
@pytest.mark.model
def test_two_concurrent_cli_generates_compute_once(env: Path, s2_scene_set: SceneSet) -> None:
    out = env / "shared-store"
    child_env = {k: v for k, v in os.environ.items() if k.startswith("TERRALENS_")}
    child_env["HF_HUB_OFFLINE"] = "1"
    procs = [_cli(_generate_args(out), child_env) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    paths = {stdout.strip() for stdout, _ in results}
    assert len(paths) == 1, paths
    [run] = RunStore(out).list_runs()
    assert str(run.path) == paths.pop()
    jobs = JobStore.beside(out).recent()
    assert [(j.state, j.reused) for j in jobs] == [(JobState.DONE, False)], "one computation"
    assert sum("chip batch" in err for _, err in results) == 1, "only one process generated"


#: A CLI run whose disk stalls after the first layer file (it is then killed with SIGKILL).
_STALLING = textwrap.dedent("""
    import sys, time
    import app.runs as runs
    real = runs.write_cog
    def stall(da, path):
        written = real(da, path)
        print("WRITING", flush=True)
        time.sleep(600)
        return written
    runs.write_cog = stall
    from app.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.integration
@pytest.mark.model
def test_a_killed_run_is_swept_marked_interrupted_and_the_queue_resumes(
    env: Path, s2_scene_set: SceneSet, tiny_lulc_model: Any
) -> None:
    settings = load_settings()
    child_env = {k: v for k, v in os.environ.items() if k.startswith("TERRALENS_")}
    child_env["HF_HUB_OFFLINE"] = "1"
    proc = _cli(_generate_args(settings.runs_dir), child_env, script=_STALLING)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", proc.stderr.read() if proc.stderr else line
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)  # reaps it and closes its pipes
    store = RunStore(settings.runs_dir)
    assert store.list_runs() == [], "a killed run lists nothing"
    leftovers = [p for p in settings.runs_dir.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers, "the killed writer left its temporary folder"
    jobs = JobStore.beside(settings.runs_dir)
    [killed] = jobs.recent()
    assert killed.state is JobState.RUNNING  # as the dead process left it
    # Queued before the restart (say by an analyst on the app): another seed.
    queued, new = jobs.submit(_spec(s2_scene_set, seed=5), key=_spec(s2_scene_set, seed=5).key(
        settings.weights), device=settings.device)
    assert new and queued.state is JobState.QUEUED

    built: list[ModelKey] = []
    runtime = JobRuntime(settings, models=ModelManager(_copies(tiny_lulc_model, built)))
    runtime.start()  # the next start: sweep, mark interrupted, continue the queue
    try:
        assert not [p for p in settings.runs_dir.iterdir() if p.name.startswith(".tmp-")]
        assert jobs.get(killed.id).state is JobState.INTERRUPTED
        done = runtime.wait(queued.id, timeout_s=300)
        assert done.state is JobState.DONE, done.error
        run = store.open(done.run_id)
        assert run.provenance["seed"] == 5 and run.provenance["model"] == \
            "terramind_v1_tiny_generate"
        # "Run again" on the interrupted job computes it now, under the same key.
        again = runtime.rerun(killed.id)
        assert again.key == killed.key
        finished = runtime.wait(again.id, timeout_s=300)
        assert finished.state is JobState.DONE and finished.run_id == killed.key
        assert len(built) == 1, "the model was loaded once for both jobs"
    finally:
        runtime.shutdown()


@pytest.mark.integration
@pytest.mark.model
def test_identical_submissions_share_one_job_and_cancel_works(
    env: Path, s2_scene_set: SceneSet, tiny_lulc_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from inference.devices import DEVICE_LOCK

    caplog.set_level(logging.INFO, logger="terralens.runlog")
    settings = load_settings()
    built: list[ModelKey] = []
    runtime = JobRuntime(settings, models=ModelManager(_copies(tiny_lulc_model, built))).start()
    try:
        with DEVICE_LOCK:  # another session holds the device: jobs wait for it
            first = runtime.submit(_spec(s2_scene_set), session="a")
            second = runtime.submit(_spec(s2_scene_set), session="b")
            assert second.id == first.id, "the identical request joins the first job"
            other = runtime.submit(_spec(s2_scene_set, seed=9), session="b")
            assert other.id != first.id
            assert runtime.jobs.position(runtime.jobs.get(other.id)) == 2
            cancelled = runtime.cancel(other.id)  # queued: cancelled at once
            assert cancelled.state is JobState.CANCELLED
            while runtime.jobs.get(first.id).state is not JobState.RUNNING:
                runtime.wait(first.id, timeout_s=0.2)
            runtime.cancel(first.id)  # running (waiting for the device): stops at its check
        ended = runtime.wait(first.id, timeout_s=300)
        assert ended.state is JobState.CANCELLED, (ended.state, ended.error)
        assert RunStore(settings.runs_dir).list_runs() == []
        assert runtime.jobs.get(other.id).started is None, "a cancelled queued job never ran"
        # Submitted again, it runs; the same request once more is answered from the store.
        done = runtime.wait(runtime.submit(_spec(s2_scene_set)).id, timeout_s=300)
        assert done.state is JobState.DONE and not done.reused
        reused = runtime.submit(_spec(s2_scene_set))
        assert reused.state is JobState.DONE and reused.reused and reused.run_id == done.run_id
    finally:
        runtime.shutdown()
    # The server log has one line per run end: who, what, how it ended.
    ends = [line.split()[1] for line in _run_lines(caplog)]
    assert ends == ["cancelled", "cancelled", "finished", "reused"], _run_lines(caplog)
    assert "session=b" in _run_lines(caplog)[0] and "session=a" in _run_lines(caplog)[1]
    assert f"run_id={done.run_id}" in _run_lines(caplog)[2]
