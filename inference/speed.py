"""Switchable speed paths for TerraMind models, each covered by an equality or tolerance test.

:class:`SpeedOptions` says which are on; :func:`apply_speed` applies the model-level ones
once, after a build. Defaults come from the environment (:meth:`SpeedOptions.from_env`):

========================  ==========================  =================================
option                    variable (default)          what it does
========================  ==========================  =================================
``fast_sampler``          ``TERRALENS_FAST_SAMPLER=1``  one sort in the top-p filter
                                                        (:mod:`inference.sampler`; same
                                                        tokens for the same seed)
``compile``               ``TERRALENS_COMPILE=0``       ``torch.compile`` of each transformer
                                                        block and each diffusion UNet, not of
                                                        the scheduler loop (which breaks the
                                                        graph at every step)
``autocast``              ``TERRALENS_AUTOCAST=1``      bf16 autocast on CUDA (fp16 where
                                                        bf16 is unsupported); never on CPU
``pinned``                ``TERRALENS_PINNED=1``        pinned host memory and asynchronous
                                                        copies for chip batches on CUDA
``adaptive_batch``        ``TERRALENS_ADAPTIVE_BATCH=1``  chip batch capped by free GPU memory,
                                                        halved and retried on out-of-memory
                                                        (:mod:`inference.batching`)
``load_workers``          ``TERRALENS_LOAD_WORKERS=2``  tokenizer files read at once, weight
                                                        files hashed meanwhile (1: one after
                                                        the other; :mod:`inference.build`)
========================  ==========================  =================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from inference.errors import InvalidRequestError

logger = logging.getLogger(__name__)

_ENV = {
    "fast_sampler": "TERRALENS_FAST_SAMPLER",
    "compile": "TERRALENS_COMPILE",
    "autocast": "TERRALENS_AUTOCAST",
    "pinned": "TERRALENS_PINNED",
    "adaptive_batch": "TERRALENS_ADAPTIVE_BATCH",
}


@dataclass(frozen=True)
class SpeedOptions:
    """Which speed paths are on (see the module docstring).

    Attributes:
        fast_sampler: One-sort top-p filter.
        compile: ``torch.compile`` transformer blocks and diffusion UNets.
        autocast: Reduced precision on CUDA.
        pinned: Pinned host memory and non-blocking copies on CUDA.
        adaptive_batch: Cap the batch by free GPU memory; halve and retry on out-of-memory.
        compile_mode: ``torch.compile`` mode (``"default"``; ``"reduce-overhead"`` adds CUDA
            graphs for the fixed-shape chip batch).
        load_workers: Threads loading tokenizer files at a model build (1: sequential, the
            hashing of the files included).
    """

    fast_sampler: bool = True
    compile: bool = False
    autocast: bool = True
    pinned: bool = True
    adaptive_batch: bool = True
    compile_mode: str = "default"
    load_workers: int = 2

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SpeedOptions:
        """Options from ``TERRALENS_*`` variables (``1/true/yes/on`` or ``0/false/no/off``;
        ``TERRALENS_COMPILE_MODE`` for the mode, ``TERRALENS_LOAD_WORKERS`` a whole number
        1..16); unset ones keep their defaults.

        Raises:
            InvalidRequestError: ``TERRALENS_LOAD_WORKERS`` is not a whole number in 1..16.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in _ENV.items():
            raw = env.get(var, "").strip().lower()
            if raw in {"1", "true", "yes", "on"}:
                values[name] = True
            elif raw in {"0", "false", "no", "off"}:
                values[name] = False
        mode = env.get("TERRALENS_COMPILE_MODE", "").strip()
        if mode:
            values["compile_mode"] = mode
        workers = env.get("TERRALENS_LOAD_WORKERS", "").strip()
        if workers:
            if not workers.isdigit() or not 1 <= int(workers) <= 16:
                raise InvalidRequestError(
                    f"TERRALENS_LOAD_WORKERS must be a whole number from 1 to 16, got {workers!r}"
                )
            values["load_workers"] = int(workers)
        return cls(**values)

    @classmethod
    def reference(cls) -> SpeedOptions:
        """Every speed path off: terratorch's own code, full precision, fixed batches."""
        return cls(fast_sampler=False, compile=False, autocast=False, pinned=False,
                   adaptive_batch=False, load_workers=1)


def compile_targets(module: Any) -> list[Any]:
    """The submodules :func:`apply_speed` compiles: every transformer block of the encoder
    and decoder, and the UNet of every diffusion tokenizer (``tokenizer.decoder`` where the
    tokenizer has a noise scheduler)."""
    targets: list[Any] = []
    core = getattr(getattr(module, "sampler", None), "model", None) or module
    for name in ("encoder", "decoder"):
        blocks = getattr(core, name, None)
        if blocks is not None and hasattr(blocks, "__iter__"):
            targets.extend(blocks)
    for tok in (getattr(module, "tokenizer", None) or {}).values():
        if hasattr(tok, "noise_scheduler") and hasattr(tok, "decoder"):
            targets.append(tok.decoder)
    return targets


def apply_speed(module: Any, options: SpeedOptions) -> dict[str, Any]:
    """Apply the model-level speed paths to a built module (in place).

    Returns:
        What was applied, e.g. ``{"fast_sampler": True, "compiled": 16}``.
    """
    from inference import sampler

    applied: dict[str, Any] = {}
    if options.fast_sampler:
        applied["fast_sampler"] = sampler.install(module)
    else:
        sampler.uninstall(module)
        applied["fast_sampler"] = False
    if options.compile:
        targets = compile_targets(module)
        for target in targets:
            if getattr(target, "_compiled_call_impl", None) is None:
                target.compile(mode=options.compile_mode, dynamic=False)
        applied["compiled"] = len(targets)
    return applied
