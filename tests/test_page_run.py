"""AppTest of the Run page with a scene seeded in session state: the page submits a job, the
server's worker runs it with a real (tiny, untrained) TerraMind model, the page shows it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from app.aoi import AOI
from app.job_store import JobState, JobStore
from app.layers import display_layers_for
from app.runs import RunStore
from app.ui.state import W
from inference.progress import format_seconds
from inference.throughput import Measured, ThroughputStore, WorkKey, device_id
from tests.fixtures.app_server import page_test
from tests.fixtures.jobs import use_model, wait_for_job
from tests.fixtures.models import s2_window

PAGE = "2_Run.py"


def _scene(modality: str = "S2L2A") -> tuple[Any, AOI]:
    da = s2_window(48, 40, seed=3)
    da.attrs.update({"modality": modality, "units": "DN", "kind": "input", "synthetic": False,
                     "scene_id": "S2A_TEST_SCENE", "datetime": "2022-06-15T10:00:31Z",
                     "aoi_cloud_share": 0.125, "aoi_valid_share": 1.0})
    w, s, e, n = da.rio.bounds()
    to_ll = Transformer.from_crs(da.rio.crs, 4326, always_xy=True)
    (lon0, lat0), (lon1, lat1) = to_ll.transform(w, s), to_ll.transform(e, n)
    return da, AOI.from_bbox(lon0, lat0, lon1, lat1)


def _seeded(modality: str = "S2L2A"):
    scene, aoi = _scene(modality)
    at = page_test(PAGE, timeout=180)
    at.session_state["scene"] = scene
    at.session_state["scene_items"] = ({"id": "S2A_TEST_SCENE", "collection": "sentinel-2-l2a",
                                        "properties": {}},)
    at.session_state["scene_aoi"] = aoi.to_json()
    return at


def test_without_a_scene_the_page_says_where_to_get_one(app_env: Path) -> None:
    at = page_test(PAGE).run()
    assert not at.exception
    assert any("No scene loaded" in e.value for e in at.error)
    assert not at.button


def test_a_radar_scene_is_refused(app_env: Path) -> None:
    at = _seeded("S1RTC").run()
    assert not at.exception
    assert any("Sentinel-2 L2A" in e.value for e in at.error)


def test_parameters_estimate_and_untrained_warning(app_env: Path) -> None:
    at = _seeded().run()
    assert not at.exception and not at.error
    assert any("outputs are noise" in w.value for w in at.warning)
    assert at.selectbox(key=W.SIZE).value == "tiny"  # TERRALENS_MODEL_SIZE
    estimate = next(i.value for i in at.info if "chip" in i.value)
    assert "40 × 48 px" in estimate and "**1 chip**" in estimate
    # Choosing no output is explained, not run.
    at.multiselect(key=W.OUTPUTS).set_value([]).run()
    assert any("at least one output" in i.value for i in at.info)
    at.button(key=W.RUN).click().run()
    assert any("Choose at least one output" in e.value for e in at.error)


def test_missing_weights_tell_how_to_provide_them(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv("TERRALENS_WEIGHTS", str(empty))
    at = _seeded().run()
    at.multiselect(key=W.OUTPUTS).set_value(["LULC"]).run()
    at.button(key=W.RUN).click().run()
    assert wait_for_job(at, app_env).state is JobState.FAILED
    assert not at.exception
    assert at.error, "a missing-weights error is shown"
    assert any("TerraMind weights not found" in e.value and str(empty) in e.value
               for e in at.error)
    assert any("terralens weights download --spec tiny:LULC" in i.value for i in at.info)
    assert "run_id" not in at.session_state or at.session_state["run_id"] is None
    assert not (app_env / "runs").exists() or not RunStore(app_env / "runs").list_runs()


def _estimate(at: Any) -> str:
    return next(i.value for i in at.info if "chip" in i.value)


def _measured(app_env: Path, *outputs: str, timesteps: int) -> Measured:
    key = WorkKey("generation", "tiny", outputs, timesteps, 224, device_id("cpu"))
    measured = ThroughputStore.beside(app_env / "runs").seconds_per_chip(key)
    assert measured is not None and measured.runs == 1, measured
    return measured


@pytest.mark.model
def test_run_generates_stores_and_reuses(
    app_env: Path, tiny_lulc_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = use_model(monkeypatch, tiny_lulc_model)
    at = _seeded().run()
    at.multiselect(key=W.OUTPUTS).set_value(["LULC"]).run()
    at.number_input(key=W.TIMESTEPS).set_value(1).run()
    before = _estimate(at)
    assert "nothing measured on this device yet" in before, before
    assert "loading the model first" in before, "the model is not loaded: loading is included"
    at.button(key=W.RUN).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    wait_for_job(at, app_env)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [(k.size, k.outputs) for k in built] == [("tiny", ("LULC",))]
    runs = RunStore(app_env / "runs").list_runs()
    assert len(runs) == 1
    # The estimate is refined by the run: measured here, the model now loaded.
    measured = _measured(app_env, "LULC", timesteps=1)
    after = _estimate(at)
    assert "measured here over 1 run of these settings" in after, after
    assert f"takes about **{format_seconds(measured.value)}**" in after
    assert "loading the model first" not in after, "the model is loaded now"
    assert at.session_state["run_id"] == runs[0].id
    assert any("Finished" in s.value for s in at.success)
    assert any("LULC" in m.value for m in at.markdown)
    assert any("layers" in str(link.proto.page) for link in at.get("page_link"))
    # The same request again is answered from the store without building a model.
    at.button(key=W.RUN).click().run()
    assert any("Answered from the run store" in s.value for s in at.success)
    assert len(built) == 1
    # Other timesteps are another run, but the same model: nothing is reloaded. Before it
    # ran, these settings are estimated from the fixed table scaled by this device's run.
    at.number_input(key=W.TIMESTEPS).set_value(2).run()
    assert "scaled by 1 run measured on this device" in _estimate(at)
    at.button(key=W.RUN).click().run()
    wait_for_job(at, app_env)
    assert len(RunStore(app_env / "runs").list_runs()) == 2 and len(built) == 1
    # A different seed is a different run.
    at.number_input(key=W.SEED).set_value(7).run()
    at.button(key=W.RUN).click().run()
    wait_for_job(at, app_env)
    assert len(RunStore(app_env / "runs").list_runs()) == 3 and len(built) == 1


@pytest.mark.model
def test_zero_shot_water_stores_prediction_and_its_lulc(
    app_env: Path, tiny_lulc_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_model(monkeypatch, tiny_lulc_model)
    at = _seeded().run()
    at.radio(key=W.TASK).set_value("water").run()
    assert not at.multiselect, "water needs no output choice"
    assert W.TIMESTEPS not in [n.key for n in at.number_input], "water decodes in one step"
    at.button(key=W.RUN).click().run()
    wait_for_job(at, app_env)
    assert not at.exception and not at.error, [e.value for e in at.error]
    [run] = RunStore(app_env / "runs").list_runs()
    assert run.request.task == "water"
    assert {"WATER", "LULC"} <= set(run.layer_names)


def _choose_tim(at: Any, checkpoint: str) -> Any:
    """Pick the fine-tuned TiM task and type ``checkpoint`` into its field."""
    at.radio(key=W.TASK).set_value("tim").run()
    assert not at.multiselect, "a TiM checkpoint needs no output choice"
    at.text_input(key=W.CHECKPOINT).input(checkpoint).run()
    return at


@pytest.mark.model
def test_fine_tuned_tim_checkpoint_runs_from_the_page(
    app_env: Path, tim_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference.tim
    import inference.tim_checkpoints

    loads: list[tuple[str, Any]] = []
    real_load = inference.tim_checkpoints.load_tim_checkpoint

    def load(path_or_repo_id: Any, **kwargs: Any) -> Any:
        loads.append((str(path_or_repo_id), kwargs.get("device")))
        return real_load(path_or_repo_id, **kwargs)

    monkeypatch.setattr(inference.tim_checkpoints, "load_tim_checkpoint", load)
    at = _choose_tim(_seeded().run(), str(tim_checkpoint))
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.button(key=W.RUN).click().run()
    wait_for_job(at, app_env)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Finished" in s.value for s in at.success)
    # The checkpoint from the text field is the one loaded, on the configured device.
    assert [path for path, _ in loads] == [str(tim_checkpoint)]
    assert str(loads[0][1]) == "cpu", "TERRALENS_DEVICE=cpu applies to TiM checkpoints too"

    [run] = RunStore(app_env / "runs").list_runs()
    assert at.session_state["run_id"] == run.id
    assert run.request.task == "tim"
    assert run.request.params_dict["checkpoint"] == str(tim_checkpoint)
    assert {"PREDICTION", "PREDICTION_PROB", "TIM_LULC"} <= set(run.layer_names)
    summary = "\n".join(m.value for m in at.markdown)
    assert "`PREDICTION`" in summary and "`TIM_LULC`" in summary
    assert "Fine-tuned TiM checkpoint" in summary
    # What the Layers page will offer: the prediction [P], the backbone's land cover [G].
    shown = {layer.source: layer for layer in display_layers_for(run.load_layers(load=False))}
    assert shown["PREDICTION"].name.startswith("[P] ") and not shown["PREDICTION"].synthetic
    assert shown["TIM_LULC"].name.startswith("[G] ") and shown["TIM_LULC"].synthetic
    # Provenance names the checkpoint that produced the layers.
    provenance = run.provenance
    assert provenance["task"] == "tim"
    assert provenance["checkpoint"] == f"local:{tim_checkpoint.resolve()}"
    assert provenance["model"] == "terramind_v1_tiny_tim"
    # The stored COGs cover exactly the scene window.
    scene = at.session_state["scene"]
    for name in ("PREDICTION", "TIM_LULC"):
        with rasterio.open(run.layer_path(name)) as src:
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert (src.height, src.width) == (scene.sizes["y"], scene.sizes["x"]) == (48, 40)
            assert src.crs == scene.rio.crs and src.transform == scene.rio.transform()
            data = src.read(1)
        assert data.dtype == np.uint8
    with rasterio.open(run.layer_path("PREDICTION")) as src:
        pred = src.read(1)
        assert src.nodata == inference.tim.PREDICTION_NODATA
    assert set(np.unique(pred)) <= {0, 1}, "2 classes, every pixel valid and inside the AOI"
    # The same checkpoint again is answered from the store, without loading it.
    at.button(key=W.RUN).click().run()
    assert any("Answered from the run store" in s.value for s in at.success)
    assert len(loads) == 1 and len(RunStore(app_env / "runs").list_runs()) == 1
    # Model size and diffusion steps do not apply to a checkpoint: they are not offered.
    assert not [w for w in [*at.number_input, *at.selectbox] if w.key in (W.TIMESTEPS, W.SIZE)]
    # Another seed is another run, and the TiM sampler really ran with it (the checkpoint
    # stays loaded: no second load).
    at.number_input(key=W.SEED).set_value(7).run()
    at.button(key=W.RUN).click().run()
    wait_for_job(at, app_env)
    assert len(loads) == 1
    assert not at.exception and not at.error, [e.value for e in at.error]
    [reseeded] = [r for r in RunStore(app_env / "runs").list_runs() if r.id != run.id]
    assert reseeded.request.params_dict["seed"] == 7
    assert reseeded.provenance["seed"] == 7
    assert reseeded.load_layer("TIM_LULC").attrs["seed"] == 7
    assert not np.array_equal(reseeded.load_layer("TIM_LULC").values,
                              run.load_layer("TIM_LULC").values)


def test_a_missing_tim_checkpoint_is_an_error_not_a_crash(
    app_env: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "flood.ckpt"
    at = _choose_tim(_seeded().run(), str(missing))
    at.button(key=W.RUN).click().run()
    assert wait_for_job(at, app_env).state is JobState.FAILED
    assert not at.exception
    assert any(str(missing) in e.value and "check the path" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert not any("terralens weights download" in i.value for i in at.info)
    assert not at.success
    assert "run_id" not in at.session_state or at.session_state["run_id"] is None
    assert not (app_env / "runs").exists() or not RunStore(app_env / "runs").list_runs()


def test_tim_without_a_checkpoint_asks_for_one(app_env: Path) -> None:
    at = _seeded().run()
    at.radio(key=W.TASK).set_value("tim").run()
    at.button(key=W.RUN).click().run()
    assert not at.exception
    assert any("needs a checkpoint path or repo id" in e.value for e in at.error)
    assert not (app_env / "runs").exists() or not RunStore(app_env / "runs").list_runs()


@pytest.mark.model
def test_an_interrupted_job_offers_run_again(
    app_env: Path, tiny_lulc_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.settings import load_settings
    from app.ui import run_view

    built = use_model(monkeypatch, tiny_lulc_model)
    _, aoi = _scene()
    spec = run_view.build_spec(
        items=({"id": "S2A_TEST_SCENE", "collection": "sentinel-2-l2a", "properties": {}},),
        aoi=aoi, task="generation", outputs=["LULC"], size="tiny", timesteps=1,
        seed=0, checkpoint=None)
    jobs = JobStore.beside(app_env / "runs")
    # A job the server was running when it stopped.
    job, _ = jobs.submit(spec, key=spec.key(load_settings().weights), device="cpu",
                         runner="cli")
    jobs.finish(job.id, JobState.INTERRUPTED)
    at = _seeded()
    at.session_state["run_job_id"] = job.id
    # The choices that session had made (kept for the session, see state.RUN_*).
    at.session_state["run_outputs"] = ["LULC"]
    at.session_state["run_timesteps"] = 1
    at.run()
    assert any("was interrupted" in w.value for w in at.warning)
    assert not RunStore(app_env / "runs").list_runs()
    at.button(key=W.RUN_AGAIN).click().run()
    assert at.session_state["run_job_id"] != job.id
    again = wait_for_job(at, app_env)
    assert again.key == job.key and again.state is JobState.DONE, again.error
    assert any("Finished" in s.value for s in at.success)
    assert [r.id for r in RunStore(app_env / "runs").list_runs()] == [job.key] and len(built) == 1


def test_estimate_counts_only_chips_the_drawn_polygon_touches(app_env: Path) -> None:
    scene = s2_window(448, 448, seed=4)
    scene.attrs.update({"modality": "S2L2A", "scene_id": "S2A_TEST_SCENE"})
    w, _, _, n = scene.rio.bounds()
    to_ll = Transformer.from_crs(scene.rio.crs, 4326, always_xy=True)
    corners = [to_ll.transform(x, y) for x, y in ((w, n), (w + 1400, n), (w, n - 1400))]
    triangle = AOI.from_geojson({"type": "Polygon", "coordinates": [[*corners, corners[0]]]})
    at = page_test(PAGE, timeout=180)
    at.session_state["scene"] = scene
    at.session_state["scene_items"] = ({"id": "S2A_TEST_SCENE",
                                        "collection": "sentinel-2-l2a", "properties": {}},)
    at.session_state["scene_aoi"] = triangle.to_json()
    at.run()
    assert not at.exception and not at.error
    estimate = next(i.value for i in at.info if "chip" in i.value)
    assert "448 × 448 px" in estimate and "**1 chip**" in estimate
    assert "8 chips of the bounding box hold no AOI pixel" in estimate


def _seconds(text: str) -> int:
    """The estimated seconds of the estimate line ("about **12 s**", "**1 min 05 s**")."""
    import re

    found = re.search(r"about \*\*(?:(\d+) min )?(\d+) s\*\*", text)
    assert found, text
    return 60 * int(found.group(1) or 0) + int(found.group(2))


def test_ensemble_seeds_control_shows_its_cost(app_env: Path) -> None:
    at = _seeded().run()
    control = at.number_input(key=W.SEEDS)
    assert control.label == "Ensemble seeds" and control.value == 1
    assert control.min == 1 and control.max == 16
    plain = next(i.value for i in at.info if "chip" in i.value)
    assert "ensemble" not in plain and "**1 chip**" in plain
    control.set_value(4).run()
    assert not at.exception and not at.error
    costly = next(i.value for i in at.info if "chip" in i.value)
    assert "**1 chip**" in costly and "× **4 ensemble seeds** = **4 chip runs**" in costly
    assert _seconds(costly) >= 3 * _seconds(plain)
    # Water has no ensemble: the control is not offered.
    at.radio(key=W.TASK).set_value("water").run()
    assert not at.exception
    assert W.SEEDS not in [n.key for n in at.number_input]


@pytest.mark.model
def test_an_ensemble_run_stores_its_u_layers(
    app_env: Path, tiny_lulc_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_model(monkeypatch, tiny_lulc_model)
    at = _seeded().run()
    at.multiselect(key=W.OUTPUTS).set_value(["LULC"]).run()
    at.number_input(key=W.SEEDS).set_value(3).run()
    at.button(key=W.RUN).click().run()
    assert wait_for_job(at, app_env).spec.seeds == 3
    assert not at.exception and not at.error, [e.value for e in at.error]
    [run] = RunStore(app_env / "runs").list_runs()
    assert {"LULC", "LULC_PROB", "LULC_AGREEMENT", "LULC_ENTROPY"} <= set(run.layer_names)
    assert run.provenance["seeds"] == 3 and run.provenance["ensemble_size"] == 3
    with rasterio.open(run.layer_path("LULC_AGREEMENT")) as ds:
        agreement = ds.read(1)
        assert ds.tags()["kind"] == "uncertainty"
    inside = np.isfinite(agreement)
    assert inside.any() and (agreement[inside] >= 1 / 3 - 1e-6).all()
    names = [layer.name for layer in display_layers_for(run.load_layers())]
    assert "[U] LULC agreement" in names and "[U] LULC entropy" in names
    assert any("LULC_ENTROPY" in m.value for m in at.markdown)
