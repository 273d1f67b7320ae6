"""CUDA paths (skipped without a GPU): pinned copies, bf16 autocast, generation on the GPU.

Run by ``bench/gpu.sh`` on a GPU machine; on CPU-only machines every test here is skipped.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_pinned_round_trip_is_exact() -> None:
    from inference.generate import to_device, to_host

    array = np.random.default_rng(0).normal(size=(8, 12, 224, 224)).astype(np.float32)
    for pinned in (False, True):
        on_gpu = to_device(array, torch.device("cuda"), pinned=pinned)
        assert on_gpu.device.type == "cuda"
        np.testing.assert_array_equal(to_host(on_gpu * 1, pinned=pinned), array)


@pytest.mark.model
def test_bf16_block_on_cuda_within_tolerance(tiny_lulc_model) -> None:
    import copy

    block = copy.deepcopy(tiny_lulc_model.module.sampler.model.encoder[0]).cuda()
    x = torch.randn(8, 196, 192, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        full = block(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = block(x).float()
    assert ((half - full).norm() / full.norm()) < 2e-2


@pytest.mark.model
def test_generation_on_cuda_matches_cpu_shapes_and_is_finite() -> None:
    from inference.build import load_generation_model
    from inference.generate import GenerationTask, generate
    from tests.fixtures.models import s2_window

    model = load_generation_model("tiny", ["S1GRD", "LULC"], weights="untrained",
                                  device="cuda", timesteps=2)
    try:
        assert model.autocast in {torch.bfloat16, torch.float16}
        task = GenerationTask(outputs=("S1GRD", "LULC"), timesteps=2, batch_size=16)
        out = generate(model, s2_window(448, 448), task)
        assert out["S1GRD"].shape == (2, 448, 448)
        assert np.isfinite(out["S1GRD"].values).all()
        probs = out["LULC_PROB"].values
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-3)
    finally:
        model.unload()
