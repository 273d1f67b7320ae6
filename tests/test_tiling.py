"""Tiling is a pure function: tested with identity and synthetic models, no TerraMind."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from inference.errors import InvalidRequestError, RunCancelledError
from inference.executors import InProcessExecutor, executor_from_env
from inference.tiling import (
    blend_window,
    chips_for_mask,
    count_chips,
    plan_chips,
    restrict_to_aoi,
    tiled_apply,
)

SHAPES = [(1, 1), (7, 300), (224, 224), (225, 224), (300, 250), (130, 517), (481, 33)]


def identity(batch: np.ndarray, indices: list[int]) -> np.ndarray:
    return batch


def smooth_field(h: int, w: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    out = [
        np.sin(rng.uniform(0.01, 0.03) * xx + rng.uniform(0.01, 0.03) * yy + rng.uniform(0, 6))
        for _ in range(channels)
    ]
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_plan_covers_every_pixel_with_whole_chips(h: int, w: int) -> None:
    chip, overlap = 64, 16
    plan = plan_chips(h, w, chip, overlap)
    cover = np.zeros((max(h, chip), max(w, chip)), dtype=int)
    for k, win in enumerate(plan):
        assert win.index == k
        assert win.size == chip
        cover[win.slices] += 1
    assert (cover[:h, :w] >= 1).all()
    # Chips never start beyond the array (only sides shorter than a chip are padded).
    assert all(win.row + chip <= max(h, chip) and win.col + chip <= max(w, chip) for win in plan)
    assert count_chips(h, w, chip, overlap) == len(plan)


def test_chip_count_follows_stride() -> None:
    # 448 px with 224 chips and stride 192 needs 3 chips per side (0, 192, 224).
    assert count_chips(448, 448, 224, 32) == 9
    assert count_chips(224, 224, 224, 32) == 1
    assert count_chips(300, 250, 224, 32) == 4
    assert count_chips(10_000, 10_000, 224, 32) == math.ceil((10_000 - 224) / 192 + 1) ** 2


@pytest.mark.parametrize(("h", "w"), SHAPES)
def test_identity_reproduces_input_exactly(h: int, w: int) -> None:
    data = np.random.default_rng(h * 1000 + w).normal(size=(3, h, w)).astype(np.float32)
    out = tiled_apply(identity, data, chip=64, overlap=16, batch_size=3)
    assert out.shape == data.shape
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def test_output_channels_may_differ_from_input() -> None:
    data = smooth_field(100, 90, channels=3)

    def to_mean_and_max(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        return np.stack([batch.mean(axis=1), batch.max(axis=1)], axis=1)

    out = tiled_apply(to_mean_and_max, data, chip=32, overlap=8, batch_size=5)
    assert out.shape == (2, 100, 90)
    np.testing.assert_allclose(out[0], data.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], data.max(axis=0), rtol=1e-5, atol=1e-6)


def _max_step(out: np.ndarray) -> float:
    return float(max(np.abs(np.diff(out, axis=-1)).max(), np.abs(np.diff(out, axis=-2)).max()))


def test_blending_hides_per_chip_offsets() -> None:
    """A model adding a different constant per chip leaves no visible seam when blended."""
    h, w, chip = 300, 250, 64
    field = smooth_field(h, w, channels=1)
    offsets = np.random.default_rng(1).uniform(-1, 1, size=count_chips(h, w, chip, 16))

    def shifted(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        return batch + offsets[np.asarray(indices)][:, None, None, None]

    field_step = _max_step(field)
    jump = float(np.abs(np.diff(offsets)).max())
    hard = tiled_apply(shifted, field, chip=chip, overlap=0, batch_size=4)
    soft = tiled_apply(shifted, field, chip=chip, overlap=16, batch_size=4)
    # Without overlap the seams jump by the offset difference (the test can fail)...
    assert _max_step(hard) > 0.3 * jump
    # ...with a 16 px overlap the largest step is a small fraction of it.
    assert _max_step(soft) < field_step + 0.25 * jump


def test_result_does_not_depend_on_batch_size() -> None:
    data = smooth_field(150, 170, channels=2)

    def by_index(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        return batch * (1 + 0.1 * np.asarray(indices))[:, None, None, None]

    outs = [tiled_apply(by_index, data, chip=48, overlap=8, batch_size=b) for b in (1, 3, 64)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_class_scores_are_blended_before_argmax() -> None:
    """Blending probabilities keeps classes valid where blending indices would invent one."""
    h, w, chip = 64, 112, 64  # two chips side by side, overlapping 16 px

    def one_hot(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        probs = np.zeros((len(indices), 3, chip, chip), dtype=np.float32)
        for k, idx in enumerate(indices):
            probs[k, 0 if idx == 0 else 2] = 1.0  # left chip says class 0, right chip class 2
        return probs

    probs = tiled_apply(one_hot, np.zeros((1, h, w), np.float32), chip=chip, overlap=16)
    classes = probs.argmax(axis=0)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-6)
    assert set(np.unique(classes)) == {0, 2}  # never the in-between class 1
    assert (classes[:, :40] == 0).all() and (classes[:, -40:] == 2).all()


def test_progress_and_batches_are_bounded() -> None:
    data = smooth_field(200, 200, channels=1)
    calls: list[tuple[int, int]] = []
    sizes: list[int] = []

    def record(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        sizes.append(len(batch))
        return batch

    tiled_apply(
        record, data, chip=64, overlap=16, batch_size=3, progress=lambda d, t: calls.append((d, t))
    )
    total = count_chips(200, 200, 64, 16)
    assert max(sizes) <= 3 and sum(sizes) == total
    assert len(calls) == math.ceil(total / 3)
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_cancel_stops_before_next_batch() -> None:
    data = smooth_field(200, 200, channels=1)
    seen: list[list[int]] = []

    def record(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        seen.append(list(indices))
        return batch

    with pytest.raises(RunCancelledError, match="cancelled after 4 of"):
        tiled_apply(record, data, chip=64, overlap=16, batch_size=2, cancel=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_blend_window_is_positive_and_flat_inside() -> None:
    win = blend_window(64, 16)
    assert win.shape == (64, 64)
    assert (win > 0).all()
    assert (win[16:48, 16:48] == 1).all()
    np.testing.assert_allclose(win, win.T)
    assert (blend_window(32, 0) == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chip": 64, "overlap": 64}, "overlap"),
        ({"chip": 64, "overlap": -1}, "overlap"),
        ({"chip": 0}, "chip"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        tiled_apply(identity, np.zeros((1, 10, 10), np.float32), **kwargs)


def test_bad_array_and_bad_model_output_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match=r"\[C, H, W\]"):
        tiled_apply(identity, np.zeros((10, 10), np.float32))
    with pytest.raises(InvalidRequestError, match="returned shape"):
        tiled_apply(
            lambda b, i: b[:, :, :8, :8], np.zeros((1, 40, 40), np.float32), chip=32, overlap=8
        )


def test_executor_default_is_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert isinstance(executor_from_env(), InProcessExecutor)
    data = smooth_field(70, 70, channels=1)
    out = tiled_apply(identity, data, chip=32, overlap=8, executor=InProcessExecutor())
    np.testing.assert_array_equal(out, data)


def test_ray_address_without_ray_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A laptop's plain install has no ray: "import ray" fails there (None in sys.modules
    # makes it fail here too, where the test install has it).
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:10001")
    with pytest.raises(InvalidRequestError, match="RAY_ADDRESS"):
        executor_from_env(num_gpus=0)


def test_masked_out_chips_are_skipped() -> None:
    h, w, chip = 100, 200, 64
    data = smooth_field(h, w, channels=1)
    mask = np.zeros((h, w), dtype=bool)
    mask[:, :50] = True  # only the western quarter is wanted
    seen: list[int] = []

    def record(batch: np.ndarray, indices: list[int]) -> np.ndarray:
        seen.extend(indices)
        return batch

    progress: list[tuple[int, int]] = []
    out = tiled_apply(
        record, data, chip=chip, overlap=16, mask=mask, progress=lambda *a: progress.append(a)
    )
    plan = plan_chips(h, w, chip, 16)
    expected = [win.index for win in plan if win.col < 50]
    assert seen == expected and len(expected) < len(plan)
    assert progress[-1] == (len(expected), len(expected))
    np.testing.assert_array_equal(out[:, mask], data[:, mask])  # wanted pixels exact
    assert np.isnan(out[:, :, 150:]).all()  # nothing computed far from the wanted area
    with pytest.raises(InvalidRequestError, match="no pixel"):
        tiled_apply(identity, data, chip=chip, overlap=16, mask=np.zeros((h, w), bool))
    with pytest.raises(InvalidRequestError, match="shape"):
        tiled_apply(identity, data, chip=chip, overlap=16, mask=mask[:10])


def test_chip_count_follows_the_aoi_shape() -> None:
    h = w = 448
    yy, xx = np.mgrid[0:h, 0:w]
    corner = xx + yy < 150  # a small triangle drawn in the north-west of its bounding box
    assert [win.index for win in chips_for_mask(corner, 224, 32)] == [0]
    east = xx >= 420  # a strip along the eastern edge: only the last column of chips
    assert [win.index for win in chips_for_mask(east, 224, 32)] == [2, 5, 8]
    assert count_chips(h, w, 224, 32, mask=east) == 3 < count_chips(h, w, 224, 32) == 9
    with pytest.raises(InvalidRequestError, match="shape"):
        count_chips(h, w, 224, 32, mask=east[:10])


def test_restrict_to_aoi() -> None:
    valid = np.ones((4, 6), dtype=bool)
    valid[:, :2] = False  # no data in the west
    aoi = np.zeros((4, 6), dtype=bool)
    aoi[:, 1:3] = True
    np.testing.assert_array_equal(restrict_to_aoi(valid, None), valid)
    np.testing.assert_array_equal(restrict_to_aoi(valid, aoi), valid & aoi)
    assert restrict_to_aoi(valid, aoi).sum() == 4
    with pytest.raises(InvalidRequestError, match="no valid pixel inside the AOI"):
        restrict_to_aoi(valid, ~valid)
    with pytest.raises(InvalidRequestError, match="does not match"):
        restrict_to_aoi(valid, aoi[:2])
