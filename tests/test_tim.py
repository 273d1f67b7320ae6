"""Fine-tuned TiM checkpoints: loading offline, standardisation, inputs, tiled segmentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from inference.errors import CheckpointError, InvalidRequestError, WeightsUnavailableError
from inference.modalities import LULC_CLASSES, S2L2A_BANDS, Modality
from inference.tim import PREDICTION, PREDICTION_NODATA, PREDICTION_PROB, segment
from inference.tim_checkpoints import (
    check_inputs,
    load_tim_checkpoint,
    read_tim_checkpoint,
    required_inputs,
    resolve_checkpoint,
    terratorch_modality,
)
from tests.fixtures.models import s2_window
from tests.fixtures.tim_checkpoint import S2_DM_MEANS, S2_DM_STDS, TIM_CLASS_NAMES


def _s1_like(s2: xr.DataArray, seed: int = 0) -> xr.DataArray:
    """Seeded Sentinel-1 backscatter (dB) on the grid of ``s2``."""
    rng = np.random.default_rng(seed)
    data = np.stack([rng.normal(-12, 3, s2.shape[1:]), rng.normal(-19, 3, s2.shape[1:])])
    da = xr.DataArray(
        data.astype(np.float32), dims=("band", "y", "x"),
        coords={"band": ["VV", "VH"], "y": s2.y.values, "x": s2.x.values},
        attrs={"scene_id": f"s1-{seed}"},
    )
    return da.rio.write_crs(s2.rio.crs).rio.write_transform(s2.rio.transform())


def test_modality_names_follow_terratorch() -> None:
    assert terratorch_modality("S2L2A") is Modality.S2L2A
    assert terratorch_modality("untok_sen1rtc@224") is Modality.S1RTC
    assert terratorch_modality("S1") is Modality.S1GRD  # terratorch's default for plain S1
    assert terratorch_modality("DEM") is Modality.DEM
    assert terratorch_modality("LULC") is None and terratorch_modality("RGB") is None


def test_resolving_checkpoints_fails_with_advice(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither a file"):
        resolve_checkpoint(tmp_path / "missing" / "x.ckpt")
    with pytest.raises(CheckpointError, match="No checkpoint file"):
        resolve_checkpoint(tmp_path)
    # The hub is forced offline for the test session: fast failure that says what to do.
    with pytest.raises(WeightsUnavailableError, match="hf download ibm-esa-geospatial/Nope"):
        resolve_checkpoint("ibm-esa-geospatial/Nope")
    bare = tmp_path / "bare.pt"
    import torch

    torch.save({"encoder.weight": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="terratorch fit"):
        read_tim_checkpoint(bare)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read checkpoint"):
        read_tim_checkpoint(junk)


@pytest.mark.model
def test_checkpoint_description_and_hub_style_lookup(tim_checkpoint: Path, tmp_path: Path) -> None:
    info = read_tim_checkpoint(tim_checkpoint)
    assert info.backbone == "terramind_v1_tiny_tim"
    assert info.modalities == (Modality.S2L2A,)
    assert info.bands[Modality.S2L2A] == S2L2A_BANDS
    assert info.tim_modalities == ("LULC",)
    assert info.class_names == TIM_CLASS_NAMES and info.num_classes == 2
    assert info.checkpoint_means[Modality.S2L2A] == pytest.approx(S2_DM_MEANS)
    assert required_inputs(info) == {Modality.S2L2A}
    # A repo id is looked up in a local weights folder (no hub) before the cache.
    folder = tmp_path / "TerraMind-tiny-Test"
    folder.mkdir()
    (folder / "model.ckpt").symlink_to(tim_checkpoint)
    repo = "ibm-esa-geospatial/TerraMind-tiny-Test"
    path, label = resolve_checkpoint(repo, weights_dir=tmp_path)
    assert path == tim_checkpoint.resolve() and label == f"hub:{repo}"


@pytest.mark.model
def test_checkpoint_loads_offline_with_its_data_module_statistics(tim_model: Any) -> None:
    assert tim_model.modalities == (Modality.S2L2A,)
    assert tim_model.tim_modalities == ("LULC",)
    assert tim_model.class_names == TIM_CLASS_NAMES and tim_model.num_classes == 2
    assert tim_model.standardisation == "checkpoint data module"
    np.testing.assert_allclose(tim_model.means[Modality.S2L2A], S2_DM_MEANS)
    np.testing.assert_allclose(tim_model.stds[Modality.S2L2A], S2_DM_STDS)
    assert tim_model.weights_label.startswith("local:") and not tim_model.module.training


@pytest.mark.model
def test_segmentation_lands_on_the_aoi_grid(tim_model: Any) -> None:
    s2 = s2_window(200, 250, seed=3)  # not a chip multiple: 2 chips, padding, blending
    s2.values[:, -5:, :] = np.nan  # a no-data strip at the bottom
    calls: list[tuple[int, int]] = []
    out = segment(tim_model, {Modality.S2L2A: s2}, seed=4,
                  progress=lambda done, total: calls.append((done, total)))
    assert set(out) == {PREDICTION, PREDICTION_PROB, "TIM_LULC"}
    assert calls[-1] == (2, 2)
    for da in out.values():
        assert da.shape[1:] == (200, 250)
        assert da.rio.crs == s2.rio.crs and da.rio.transform() == s2.rio.transform()
        np.testing.assert_array_equal(da.x.values, s2.x.values)
        assert da.attrs["scene_id"] == "synthetic-3" and da.attrs["seed"] == 4
    pred, probs = out[PREDICTION].values[0], out[PREDICTION_PROB].values
    assert pred.dtype == np.uint8 and out[PREDICTION].rio.nodata == PREDICTION_NODATA
    assert (pred[-5:] == PREDICTION_NODATA).all() and np.isnan(probs[:, -5:]).all()
    valid = pred[:-5]
    assert set(np.unique(valid)) <= {0, 1}
    np.testing.assert_array_equal(valid, probs[:, :-5].argmax(axis=0))
    np.testing.assert_allclose(probs[:, :-5].sum(axis=0), 1.0, atol=1e-5)
    assert json.loads(out[PREDICTION].attrs["class_names"]) == list(TIM_CLASS_NAMES)
    attrs = out[PREDICTION].attrs
    assert attrs["kind"] == "prediction" and attrs["model"] == "terramind_v1_tiny_tim"
    assert attrs["standardisation"] == "checkpoint data module"
    tim = out["TIM_LULC"]
    assert tim.attrs["kind"] == "generated" and tim.attrs["synthetic"] is True
    assert tim.values[0, :-5].max() < len(LULC_CLASSES)
    assert (tim.values[0, -5:] == PREDICTION_NODATA).all()  # no data, as in the prediction
    assert len(np.unique(tim.values[0, :-5])) > 1


@pytest.mark.model
def test_same_seed_same_map_and_cancel(tim_model: Any) -> None:
    from inference.errors import RunCancelledError

    s2 = s2_window(64, 80, seed=8)
    first = segment(tim_model, {Modality.S2L2A: s2}, seed=1)
    again = segment(tim_model, {Modality.S2L2A: s2}, seed=1)
    np.testing.assert_array_equal(first[PREDICTION_PROB].values, again[PREDICTION_PROB].values)
    np.testing.assert_array_equal(first["TIM_LULC"].values, again["TIM_LULC"].values)
    other = segment(tim_model, {Modality.S2L2A: s2}, seed=2)
    assert not np.array_equal(first["TIM_LULC"].values, other["TIM_LULC"].values)
    with pytest.raises(RunCancelledError):
        segment(tim_model, {Modality.S2L2A: s2}, cancel=lambda: True)


@pytest.mark.model
def test_checkpoint_needing_s1_says_what_to_load(tim_s1_checkpoint: Path) -> None:
    info = read_tim_checkpoint(tim_s1_checkpoint)
    assert info.modalities == (Modality.S2L2A, Modality.S1GRD)
    assert info.checkpoint_means == {}  # no data module: TerraMind's statistics apply
    with pytest.raises(CheckpointError, match="needs S1GRD") as err:
        check_inputs(info, {Modality.S2L2A})
    assert "no Sentinel-1 scene was loaded" in str(err.value)
    assert "within 6 days" in str(err.value)
    with pytest.raises(CheckpointError, match="S1RTC scene was loaded"):
        check_inputs(info, {Modality.S2L2A, Modality.S1RTC})
    check_inputs(info, [Modality.S2L2A, Modality.S1GRD])  # complete: no error


@pytest.mark.model
def test_multimodal_checkpoint_segments_s2_and_s1(tim_s1_checkpoint: Path) -> None:
    model = load_tim_checkpoint(tim_s1_checkpoint, device="cpu")
    try:
        assert model.standardisation == "TerraMind v1 pre-training statistics"
        assert model.means[Modality.S1GRD] == pytest.approx([-12.599, -20.293])
        s2 = s2_window(48, 64, seed=9)
        with pytest.raises(CheckpointError, match="needs S1GRD"):
            segment(model, {Modality.S2L2A: s2})
        shifted = _s1_like(s2_window(48, 64, seed=9, origin=(500_010.0, 4_986_000.0)))
        with pytest.raises(InvalidRequestError, match="another grid"):
            segment(model, {Modality.S2L2A: s2, Modality.S1GRD: shifted})
        out = segment(model, {Modality.S2L2A: s2, Modality.S1GRD: _s1_like(s2)})
        pred = out[PREDICTION]
        assert pred.shape == (1, 48, 64) and pred.rio.transform() == s2.rio.transform()
        assert set(np.unique(pred.values)) <= {0, 1, 2}
        assert json.loads(pred.attrs["input_scenes"]) == {"S2L2A": "synthetic-9", "S1GRD": "s1-0"}
    finally:
        model.unload()
