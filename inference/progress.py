"""Progress of a job by phase: the vocabulary the pipeline, the job table, the pages and the CLI
share, and the diffusion-step counter behind per-step progress.

A job goes through :class:`Phase` values in order — loading weights (with bytes while
downloading), reading the scene window, running (each chip batch and, for diffusion outputs,
each decoder step), writing the run, stored — and reports each as a :class:`Progress` event:
``done`` of ``total`` in a :class:`Unit`, plus one line for people.

:class:`DiffusionSteps` counts the denoising steps of TerraMind's diffusion decoders through
forward hooks on each diffusion tokenizer's UNet (``tokenizer[key].decoder``: terratorch's
``PipelineCond`` calls it once per step for the whole chip batch), so even a one-chip run moves
step by step. Work is counted in *chip steps* (chips × steps), so a bar over several batches
moves evenly. Hooks fire only for chips run in this process (not on Ray workers).

Nothing here imports torch or Streamlit at module level.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """What a job is doing, in the order a run goes through them."""

    WAITING = "waiting for the device"
    LOADING = "loading weights"
    READING = "reading the scene window"
    RUNNING = "running the model"
    SAMPLING = "sampling"
    WRITING = "writing the run"
    STORED = "stored"


class Unit(StrEnum):
    """What ``done`` and ``total`` of a :class:`Progress` count."""

    NONE = ""
    BYTES = "bytes"
    CHIPS = "chips"
    CHIP_STEPS = "chip steps"
    SAMPLES = "samples"


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes:
        phase: The phase it belongs to.
        done: Work done in the phase, in ``unit``.
        total: Work of the whole phase (0 when unknown), in ``unit``.
        message: One line for people, e.g. ``"generating: chip batch 1/2 · S1GRD step 3/10"``.
        unit: What ``done``/``total`` count.
    """

    phase: Phase
    done: int
    total: int
    message: str
    unit: Unit = Unit.NONE

    @property
    def fraction(self) -> float:
        """``done / total`` in 0..1 (0 when the total is unknown)."""
        return min(1.0, max(0.0, self.done / self.total)) if self.total > 0 else 0.0


#: ``steps(done, total, detail)`` in chip steps (or chips when no output diffuses).
StepsFn = Callable[[int, int, str], None]


def format_bytes(n: float) -> str:
    """``"512 kB"``, ``"1.4 GB"`` (decimal units, as the hub shows sizes)."""
    n = float(n)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class DiffusionSteps:
    """Turns chip batches and diffusion decoder calls into ``steps`` reports.

    Args:
        chips_total: Chips the run will compute.
        batch_size: Chips per batch (for the batch count shown).
        diffusing: ``{output name: denoising steps}`` of the outputs that go through a
            diffusion decoder (see :func:`denoising_steps`).
        steps: Receives ``(done, total, detail)`` in chip steps (chips if none diffuses).
        members: Batch entries per chip (a seed ensemble of N runs each chip as N entries of
            the same call; decoder calls count entries).
    """

    def __init__(self, chips_total: int, *, batch_size: int, diffusing: dict[str, int],
                 steps: StepsFn, members: int = 1) -> None:
        self.members = max(1, int(members)) if diffusing else 1
        self.chips_total = max(0, int(chips_total))
        self.batches = max(1, math.ceil(self.chips_total / max(1, batch_size)))
        self.diffusing = {name: max(1, int(n)) for name, n in diffusing.items()}
        self.per_chip = sum(self.diffusing.values()) if diffusing else 1
        self.unit = Unit.CHIP_STEPS if diffusing else Unit.CHIPS
        self.total = self.chips_total * self.members * self.per_chip
        self.steps = steps
        self.done = 0
        self.chips_done = 0
        self.batch = 0
        self._in_batch = False
        self._step: dict[str, int] = {}

    # -- events ---------------------------------------------------------------------------------
    def batch_started(self) -> None:
        """A model call began (a chip batch, or a part of one)."""
        if not self._in_batch:  # not a second part of the same batch (adaptive batches)
            self.batch = min(self.batches, self.batch + 1)
            self._in_batch = True
        self.steps(self.done, self.total, f"chip batch {max(1, self.batch)}/{self.batches}"
                   + (" · sampling tokens" if self.unit is Unit.CHIP_STEPS else ""))

    def decoder_step(self, name: str, chips: int) -> None:
        """One denoising step of ``name``'s decoder ran over ``chips`` chips."""
        step = self._step.get(name, 0) + 1
        self._step[name] = step
        of = self.diffusing.get(name, step)
        self.done = min(self.total, self.done + chips)
        self.steps(self.done, self.total, f"chip batch {max(1, self.batch)}/{self.batches} · "
                   f"{name} diffusion step {min(step, of)}/{of}")

    def chips(self, done: int, total: int) -> None:
        """A chip batch ended (``tiled_apply``'s progress): re-align on whole chips."""
        self.chips_done = done
        self.done = done * self.members * self.per_chip
        self._step.clear()
        self._in_batch = False
        self.steps(self.done, self.total, f"chip batch {max(1, self.batch)}/{self.batches} done")

    # -- hooks ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, module: Any) -> Iterator[None]:
        """Forward hooks on ``module`` (a batch starts) and its diffusion decoders (a step),
        removed when the block ends."""
        handles = []
        if module is not None and hasattr(module, "register_forward_pre_hook"):
            handles.append(module.register_forward_pre_hook(
                lambda _m, _args: self.batch_started()))
            for name, tokenizer in diffusion_tokenizers(module).items():
                handles.append(tokenizer.decoder.register_forward_hook(self._on_decoder(name),
                                                                       with_kwargs=True))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _on_decoder(self, name: str) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> None:
            if kwargs.get("unconditional"):  # classifier-free guidance: same step, second call
                return
            shape: tuple[int, ...] = tuple(getattr(args[0], "shape", ())) if args else ()
            chips = int(shape[0]) if shape else 1
            self.decoder_step(name, chips)

        return hook


def diffusion_tokenizers(module: Any) -> dict[str, Any]:
    """``{output name: tokenizer}`` of the diffusion tokenizers of a TerraMind generation
    module (those with a noise scheduler and a UNet ``decoder``), named as the outputs
    (``S1GRD``...) where known."""
    tokenizers = getattr(module, "tokenizer", None) or {}
    names = dict(getattr(module, "output_mod_name_mapping", None) or {})
    found: dict[str, Any] = {}
    for key in list(tokenizers.keys()):
        tok = tokenizers[key]
        if hasattr(tok, "noise_scheduler") and hasattr(tok, "decoder"):
            found[str(names.get(key, key))] = tok
    return found


def denoising_steps(tokenizer: Any, timesteps: int) -> int:
    """Decoder calls one diffusion decode makes for ``timesteps``.

    terratorch's DDIM scheduler in its default ``trailing`` mode steps from
    ``num_train_timesteps`` down by ``num_train_timesteps // timesteps``, which is *more*
    steps than asked for whenever the division is not exact (1000 train steps: 3 → 4,
    91 → 100; 1, 2, 4, 5, 8, 10, 20, 25, 50, 100 are exact).
    """
    config = getattr(getattr(tokenizer, "noise_scheduler", None), "config", None)
    train = int(getattr(config, "num_train_timesteps", 1000) or 1000)
    timesteps = max(1, min(int(timesteps), train))
    return len(range(train, 0, -(train // timesteps)))


__all__ = ["DiffusionSteps", "Phase", "Progress", "StepsFn", "Unit", "denoising_steps",
           "diffusion_tokenizers",
           "format_bytes", "format_seconds"]
