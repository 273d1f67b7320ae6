"""Scene → inference → run store, end to end on the real STAC API with a real (tiny) model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from app.aoi import AOI
from app.cli import main
from app.model_manager import ModelKey, ModelManager
from app.pipeline import execute, find_existing
from app.runs import RunStore
from app.settings import load_settings
from app.tasks import JobSpec, Task
from inference.errors import SceneError
from inference.modalities import Modality
from inference.progress import Phase, Progress
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat, utm_polygon_to_lonlat

pytestmark = [pytest.mark.integration, pytest.mark.model]

SCENE = "S2B_T33TWL_20211105_A"  # clear, baseline 03.01
AOI_UTM = (500_600.0, 4_984_000.0, 502_200.0, 4_985_400.0)  # 160 x 140 px at 10 m


@pytest.fixture()
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stac_api_url: str) -> Path:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    monkeypatch.setenv("TERRALENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TERRALENS_WEIGHTS", "untrained")
    monkeypatch.setenv("TERRALENS_DEVICE", "cpu")
    return tmp_path


def test_generation_is_stored_and_the_same_request_is_answered_from_the_store(
    env: Path, s2_scene_set: SceneSet, tiny_lulc_model: Any
) -> None:
    settings = load_settings()
    store = RunStore(settings.runs_dir)
    aoi = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM))
    job = JobSpec(task=Task.GENERATE, scene_items=(s2_scene_set.scenes[SCENE].item,), aoi=aoi,
                  outputs=(Modality.LULC,), size="tiny", timesteps=1, seed=3)
    calls: list[ModelKey] = []

    def loader(key: ModelKey, **_: Any) -> Any:
        calls.append(key)
        return dataclasses.replace(tiny_lulc_model)

    models = ModelManager(loader)
    events: list[Progress] = []
    assert find_existing(job, settings=settings, store=store) is None
    run = execute(job, settings=settings, store=store, models=models, progress=events.append).run
    assert run is not None
    assert [(k.size, k.outputs) for k in calls] == [("tiny", ("LULC",))]
    # Each phase in order: the scene window, the weights, each chip batch, writing.
    assert _phases(events) == [Phase.READING, Phase.LOADING, Phase.RUNNING, Phase.WRITING,
                               Phase.STORED]
    messages = [e.message for e in events]
    assert "generating: chip batch 1/1" in messages
    assert "loading weights: TerraMind tiny (LULC)" in messages
    assert [e.message for e in events if e.phase is Phase.READING][-1].startswith(
        "reading the scene window: 160 × 140 px, 1 chip; estimate "), "the estimate, once read"
    assert {"LULC", "LULC_PROB"} <= set(run.layer_names)
    lulc = run.load_layer("LULC")
    scene = run.load_layer(run.input_name)
    assert lulc.rio.crs == scene.rio.crs
    assert lulc.rio.transform() == scene.rio.transform()
    assert lulc.shape[1:] == scene.shape[1:] == (140, 160)
    assert run.untrained and run.provenance["model"] == "terramind_v1_tiny_generate"
    assert run.provenance["scene_id"] == SCENE and run.provenance["offset_applied"] == 0
    links = json.loads((run.path / "item.json").read_text())["links"]
    assert [link["href"] for link in links if link["rel"] == "derived_from"] == [
        f"{settings.stac_url}/collections/sentinel-2-l2a/items/{SCENE}"]

    again = execute(job, settings=settings, store=store, models=models)
    assert again.reused and again.run is not None and again.run.id == run.id
    assert len(calls) == 1  # no model, no scene read the second time
    other_seed = dataclasses.replace(job, seed=4)
    assert find_existing(other_seed, settings=settings, store=store) is None
    assert run.provenance["extent"] == "aoi"  # not answered by runs of the whole bounding box


def _phases(events: list[Progress]) -> list[Phase]:
    """The phases of ``events`` in order, each once per stretch."""
    phases = [e.phase for e in events]
    return [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]


def test_outputs_are_clipped_to_a_drawn_polygon(
    env: Path, s2_scene_set: SceneSet, tiny_lulc_model: Any
) -> None:
    x0, y0, x1, y1 = AOI_UTM
    aoi = AOI.from_geojson(utm_polygon_to_lonlat((x0, y0), (x1, y0), (x0, y1)))
    job = JobSpec(task=Task.GENERATE, scene_items=(s2_scene_set.scenes[SCENE].item,), aoi=aoi,
                  outputs=(Modality.LULC,), size="tiny", timesteps=1, seed=3)
    settings = load_settings()
    run = execute(job, settings=settings, store=RunStore(settings.runs_dir),
                  models=ModelManager(lambda key, **_: dataclasses.replace(tiny_lulc_model))).run
    assert run is not None
    with rasterio.open(run.layer_path("LULC_PROB")) as src:
        probs = src.read(1)
    computed = np.isfinite(probs)
    assert computed.mean() == pytest.approx(0.5, abs=0.03)  # half the bounding box
    assert computed[-1, 0] and not computed[0, -1]  # SW corner inside, NE corner outside
    assert run.provenance["clipped_to_aoi"] is True
    assert run.load_layer(run.input_name).notnull().all()  # the input keeps its context


def test_a_sentinel1_scene_cannot_feed_terramind_generation(
    env: Path, s2_scene_set: SceneSet
) -> None:
    s1 = next(s for s in s2_scene_set.items if s["collection"] == "sentinel-1-rtc")
    aoi = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM))
    job = JobSpec(task=Task.GENERATE, scene_items=(s1,), aoi=aoi, size="tiny", timesteps=1)
    settings = load_settings()
    with pytest.raises(SceneError, match="Sentinel-2 L2A"):
        execute(job, settings=settings, store=RunStore(settings.runs_dir),
                models=ModelManager(lambda key, **_: pytest.fail("model must not be built")))


def test_cli_generate_writes_cogs_and_a_stac_item(
    env: Path, capsys: pytest.CaptureFixture[str], s2_scene_set: SceneSet
) -> None:
    w, s, e, n = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM)).bbox
    out = env / "cli-runs"
    code = main(["generate", "--item", SCENE, "--bbox", f"{w},{s},{e},{n}", "--outputs", "LULC",
                 "--model", "tiny", "--timesteps", "1", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_dir = Path(captured.out.strip())
    assert run_dir.parent == out and (run_dir / "item.json").is_file()
    # Each phase on stderr in order, the model build (the real loader) step by step.
    lines = [line for line in captured.err.splitlines() if line.startswith("[")]
    phases = [line[1:line.index("]")] for line in lines]
    phases = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert phases == [Phase.READING, Phase.LOADING, Phase.RUNNING, Phase.WRITING, Phase.STORED]
    loading = [line for line in lines if line.startswith("[loading weights]")]
    assert any("importing terratorch" in line for line in loading), loading
    assert any("building terramind_v1_tiny_generate (seeded random init)" in line
               for line in loading), loading
    [first] = [line for line in lines if "estimate" in line]
    assert "fixed table: nothing measured on this device yet" in first, first
    assert "loading the model (a guess until a load is measured here)" in first, first
    # The run refined the estimate: the next run (another seed) is estimated from it.
    assert main(["generate", "--item", SCENE, "--bbox", f"{w},{s},{e},{n}", "--outputs",
                 "LULC", "--model", "tiny", "--timesteps", "1", "--seed", "8", "--out",
                 str(out)]) == 0
    second = [line for line in capsys.readouterr().err.splitlines() if "estimate" in line]
    assert second and "measured here over 1 run of these settings" in second[0], second
    assert "loading the model (measured here)" in second[0], "a new manager loads it again"
    with rasterio.open(run_dir / "LULC.tif") as src, rasterio.open(run_dir / "input.tif") as inp:
        classes = src.read(1)
        nodata = src.nodata
        assert src.crs == inp.crs and src.crs.to_epsg() == 32633
        assert src.transform == inp.transform and classes.shape == inp.shape
    # The lon/lat bbox envelope of the UTM box: at least the box, at most a pixel more a side.
    assert 140 <= classes.shape[0] <= 142 and 160 <= classes.shape[1] <= 162
    # Classes inside the AOI; the file's nodata (255) only outside it, on the window's rim.
    assert nodata == 255 and np.isin(classes, [*range(10), 255]).all()
    assert np.isin(classes[1:-1, 1:-1], np.arange(10)).all()


def test_cli_generate_seeds_writes_the_ensemble_and_its_u_layers(
    env: Path, capsys: pytest.CaptureFixture[str], s2_scene_set: SceneSet
) -> None:
    w, s, e, n = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM)).bbox
    out = env / "cli-runs"
    args = ["generate", "--item", SCENE, "--bbox", f"{w},{s},{e},{n}", "--outputs", "LULC",
            "--model", "tiny", "--timesteps", "1", "--out", str(out)]
    assert main([*args, "--seeds", "17"]) == 2  # bad input
    assert "seeds must be an integer in 1..16, got 17" in capsys.readouterr().err
    code = main([*args, "--seeds", "3"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_dir = Path(captured.out.strip())
    item = json.loads((run_dir / "item.json").read_text())
    provenance = item["properties"]["terralens:provenance"]
    assert provenance["seeds"] == provenance["ensemble_size"] == 3
    assert item["properties"]["terralens:request"]["params"]["seeds"] == 3
    assert {"LULC", "LULC_PROB", "LULC_AGREEMENT", "LULC_ENTROPY"} <= set(item["assets"])
    with rasterio.open(run_dir / "LULC_AGREEMENT.tif") as agree, \
            rasterio.open(run_dir / "LULC_ENTROPY.tif") as ent, \
            rasterio.open(run_dir / "LULC.tif") as mode:
        assert agree.crs == ent.crs == mode.crs and agree.transform == mode.transform
        assert agree.tags()["ensemble_size"] == ent.tags()["ensemble_size"] == "3"
        share, bits, classes = agree.read(1), ent.read(1), mode.read(1)
    inside = classes != 255
    # Three members: the mode's share is 1/3, 2/3 or 1; the vote entropy 0 where all agree.
    np.testing.assert_allclose(share[inside] * 3, np.round(share[inside] * 3), atol=1e-5)
    assert set(np.round(share[inside] * 3).astype(int)) <= {1, 2, 3}
    np.testing.assert_array_equal(bits[inside] == 0, share[inside] == 1)
    assert np.isnan(share[~inside]).all()
    # The plain run is another run (the seed count is part of the key).
    assert main(args) == 0
    assert Path(capsys.readouterr().out.strip()) != run_dir


def test_cli_generate_unknown_item_is_a_clear_error(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["generate", "--item", "NOPE", "--bbox", "15.0,45.0,15.01,45.01",
                 "--outputs", "LULC", "--model", "tiny", "--out", str(env / "x")])
    assert code == 1
    assert "no item 'NOPE'" in capsys.readouterr().err
