"""Generation with real (tiny, untrained) TerraMind models: grids, units, seeds, tiling, cancel.

Untrained diffusion decoders output exactly the de-standardised mean (their last layer starts at
zero), so seed dependence is checked on LULC, whose token sampler is stochastic even untrained.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import xarray as xr

from inference.errors import InvalidRequestError, RunCancelledError
from inference.generate import LULC_PROB, GenerationTask, batch_seed, estimate, generate
from inference.modalities import CLASS_NODATA, LULC_CLASSES, MODALITY_INFO, S1_BANDS, Modality
from inference.tiling import count_chips
from tests.fixtures.models import s2_window

LULC_TASK = {"outputs": ("LULC",), "timesteps": 1, "chip": 64, "overlap": 16, "batch_size": 4}


def assert_same_grid(out: xr.DataArray, ref: xr.DataArray) -> None:
    assert out.dims == ("band", "y", "x")
    assert out.rio.crs == ref.rio.crs
    assert out.rio.transform() == ref.rio.transform()
    assert out.rio.bounds() == ref.rio.bounds()
    np.testing.assert_array_equal(out.x.values, ref.x.values)
    np.testing.assert_array_equal(out.y.values, ref.y.values)


@pytest.mark.model
def test_real_chip_lulc(tiny_lulc_model, real_s2l2a: xr.DataArray) -> None:
    task = GenerationTask(outputs=("LULC",), timesteps=1, seed=3)
    out = generate(tiny_lulc_model, real_s2l2a, task)
    assert set(out) == {"LULC", LULC_PROB}
    lulc, probs = out["LULC"], out[LULC_PROB]
    for layer in (lulc, probs):
        assert_same_grid(layer, real_s2l2a)
        assert layer.attrs["kind"] == "generated" and layer.attrs["synthetic"] is True
        assert layer.attrs["untrained"] is True and layer.attrs["weights"] == "untrained"
        assert layer.attrs["model"] == "terramind_v1_tiny_generate"
        assert layer.attrs["scene_id"] == "terramesh-example"
        assert layer.attrs["offset_applied"] == 0
        assert (layer.attrs["timesteps"], layer.attrs["seed"]) == (1, 3)
        assert layer.attrs["terratorch_version"]
        assert "noise" in layer.attrs["note"]
        # Provenance attrs must be plain JSON types for the run store and GeoTIFF tags (the
        # class map's nodata, rioxarray's _FillValue, is written as the GeoTIFF's nodata).
        json.dumps({k: v for k, v in layer.attrs.items() if k != "_FillValue"})
    assert lulc.rio.nodata == 255
    assert lulc.dtype == np.uint8 and lulc.shape == (1, 224, 224)
    assert lulc.attrs["units"] == "class"
    assert json.loads(lulc.attrs["class_names"]) == [c.name for c in LULC_CLASSES]
    assert probs.dtype == np.float32 and probs.shape == (10, 224, 224)
    assert list(probs.band.values) == [c.name for c in LULC_CLASSES]
    np.testing.assert_allclose(probs.values.sum(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(lulc.values[0], probs.values.argmax(axis=0))


@pytest.mark.model
def test_non_square_window_over_several_chips(tiny_lulc_model) -> None:
    s2 = s2_window(300, 250, seed=1)
    s2[:, :20, :] = np.nan  # a no-data strip along the top
    task = GenerationTask(**(LULC_TASK | {"chip": 128, "overlap": 32}))
    seen: list[tuple[int, int]] = []
    out = generate(tiny_lulc_model, s2, task, progress=lambda d, t: seen.append((d, t)))
    total = count_chips(300, 250, 128, 32)
    assert total > 4 and seen[-1] == (total, total)
    lulc, probs = out["LULC"], out[LULC_PROB]
    assert_same_grid(lulc, s2)
    assert_same_grid(probs, s2)
    assert (lulc.values[0, :20] == CLASS_NODATA).all()  # no data where the input had none
    assert np.isnan(probs.values[:, :20]).all()
    valid = probs.values[:, 20:]
    assert np.isfinite(valid).all()
    np.testing.assert_array_equal(lulc.values[0, 20:], valid.argmax(axis=0))
    assert s2.attrs["offset_applied"] == lulc.attrs["offset_applied"] == 1000


@pytest.mark.model
def test_seed_reproducibility(tiny_lulc_model) -> None:
    s2 = s2_window(96, 80, seed=2)
    runs = {
        seed: generate(tiny_lulc_model, s2, GenerationTask(**(LULC_TASK | {"seed": seed})))
        for seed in (0, 1)
    }
    again = generate(tiny_lulc_model, s2, GenerationTask(**(LULC_TASK | {"seed": 0})))
    np.testing.assert_array_equal(runs[0][LULC_PROB].values, again[LULC_PROB].values)
    np.testing.assert_array_equal(runs[0]["LULC"].values, again["LULC"].values)
    assert not np.array_equal(runs[0][LULC_PROB].values, runs[1][LULC_PROB].values)


@pytest.mark.model
def test_callers_random_state_is_left_alone(tiny_lulc_model) -> None:
    random.seed(42)
    expected = random.random()
    random.seed(42)
    generate(tiny_lulc_model, s2_window(64, 64), GenerationTask(**LULC_TASK))
    assert random.random() == expected


@pytest.mark.model
def test_cancel_mid_run(tiny_lulc_model) -> None:
    s2 = s2_window(200, 200)
    task = GenerationTask(**(LULC_TASK | {"batch_size": 2}))
    done: list[int] = []
    with pytest.raises(RunCancelledError, match="cancelled after 2 of"):
        generate(
            tiny_lulc_model, s2, task,
            progress=lambda d, t: done.append(d), cancel=lambda: len(done) >= 1,
        )
    assert done == [2]


@pytest.mark.model
def test_s1_diffusion_output_units_and_mask(tiny_s1_model) -> None:
    s2 = s2_window(70, 60, seed=4)
    s2[:, :, -5:] = np.nan
    out = generate(tiny_s1_model, s2, GenerationTask(outputs=("S1GRD",), timesteps=1, chip=64))
    assert set(out) == {"S1GRD"}
    s1 = out["S1GRD"]
    assert_same_grid(s1, s2)
    assert s1.dtype == np.float32 and s1.shape == (2, 70, 60)
    assert tuple(s1.band.values) == S1_BANDS
    assert s1.attrs["units"] == "dB" == MODALITY_INFO[Modality.S1GRD].units
    assert s1.attrs["modality"] == "S1GRD" and s1.attrs["synthetic"] is True
    assert np.isnan(s1.values[:, :, -5:]).all()
    valid = s1.values[:, :, :-5]
    assert np.isfinite(valid).all()
    # De-standardised into dB: plausible backscatter, not standardised units around 0.
    assert valid.min() > -40 and valid.max() < 10 and valid.mean() < -5


@pytest.mark.model
def test_one_chip_reports_each_diffusion_step(tiny_s1_model) -> None:
    steps: list[tuple[int, int, str]] = []
    generate(tiny_s1_model, s2_window(64, 64, seed=2),
             GenerationTask(outputs=("S1GRD",), timesteps=2, chip=64),
             steps=lambda d, t, detail: steps.append((d, t, detail)))
    # One chip, two denoising steps of the S1GRD decoder: the count moves at every step.
    assert steps == [
        (0, 2, "chip batch 1/1 · sampling tokens"),
        (1, 2, "chip batch 1/1 · S1GRD diffusion step 1/2"),
        (2, 2, "chip batch 1/1 · S1GRD diffusion step 2/2"),
        (2, 2, "chip batch 1/1 done"),
    ]
    # terratorch's trailing DDIM schedule runs 4 decoder calls for 3 timesteps: counted as such.
    steps.clear()
    generate(tiny_s1_model, s2_window(64, 64, seed=2),
             GenerationTask(outputs=("S1GRD",), timesteps=3, chip=64),
             steps=lambda d, t, detail: steps.append((d, t, detail)))
    assert [d for d, _, _ in steps] == [0, 1, 2, 3, 4, 4] and {t for _, t, _ in steps} == {4}
    assert steps[-2][2] == "chip batch 1/1 · S1GRD diffusion step 4/4"
    # The hooks are gone afterwards: a run without steps= reports nothing more.
    generate(tiny_s1_model, s2_window(64, 64, seed=2),
             GenerationTask(outputs=("S1GRD",), timesteps=1, chip=64))
    assert len(steps) == 6


@pytest.mark.model
def test_an_ensemble_counts_each_members_steps_and_ends_at_the_total(tiny_s1_model) -> None:
    steps: list[tuple[int, int, str]] = []
    generate(tiny_s1_model, s2_window(64, 64, seed=2),
             GenerationTask(outputs=("S1GRD",), timesteps=2, chip=64, ensemble=3),
             steps=lambda d, t, detail: steps.append((d, t, detail)))
    # One chip run as 3 entries of one call, two denoising steps: 6 chip steps in all.
    assert [(d, t) for d, t, _ in steps] == [(0, 6), (3, 6), (6, 6), (6, 6)]
    assert steps[-1][2] == "chip batch 1/1 done"


@pytest.mark.model
def test_steps_count_chips_across_batches(tiny_lulc_model) -> None:
    s2 = s2_window(96, 96)  # 4 chips of 64 with overlap 16, in batches of 3 and 1
    steps: list[tuple[int, int, str]] = []
    generate(tiny_lulc_model, s2, GenerationTask(**(LULC_TASK | {"batch_size": 3})),
             steps=lambda d, t, detail: steps.append((d, t, detail)))
    assert steps == [(0, 4, "chip batch 1/2"), (3, 4, "chip batch 1/2 done"),
                     (3, 4, "chip batch 2/2"), (4, 4, "chip batch 2/2 done")]


@pytest.mark.model
def test_task_must_match_model(tiny_lulc_model) -> None:
    with pytest.raises(InvalidRequestError, match="load a model"):
        generate(tiny_lulc_model, s2_window(64, 64), GenerationTask(outputs=("NDVI",)))


@pytest.mark.model
def test_bad_inputs_are_refused(tiny_lulc_model) -> None:
    task = GenerationTask(**LULC_TASK)
    s2 = s2_window(64, 64)
    with pytest.raises(InvalidRequestError, match="B12"):
        generate(tiny_lulc_model, s2.isel(band=slice(0, 11)), task)
    with pytest.raises(InvalidRequestError, match="no valid pixel"):
        generate(tiny_lulc_model, s2 * np.nan, task)
    with pytest.raises(InvalidRequestError, match="dims"):
        generate(tiny_lulc_model, s2.transpose("y", "x", "band"), task)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"outputs": ()}, "at least one"),
        ({"outputs": ("S2L2A",)}, "cannot generate"),
        ({"timesteps": 0}, "timesteps"),
        ({"timesteps": 101}, "timesteps"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"chip": 100}, "multiple of 16"),
        ({"overlap": 200}, "overlap"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_task_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        GenerationTask(**({"outputs": ("LULC",)} | kwargs))


def test_task_normalises_outputs_and_is_hashable() -> None:
    task = GenerationTask(outputs=("lulc", Modality.S1GRD, "LULC"))
    assert task.outputs == (Modality.LULC, Modality.S1GRD)
    assert hash(task) == hash(GenerationTask(outputs=(Modality.LULC, Modality.S1GRD)))


def test_batch_seeds_differ_per_batch_and_seed() -> None:
    seeds = {batch_seed(s, i) for s in range(3) for i in range(0, 40, 4)}
    assert len(seeds) == 30
    assert batch_seed(5, 8) == batch_seed(5, 8)


def test_estimate_scales_with_work() -> None:
    small = GenerationTask(outputs=("S1GRD",), timesteps=2)
    chips, seconds = estimate(448, 448, small, "cpu", size="base")
    assert chips == count_chips(448, 448, 224, 32) == 9
    _, more_steps = estimate(448, 448, GenerationTask(outputs=("S1GRD",), timesteps=10), "cpu")
    _, lulc_only = estimate(448, 448, GenerationTask(outputs=("LULC",)), "cpu")
    _, on_gpu = estimate(448, 448, small, "cuda")
    assert lulc_only < seconds < more_steps
    assert on_gpu < seconds


@pytest.mark.model
def test_chips_without_valid_pixels_are_not_run(tiny_lulc_model) -> None:
    s2 = s2_window(64, 192, seed=5)
    s2[:, :, 64:] = np.nan  # only the western third has data
    totals: list[int] = []
    out = generate(
        tiny_lulc_model, s2, GenerationTask(**LULC_TASK), progress=lambda d, t: totals.append(t)
    )
    assert totals[-1] == 2 < count_chips(64, 192, 64, 16)
    assert (out["LULC"].values[0, :, 64:] == CLASS_NODATA).all()
    assert np.isfinite(out[LULC_PROB].values[:, :, :64]).all()


@pytest.mark.model
def test_aoi_mask_runs_only_chips_touching_the_polygon(tiny_lulc_model) -> None:
    s2 = s2_window(192, 192, seed=6)
    yy, xx = np.mgrid[0:192, 0:192]
    triangle = xx + yy < 100  # a drawn triangle in the north-west corner of the bounding box
    totals: list[int] = []
    out = generate(tiny_lulc_model, s2, GenerationTask(**LULC_TASK),
                   progress=lambda d, t: totals.append(t), aoi_mask=triangle)
    all_chips = count_chips(192, 192, 64, 16)
    assert totals[-1] == count_chips(192, 192, 64, 16, mask=triangle) < all_chips
    probs = out[LULC_PROB].values
    assert np.isfinite(probs[:, triangle]).all()
    assert np.isnan(probs[:, ~triangle]).all()
    # Outside the polygon the class map holds its nodata, like every other layer's NaN.
    assert (out["LULC"].values[0, ~triangle] == CLASS_NODATA).all()
    assert (out["LULC"].values[0, triangle] < len(LULC_CLASSES)).all()
    assert out["LULC"].rio.nodata == CLASS_NODATA
    assert out["LULC"].attrs["clipped_to_aoi"] is True
    assert_same_grid(out["LULC"], s2)


@pytest.mark.model
def test_aoi_without_valid_pixels_is_refused(tiny_lulc_model) -> None:
    s2 = s2_window(64, 128, seed=7)
    s2[:, :, :64] = np.nan
    west = np.zeros((64, 128), dtype=bool)
    west[:, :64] = True
    with pytest.raises(InvalidRequestError, match="no valid pixel inside the AOI"):
        generate(tiny_lulc_model, s2, GenerationTask(**LULC_TASK), aoi_mask=west)
    with pytest.raises(InvalidRequestError, match="does not match the input grid"):
        generate(tiny_lulc_model, s2, GenerationTask(**LULC_TASK), aoi_mask=west[:10])


def test_estimate_counts_only_chips_in_the_aoi() -> None:
    task = GenerationTask(outputs=("S1GRD",), timesteps=2)
    full_chips, full_s = estimate(448, 448, task, "cpu")
    band = np.zeros((448, 448), dtype=bool)
    band[:100, :] = True  # a thin strip along the northern edge
    chips, seconds = estimate(448, 448, task, "cpu", mask=band)
    assert (chips, full_chips) == (3, 9)
    assert seconds == pytest.approx(full_s * 3 / 9)


@pytest.mark.model
def test_lulc_class_areas_sum_to_the_aoi(tiny_lulc_model) -> None:
    """The statistics of a clipped LULC cover the AOI polygon, not its bounding box."""
    from pyproj import Transformer

    from app.aoi import AOI
    from app.layers import display_layers_for, layer_statistics
    from app.scenes import aoi_mask

    s2 = s2_window(192, 192, seed=8)
    to_lonlat = Transformer.from_crs(32633, 4326, always_xy=True)
    x0, y0 = 500_000.0, 4_986_000.0  # the window's upper-left corner
    corners = [(x0 + 100, y0 - 100), (x0 + 1800, y0 - 100), (x0 + 100, y0 - 1800)]
    ring = [list(to_lonlat.transform(x, y)) for x, y in [*corners, corners[0]]]
    aoi = AOI.from_geojson({"type": "Polygon", "coordinates": [ring]})
    inside = aoi_mask(s2, aoi)
    out = generate(tiny_lulc_model, s2, GenerationTask(**LULC_TASK), aoi_mask=inside)
    [layer] = [lay for lay in display_layers_for({"LULC": out["LULC"]}) if lay.source == "LULC"]
    stats = layer_statistics(out["LULC"], layer)
    assert stats["valid_pixels"] == int(inside.sum())
    assert sum(c["area_km2"] for c in stats["classes"]) == pytest.approx(stats["total_km2"])
    assert sum(c["percent"] for c in stats["classes"]) == pytest.approx(100.0)
    # Pixel centres inside the polygon: the area matches the AOI to its pixelated edge.
    assert stats["total_km2"] == pytest.approx(aoi.area_km2, rel=0.03)
