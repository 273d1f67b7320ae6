"""Building TerraMind models from terratorch's registries with resolved weight files.

:func:`build_terramind` builds any TerraMind v1 model (generation, geolocation, TiM backbone);
:func:`load_generation_model` is the S2L2A → outputs generation model the app and CLI use.

All files are resolved *before* the model construction, so missing weights fail in seconds
with one message naming every missing file. The model is then built with its parameters on
``meta`` (no random init the weights overwrite) and filled from memory-mapped files through
terratorch's own checkpoint filters (``checkpoint_filter_fn_generate`` and friends) —
never through ``ckpt_path=``, which silently loads nothing into ``*_generate`` models. A file
that would leave any tensor of the built model uninitialised (missing, or of another shape)
is refused, naming the file and the counts; keys for modalities the model was not built with
are fine. Each file's SHA-256 (and hub revision) goes into the outputs' provenance
(``weights_files``); it is computed on a helper thread while the tokenizers and the model file
load (hashing releases the GIL). Tokenizers loaded from the same file are shared between
models (:mod:`inference.loading`) and read two at a time (:mod:`inference.tokenizer_loading`).
``untrained`` models get a seeded real initialisation.

Weight sources are described in :mod:`inference.weights`; devices and precision in
:mod:`inference.devices`; what a built model is in :mod:`inference.models`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.devices import autocast_dtype, oom_as_error, resolve_device
from inference.errors import InvalidRequestError, WeightsUnavailableError
from inference.loading import load_model_file, parameters_on_meta, uninitialised
from inference.modalities import Modality
from inference.models import (
    GenerationModel,
    GenerationSpec,
    LoadedModel,
    ModelSize,
    normalise_outputs,
    parse_model_size,
)
from inference.phases import PhaseFn, Phases
from inference.speed import SpeedOptions, apply_speed
from inference.terratorch_import import import_terratorch
from inference.tokenizer_loading import load_tokenizers
from inference.weights import (
    WEIGHTS_UNTRAINED,
    BytesFn,
    WeightRecord,
    required_weight_files,
    resolve_weight_files,
    tokenizer_file,
    weight_records,
    weights_kind,
    weights_label,
)

if TYPE_CHECKING:
    import torch

#: Phase name of hashing the weight files (runs beside the tokenizer and model loads).
HASH_PHASE = "recording weight files (sha256)"


def build_terramind(
    registry_name: str,
    *,
    weights: str,
    device: torch.device | str = "cpu",
    full_model: bool | None = None,
    progress: PhaseFn | None = None,
    speed: SpeedOptions | None = None,
    on_bytes: BytesFn | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Build any TerraMind v1 model from terratorch's registries with resolved weights.

    Use this for generation (``terramind_v1_*_generate``), geolocation (a ``*_generate`` with
    ``output_modalities=["coords"]``) or TiM backbones (``terramind_v1_*_tim``). Phases:

    1. weight files are resolved (fast failure, one message naming every missing file);
    2. the model is built with ``pretrained=False`` and its parameters on the ``meta`` device
       (no random initialisation that the weights would overwrite);
    3. each tokenizer is taken from :data:`inference.loading.TOKENIZERS` when another model
       already loaded the same file onto the same device, else loaded from its file
       (``speed.load_workers`` files at a time);
    4. the model's checkpoint goes through terratorch's filter and is assigned from a
       memory-mapped file; any tensor left on ``meta`` refuses the model;
    5. every file's SHA-256 (and hub revision) is recorded in :attr:`LoadedModel.weight_files`
       (on a helper thread during 3 and 4 when ``speed.load_workers > 1``).

    ``progress`` is called from this thread only, once per phase as it starts (the
    tokenizers and the hashing are announced as they are handed to their threads).

    ``untrained`` models get a real random initialisation seeded with
    :data:`UNTRAINED_INIT_SEED` (the caller's RNG state is left alone), so the same request
    gives the same bytes in any process.

    Args:
        registry_name: e.g. ``terramind_v1_base_generate``, ``terramind_v1_tiny_tim``.
        weights: ``hub``, a local directory, or ``untrained``.
        device: Target device (a ``torch.device`` or a name for :func:`resolve_device`).
        full_model: Look in ``FULL_MODEL_REGISTRY`` (True) or ``BACKBONE_REGISTRY`` (False);
            default: full for ``*_generate``/``*_encdec``/tokenizers, backbone otherwise.
        progress: Called with a message as each phase starts (seconds of each phase end up
            in :attr:`LoadedModel.load_phases`).
        speed: Speed paths to apply (:mod:`inference.speed`); default from the environment.
        on_bytes: Called as weight files download from the hub (file name, bytes done, total).
        **kwargs: Passed to the registry builder (``modalities``, ``output_modalities``,
            ``tim_modalities``, ``standardize``, ``timesteps``...). ``pretrained`` and
            ``ckpt_path`` are refused.

    Returns:
        The module on ``device`` in eval mode, with its weights label and file records.

    Raises:
        WeightsUnavailableError: weight files are missing, unreadable or do not fit (any
            tensor of the built model left uninitialised).
        InvalidRequestError: bad arguments.
        OutOfMemoryError: the model does not fit on the device.
    """
    import torch

    for banned in ("pretrained", "ckpt_path"):
        if banned in kwargs:
            raise InvalidRequestError(
                f"{banned}= is managed by TerraLens (got {kwargs[banned]!r}); pass weights= "
                "instead (ckpt_path= silently loads nothing into *_generate models)."
            )
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    kind = weights_kind(weights)
    size = next((s for s in ModelSize if f"_{s.value}" in registry_name), None)
    if size is None:
        raise InvalidRequestError(f"Cannot tell the model size from {registry_name!r}.")
    phases = Phases(progress)
    speed = speed if speed is not None else SpeedOptions.from_env()

    with phases("importing terratorch"):
        import_terratorch()
    paths: dict[str, Path] = {}
    if kind != WEIGHTS_UNTRAINED:
        with phases("resolving weight files"):
            files = required_weight_files(
                registry_name,
                modalities=_names(kwargs.get("modalities")),
                output_modalities=_names(kwargs.get("output_modalities")),
                tim_modalities=_names(kwargs.get("tim_modalities")),
            )
            paths = resolve_weight_files(files, weights, on_bytes=on_bytes)

    from terratorch.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

    if full_model is None:
        full_model = registry_name.endswith(("_generate", "_encdec", "_tokenizer")) or (
            "_tokenizer_" in registry_name
        )
    registry = FULL_MODEL_REGISTRY if full_model else BACKBONE_REGISTRY
    records: tuple[WeightRecord, ...] = ()
    with oom_as_error(f"building {registry_name}", device=dev):
        if paths:
            with phases(f"building {registry_name} (no random init)"), parameters_on_meta():
                module = _registry_build(registry, registry_name, kwargs)
            tokenizers = getattr(module, "tokenizer", None) or {}
            missing_tok = [k for k in tokenizers if k not in paths]
            if missing_tok:  # a tokenizer the prediction did not foresee
                paths |= resolve_weight_files([tokenizer_file(k) for k in missing_tok], weights,
                                              on_bytes=on_bytes)
            records = _load_files(module, tokenizers, paths, dev, phases, registry_name,
                                  workers=speed.load_workers)
            left = uninitialised(module)
            if left:
                raise WeightsUnavailableError(
                    f"The weight files {sorted(p.name for p in paths.values())} leave "
                    f"{len(left)} tensors of {registry_name} uninitialised (e.g. {left[:3]}): "
                    "check that they are the TerraMind v1 files of this size."
                )
        else:
            with phases(f"building {registry_name} (seeded random init)"), _seeded_init():
                module = _registry_build(registry, registry_name, kwargs)
        with phases(f"moving to {dev}"):
            module = module.to(dev)
            module.eval()
    with phases("applying speed options"):
        apply_speed(module, speed)
    return LoadedModel(
        module=module,
        registry_name=registry_name,
        device=dev,
        weights_label=weights_label(weights, size.value),
        untrained=kind == WEIGHTS_UNTRAINED,
        weight_files=records,
        load_phases=phases.seconds,
        speed=speed,
    )


def _timed_records(paths: dict[str, Path]) -> tuple[tuple[WeightRecord, ...], float]:
    start = time.perf_counter()
    return weight_records(paths), time.perf_counter() - start


def _load_files(module: Any, tokenizers: Any, paths: dict[str, Path], device: torch.device,
                phases: Phases, registry_name: str, *, workers: int,
                ) -> tuple[WeightRecord, ...]:
    """Fill ``module`` (built on meta) from ``paths``; return the files' records.

    The SHA-256 of every file is computed on a helper thread meanwhile (with ``workers > 1``),
    the tokenizers are read ``workers`` at a time, then the model's own file.
    """
    if workers <= 1:
        with phases(HASH_PHASE):
            records = weight_records(paths)
        load_tokenizers(tokenizers, paths, device, phases=phases, workers=1)
        with phases(f"loading {paths['model'].name}"):
            load_model_file(module, paths["model"], what=registry_name)
        return records
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="terralens-sha256") as hasher:
        phases.announce(HASH_PHASE)
        hashing = hasher.submit(_timed_records, paths)
        load_tokenizers(tokenizers, paths, device, phases=phases, workers=workers)
        with phases(f"loading {paths['model'].name}"):
            load_model_file(module, paths["model"], what=registry_name)
        records, took = hashing.result()
    phases.add(HASH_PHASE, took)
    return records


#: Seed of the random initialisation of ``untrained`` models (the same bytes in any process).
UNTRAINED_INIT_SEED = 0


@contextlib.contextmanager
def _seeded_init() -> Iterator[None]:
    """Seed torch, numpy and ``random`` for a build; restore the caller's states after."""
    import random

    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_INIT_SEED)
        random.seed(UNTRAINED_INIT_SEED)
        np.random.seed(UNTRAINED_INIT_SEED)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _registry_build(registry: Any, registry_name: str, kwargs: dict[str, Any]) -> Any:
    with warnings.catch_warnings():
        # TiM warns that an un-pretrained model cannot generate; weights are loaded after.
        warnings.filterwarnings("ignore", message=".*not pre-trained.*")
        try:
            return registry.build(registry_name, pretrained=False, **kwargs)
        except (KeyError, ValueError, NotImplementedError, TypeError) as err:
            raise InvalidRequestError(
                f"terratorch cannot build {registry_name!r} with {kwargs!r}: {err}"
            ) from err


def _names(value: Any) -> list[str]:
    if not value:
        return []
    return [v for v in value if isinstance(v, str)]


def load_generation_model(
    size: ModelSize | str,
    outputs: Iterable[Modality | str],
    *,
    weights: str,
    device: torch.device | str = "auto",
    timesteps: int = 10,
    progress: PhaseFn | None = None,
    speed: SpeedOptions | None = None,
    on_bytes: BytesFn | None = None,
) -> GenerationModel:
    """Build the S2L2A → ``outputs`` any-to-any generation model.

    Only the tokenizers of the requested outputs are built (``output_modalities`` is exactly
    the requested set, in order), with ``standardize=True`` so inputs are raw L2A DN and outputs
    physical units.

    Args:
        size: tiny, small, base or large.
        outputs: Modalities to generate (subset of ``GENERATABLE``).
        weights: ``hub``, a local directory, or ``untrained``.
        device: ``torch.device`` or a name for :func:`resolve_device`.
        timesteps: Default diffusion steps (terratorch's own default, 50, is never used).
        progress: Called with a message as each build phase starts.
        speed: Speed paths (:mod:`inference.speed`); default from the environment.
        on_bytes: Called as weight files download (file name, bytes done, total or None).

    Returns:
        The model, in eval mode on its device.

    Raises:
        InvalidRequestError: bad size, outputs, device or timesteps.
        WeightsUnavailableError: weights missing; the message says how to provide them.
        OutOfMemoryError: the model does not fit on the device.
    """
    import torch

    model_size = parse_model_size(size)
    wanted = normalise_outputs(outputs)
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or not 1 <= timesteps <= 100:
        raise InvalidRequestError(f"timesteps must be an integer in 1..100, got {timesteps!r}.")
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    spec = GenerationSpec(model_size, wanted, weights, str(dev), timesteps)
    loaded = build_terramind(
        spec.registry_name,
        weights=weights,
        device=dev,
        modalities=[Modality.S2L2A.value],
        output_modalities=[m.value for m in wanted],
        standardize=True,
        timesteps=timesteps,
        progress=progress,
        speed=speed,
        on_bytes=on_bytes,
    )
    return GenerationModel(
        module=loaded.module,
        registry_name=loaded.registry_name,
        device=loaded.device,
        weights_label=loaded.weights_label,
        untrained=loaded.untrained,
        weight_files=loaded.weight_files,
        load_phases=loaded.load_phases,
        speed=loaded.speed,
        spec=spec,
        autocast=autocast_dtype(dev) if loaded.speed.autocast else None,
    )
