"""Speed paths: each switchable and equal (or within tolerance) to the plain path on CPU."""

from __future__ import annotations

import numpy as np
import pytest

from inference.batching import AdaptiveBatches, batch_size_for_memory
from inference.errors import OutOfMemoryError
from inference.speed import SpeedOptions
from inference.tiling import tiled_apply
from tests.fixtures.models import s2_window

# ---------------------------------------------------------------------------------------------
# The one-sort top-p filter draws exactly terratorch's tokens.


def _logits(seed: int, rows: int = 392, vocab: int = 15360):
    import torch

    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(rows, vocab, generator=gen)
    logits[: rows // 4] = torch.round(logits[: rows // 4])  # many ties
    logits[rows // 4 : rows // 2, :5] += 20  # peaked rows: few tokens kept
    return logits


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.8), (0, 0.95), (50, 0.8), (0.01, 0.0)])
def test_one_sort_filter_equals_terratorchs(top_k, top_p) -> None:
    import torch
    from terratorch.models.backbones.terramind.model.generate import GenerationSampler

    from inference.sampler import top_k_top_p_filtering

    sampler = GenerationSampler(torch.nn.Identity())
    for seed in range(3):
        logits = _logits(seed)
        theirs = sampler.top_k_top_p_filtering(logits.clone(), top_k, top_p)
        ours = top_k_top_p_filtering(sampler, logits.clone(), top_k, top_p)
        assert torch.equal(torch.isinf(theirs), torch.isinf(ours))
        assert torch.equal(theirs, ours)


def test_installed_sampler_draws_the_same_tokens() -> None:
    import torch
    from terratorch.models.backbones.terramind.model.generate import GenerationSampler

    from inference import sampler as fast

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sampler = GenerationSampler(torch.nn.Identity())

    holder = Holder()
    logits = _logits(7).reshape(8, 49, -1)
    draws = []
    for patched in (False, True):
        (fast.install if patched else fast.uninstall)(holder)
        assert fast.installed(holder) is patched
        torch.manual_seed(11)
        draws.append(holder.sampler.sample_tokens_batched(logits.clone(), 1.0, 0, 0.8))
    assert torch.equal(draws[0][0], draws[1][0])
    assert torch.equal(draws[0][1], draws[1][1])
    fast.uninstall(holder)
    other = GenerationSampler(torch.nn.Identity())
    assert "top_k_top_p_filtering" not in vars(other)  # the class is never touched


@pytest.mark.model
def test_generation_is_identical_with_every_cpu_speed_path_off(tiny_lulc_model) -> None:
    from dataclasses import replace

    from inference import sampler
    from inference.generate import GenerationTask, generate

    task = GenerationTask(outputs=("LULC",), timesteps=1, seed=3, batch_size=4)
    s2 = s2_window(300, 300)
    assert sampler.installed(tiny_lulc_model.module)  # on by default
    fast = generate(tiny_lulc_model, s2, task)["LULC_PROB"].values
    plain_model = replace(tiny_lulc_model, speed=SpeedOptions.reference())
    sampler.uninstall(plain_model.module)
    try:
        plain = generate(plain_model, s2, task)["LULC_PROB"].values
    finally:
        sampler.install(tiny_lulc_model.module)
    np.testing.assert_array_equal(fast, plain)


# ---------------------------------------------------------------------------------------------
# Out-of-memory: halve the batch and retry (a fake OOM raised by an identity model).


class _SmallDevice:
    """Identity chip function that runs out of memory above ``fits`` chips per call."""

    def __init__(self, fits: int, message: str = "CUDA out of memory. Tried to allocate") -> None:
        self.fits, self.message, self.calls = fits, message, []

    def __call__(self, batch: np.ndarray, indices) -> np.ndarray:
        self.calls.append(len(batch))
        if len(batch) > self.fits:
            raise RuntimeError(self.message)
        return batch.copy()


def test_oom_halves_the_batch_and_keeps_every_chip() -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(size=(3, 700, 650)).astype(np.float32)
    device = _SmallDevice(fits=2)
    fn = AdaptiveBatches(device)
    out = tiled_apply(fn, array, chip=224, overlap=32, batch_size=8)
    np.testing.assert_allclose(out, array, rtol=1e-6, atol=1e-6)
    assert fn.limit == 2 and fn.halvings == 2  # 8 -> 4 -> 2, then kept
    assert device.calls[:3] == [8, 4, 2]
    assert max(device.calls[3:]) <= 2


def test_oom_with_one_chip_and_other_errors() -> None:
    batch = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(OutOfMemoryError, match="single chip"):
        AdaptiveBatches(_SmallDevice(fits=0))(batch, [0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="shape mismatch"):
        AdaptiveBatches(_SmallDevice(fits=0, message="shape mismatch"))(batch, [0, 1, 2, 3])


def test_batch_size_from_free_memory() -> None:
    gib = 2**30
    assert batch_size_for_memory(80 * gib, 64, outputs=4) == 37
    assert batch_size_for_memory(80 * gib, 16, outputs=4) == 16
    assert batch_size_for_memory(1 * gib, 16, outputs=4) == 1
    assert batch_size_for_memory(10 * gib, 16, outputs=1, chip=448) == 4


def test_speed_options_from_environment() -> None:
    default = SpeedOptions.from_env({})
    assert default == SpeedOptions()
    assert default.fast_sampler and not default.compile
    env = {"TERRALENS_FAST_SAMPLER": "0", "TERRALENS_COMPILE": "yes",
           "TERRALENS_COMPILE_MODE": "reduce-overhead", "TERRALENS_PINNED": "bogus"}
    opts = SpeedOptions.from_env(env)
    assert (opts.fast_sampler, opts.compile, opts.compile_mode, opts.pinned) == (
        False, True, "reduce-overhead", True)
    ref = SpeedOptions.reference()
    assert not (ref.fast_sampler or ref.compile or ref.autocast or ref.pinned
                or ref.adaptive_batch)


# ---------------------------------------------------------------------------------------------
# Compile what compiles; reduced precision within tolerance.


def _block_input(block):
    import torch

    dim = block.norm1.weight.shape[0] if hasattr(block.norm1, "weight") else 192
    return torch.randn(2, 196, dim, generator=torch.Generator().manual_seed(0))


@pytest.mark.model
def test_transformer_block_compiles_without_graph_breaks(tiny_lulc_model) -> None:
    import torch
    import torch._dynamo

    from inference.speed import compile_targets

    targets = compile_targets(tiny_lulc_model.module)
    blocks = tiny_lulc_model.module.sampler.model.encoder
    assert all(any(t is b for t in targets) for b in blocks)
    block = blocks[0]
    x = _block_input(block)
    explained = torch._dynamo.explain(block)(x)
    assert explained.graph_break_count == 0
    assert explained.graph_count == 1
    torch._dynamo.reset()
    with torch.no_grad():
        eager = block(x)
        compiled = torch.compile(block, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()


@pytest.mark.model
def test_bf16_autocast_stays_within_tolerance(tiny_lulc_model) -> None:
    import torch

    block = tiny_lulc_model.module.sampler.model.encoder[0]
    x = _block_input(block)
    with torch.no_grad():
        full = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = block(x).float()
    relative = (half - full).norm() / full.norm()
    assert relative < 2e-2, f"bf16 relative error {relative:.3g}"
