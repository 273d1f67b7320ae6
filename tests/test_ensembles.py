"""Seed ensembles: the statistics (against values computed here), one batched job, [U] layers.

The statistics of :mod:`inference.ensembles` are checked on known arrays with formulas written
out in the test. Generation runs a deterministic stand-in (a real torch module whose outputs
are a fixed function of the input, so every member is the same: zero spread) and the real
untrained tiny TerraMind, whose LULC token sampler is stochastic (distinct members: spread).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
import rasterio

from inference.ensembles import (
    ensemble_agreement,
    ensemble_mean,
    ensemble_mode,
    ensemble_std,
    vote_counts,
    vote_entropy,
)
from inference.errors import InvalidRequestError
from inference.generate import LULC_PROB, GenerationTask, estimate, generate
from inference.modalities import CLASS_NODATA, LULC_CLASSES, MODALITY_INFO, Modality
from inference.tiling import count_chips
from tests.fixtures.ensembles import deterministic_model
from tests.fixtures.models import s2_window

# -- The statistics ---------------------------------------------------------------------------

#: Votes of 5 members on 4 pixels (a 2×2 grid): unanimous, 3-2, a tie 2-2-1, all different.
VOTES = np.array([
    [[1, 2], [4, 1]],
    [[1, 2], [4, 2]],
    [[1, 2], [5, 3]],
    [[1, 5], [5, 4]],
    [[1, 5], [6, 5]],
])


def _by_hand(pixel_votes: list[int]) -> tuple[int, float, float]:
    """(mode with ties to the lowest class, agreement, entropy in bits) of one pixel."""
    counts = Counter(pixel_votes)
    top = max(counts.values())
    mode = min(k for k, c in counts.items() if c == top)
    n = len(pixel_votes)
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    return mode, top / n, entropy


def test_mode_agreement_entropy_match_values_computed_by_hand() -> None:
    counts = vote_counts(VOTES, len(LULC_CLASSES))
    assert counts.shape == (10, 2, 2) and (counts.sum(axis=0) == 5).all()
    mode, agreement, entropy = (ensemble_mode(counts), ensemble_agreement(counts),
                                vote_entropy(counts))
    for r in range(2):
        for c in range(2):
            want = _by_hand([int(v) for v in VOTES[:, r, c]])
            assert (int(mode[r, c]), float(agreement[r, c])) == pytest.approx(want[:2])
            assert float(entropy[r, c]) == pytest.approx(want[2], abs=1e-6)
    # The four cases, spelled out: unanimous, 3 of 5, a 2-2-1 tie to the lower class, 5 apart.
    np.testing.assert_array_equal(mode, [[1, 2], [4, 1]])
    np.testing.assert_allclose(agreement, [[1.0, 0.6], [0.4, 0.2]], rtol=1e-6)
    assert entropy[0, 0] == 0.0
    assert entropy[1, 1] == pytest.approx(math.log2(5), abs=1e-6)


def test_mean_and_std_match_numpy_and_are_zero_for_identical_members() -> None:
    rng = np.random.default_rng(7)
    members = rng.normal(-12.0, 3.0, size=(6, 2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(ensemble_mean(members), members.mean(axis=0), rtol=1e-5)
    by_hand = np.sqrt(((members - members.mean(axis=0)) ** 2).sum(axis=0) / (6 - 1))
    np.testing.assert_allclose(ensemble_std(members), by_hand, rtol=1e-5)
    same = np.repeat(members[:1], 4, axis=0)
    assert (ensemble_std(same) == 0).all()
    assert (ensemble_std(members[:1]) == 0).all()
    nan = members.copy()
    nan[2, 0, 0, 0] = np.nan
    assert np.isnan(ensemble_std(nan)[0, 0, 0]) and np.isnan(ensemble_mean(nan)[0, 0, 0])


def test_votes_outside_the_classes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.9"):
        vote_counts(np.array([[10]]), 10)


# -- Generation with an ensemble ---------------------------------------------------------------

S1_LULC = (Modality.S1GRD, Modality.LULC)
TASK = {"outputs": S1_LULC, "timesteps": 1, "chip": 64, "overlap": 16, "batch_size": 8}


def test_ensemble_costs_one_batched_job_of_n_times_the_chips() -> None:
    s2 = s2_window(150, 120, seed=3)
    chips = count_chips(150, 120, 64, 16)
    model, module = deterministic_model(S1_LULC)
    seen: list[tuple[int, int]] = []
    out = generate(model, s2, GenerationTask(**TASK, ensemble=4),
                   progress=lambda d, t: seen.append((d, t)))
    # Each call holds batch_size // N = 2 chips, each repeated 4 times: 8 entries per call.
    assert sum(module.calls) == 4 * chips
    assert module.calls == [8] * (chips // 2) + ([4] if chips % 2 else [])
    assert seen[-1] == (chips, chips)  # one pass over the chips
    assert estimate(150, 120, GenerationTask(**TASK, ensemble=4))[0] == 4 * chips
    assert estimate(150, 120, GenerationTask(**TASK))[0] == chips
    assert set(out) == {"S1GRD", "S1GRD_STD", "LULC", LULC_PROB, "LULC_AGREEMENT",
                        "LULC_ENTROPY"}


def test_deterministic_model_has_zero_spread_and_the_plain_runs_values() -> None:
    s2 = s2_window(100, 90, seed=5)
    s2[:, :6, :] = np.nan
    plain = generate(deterministic_model(S1_LULC)[0], s2, GenerationTask(**TASK))
    ens = generate(deterministic_model(S1_LULC)[0], s2, GenerationTask(**TASK, ensemble=3))
    np.testing.assert_allclose(ens["S1GRD"].values, plain["S1GRD"].values, rtol=1e-6)
    np.testing.assert_array_equal(ens["LULC"].values, plain["LULC"].values)
    std, agree, entropy = ens["S1GRD_STD"], ens["LULC_AGREEMENT"], ens["LULC_ENTROPY"]
    inside = np.isfinite(plain["S1GRD"].values[0])
    assert (std.values[:, inside] == 0).all() and np.isnan(std.values[:, ~inside]).all()
    assert (agree.values[0, inside] == 1).all() and (entropy.values[0, inside] == 0).all()
    assert (ens["LULC"].values[0, :6] == CLASS_NODATA).all()
    assert std.attrs["kind"] == "uncertainty" and std.attrs["statistic"] == "std"
    assert std.attrs["units"] == "dB" == MODALITY_INFO[Modality.S1GRD].units
    assert tuple(std.band.values) == ("VV", "VH")
    assert agree.attrs["units"] == "share of members" and entropy.attrs["units"] == "bit"
    for layer in ens.values():
        assert layer.attrs["ensemble_size"] == 3 and layer.attrs["seed"] == 0
        assert layer.rio.transform() == s2.rio.transform()


def test_ensemble_of_one_is_the_plain_run() -> None:
    with pytest.raises(InvalidRequestError, match="ensemble"):
        GenerationTask(**TASK, ensemble=17)
    assert GenerationTask(**TASK, ensemble=1) == GenerationTask(**TASK)


@pytest.mark.model
def test_real_tiny_model_members_differ_and_reproduce(tiny_lulc_model) -> None:
    s2 = s2_window(96, 80, seed=2)
    task = GenerationTask(outputs=("LULC",), timesteps=1, chip=64, overlap=16, batch_size=8,
                          seed=1, ensemble=4)
    out = generate(tiny_lulc_model, s2, task)
    again = generate(tiny_lulc_model, s2, task)
    for name in ("LULC", LULC_PROB, "LULC_AGREEMENT", "LULC_ENTROPY"):
        np.testing.assert_array_equal(out[name].values, again[name].values)
    agree, entropy = out["LULC_AGREEMENT"].values[0], out["LULC_ENTROPY"].values[0]
    assert agree.min() >= 0.25 and agree.max() <= 1.0
    assert (agree < 1).any() and (entropy > 0).any()  # distinct members disagree somewhere
    assert entropy.max() <= 2.0 + 1e-6  # log2(4)
    probs = out[LULC_PROB].values
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)
    # Agreement 1 exactly where the entropy is 0.
    np.testing.assert_array_equal(agree == 1.0, entropy == 0.0)


@pytest.mark.model
def test_real_untrained_diffusion_decoder_is_deterministic(tiny_s1_model) -> None:
    """Untrained diffusion decoders return the de-standardised mean whatever the noise: the
    real model is deterministic here, so its S1 spread is exactly zero."""
    out = generate(tiny_s1_model, s2_window(64, 64, seed=4),
                   GenerationTask(outputs=("S1GRD",), timesteps=1, chip=64, ensemble=2))
    assert (out["S1GRD_STD"].values == 0).all()


def test_uncertainty_cogs_read_back_with_rasterio(tmp_path) -> None:
    from app.rasters import write_cog

    s2 = s2_window(80, 70, seed=6)
    out = generate(deterministic_model(S1_LULC)[0], s2, GenerationTask(**TASK, ensemble=2))
    for name in ("S1GRD_STD", "LULC_AGREEMENT", "LULC_ENTROPY"):
        path = write_cog(out[name], tmp_path / f"{name}.tif")
        with rasterio.open(path) as ds:
            assert ds.crs == s2.rio.crs and ds.transform == s2.rio.transform()
            assert ds.count == out[name].sizes["band"] and ds.dtypes[0] == "float32"
            tags = ds.tags()
            assert tags["kind"] == "uncertainty" and tags["ensemble_size"] == "2"
            np.testing.assert_array_equal(ds.read(), out[name].values)


# -- The request, the layers and their legends --------------------------------------------------

def test_seed_count_is_part_of_the_run_key_and_validated() -> None:
    from app.aoi import AOI
    from app.tasks import JobSpec, Task

    base = {"task": Task.GENERATE, "scene_items": ({"id": "S2_X"},),
            "aoi": AOI.from_bbox(15.0, 45.0, 15.01, 45.01), "outputs": ("LULC",)}
    plain, one, four = (JobSpec(**base), JobSpec(**base, seeds=1), JobSpec(**base, seeds=4))
    # One seed is the plain run (same key as runs stored before ensembles existed).
    assert plain.key("untrained") == one.key("untrained") != four.key("untrained")
    assert "seeds" not in plain.params() and four.params()["seeds"] == 4
    assert four.key("untrained") == JobSpec(**base, seeds=4.0).key("untrained")
    assert JobSpec.from_dict(four.to_dict()) == four and "4 seeds" in four.describe()
    for bad in (0, 17, 2.5, "3"):
        with pytest.raises(InvalidRequestError, match=r"seeds must be an integer in 1\.\.16"):
            JobSpec(**base, seeds=bad)
    # Tasks without the knob keep the default and no key part.
    water = JobSpec(task=Task.WATER, scene_items=base["scene_items"], aoi=base["aoi"], seeds=5)
    assert water.seeds == 1 and "seeds" not in water.params()


def _ensemble_layers() -> dict[str, Any]:
    s2 = s2_window(80, 70, seed=6)
    outputs = (Modality.S1GRD, Modality.LULC, Modality.NDVI, Modality.DEM)
    return generate(deterministic_model(outputs)[0], s2,
                    GenerationTask(outputs=outputs, chip=64, overlap=16, ensemble=3))


def test_u_layers_have_names_units_and_legends() -> None:
    from app.layer_names import analyst_name, layer_tooltip
    from app.layers import display_layers_for
    from app.legends import legend

    layers = {layer.name: layer for layer in display_layers_for(_ensemble_layers())}
    u_names = [n for n in layers if n.startswith("[U] ")]
    assert u_names == ["[U] S1GRD-VV std", "[U] S1GRD-VH std", "[U] LULC agreement",
                       "[U] LULC entropy", "[U] NDVI std", "[U] DEM std"]
    assert {"[G] S1GRD-VV", "[G] LULC", "[G] NDVI", "[G] DEM"} <= set(layers)
    units = {n: layers[n].units for n in u_names}
    assert units == {"[U] S1GRD-VV std": "dB", "[U] S1GRD-VH std": "dB",
                     "[U] LULC agreement": "share of members", "[U] LULC entropy": "bit",
                     "[U] NDVI std": "", "[U] DEM std": "m"}
    assert legend(layers["[U] DEM std"]).title == "DEM std (m)"
    assert legend(layers["[U] S1GRD-VV std"]).title == "S1GRD-VV std (dB)"
    assert legend(layers["[U] LULC agreement"]).title == "LULC agreement (share of members)"
    agreement = layers["[U] LULC agreement"].style
    assert (agreement.vmin, agreement.vmax) == (0.0, 1.0)
    assert analyst_name(layers["[U] LULC entropy"]) == "Land cover vote entropy (ensemble spread)"
    assert analyst_name(layers["[U] S1GRD-VV std"]) == (
        "Radar backscatter VV standard deviation (ensemble spread)")
    assert "seed ensemble" in layer_tooltip(layers["[U] LULC agreement"])


def test_u_layers_are_stored_as_cogs_with_the_ensemble_in_the_item(tmp_path) -> None:
    from app.run_request import RunRequest
    from app.runs import RunStore

    layers = _ensemble_layers()
    from app.aoi import AOI

    request = RunRequest(scene_id="S2_X", aoi=AOI.from_bbox(15.0, 45.0, 15.01, 45.01),
                         task="generation",
                         params={"seed": 0, "seeds": 3}, model="terramind_v1_tiny_generate",
                         weights="untrained")
    run = RunStore(tmp_path).save(request, layers, provenance={"seeds": 3, "ensemble_size": 3})
    assert {"S1GRD_STD", "LULC_AGREEMENT", "LULC_ENTROPY", "NDVI_STD", "DEM_STD"} <= set(
        run.layer_names)
    assert run.item.assets["DEM_STD"].extra_fields["terralens:kind"] == "uncertainty"
    assert run.item.assets["DEM_STD"].extra_fields["bands"][0]["unit"] == "m"
    with rasterio.open(run.layer_path("LULC_ENTROPY")) as ds:
        assert ds.tags()["statistic"] == "entropy" and ds.tags()["units"] == "bit"
        assert ds.crs == layers["LULC"].rio.crs
    back = run.load_layer("S1GRD_STD")
    assert back.attrs["kind"] == "uncertainty" and back.attrs["uncertainty_of"] == "S1GRD"
    np.testing.assert_array_equal(back.values, layers["S1GRD_STD"].values)
