"""TerraMind models: sizes, devices, weight sources and cached-friendly loading.

Everything heavy (``torch``, ``terratorch``) is imported inside functions: importing this
module costs nothing, so the app can start before a model is ever needed.

Weight sources (``TERRALENS_WEIGHTS``, passed here as ``weights``):

* ``"hub"`` — the Hugging Face hub through ``huggingface_hub.hf_hub_download``, with the repo
  ids and file names terratorch itself uses (``ibm-esa-geospatial/TerraMind-1.0-{size}`` /
  ``TerraMind_v1_{size}.pt`` and ``ibm-esa-geospatial/TerraMind-1.0-Tokenizer-{MOD}`` /
  ``TerraMind_Tokenizer_{MOD}.pt``). A pre-filled cache (``HF_HOME``) works offline, with or
  without ``HF_HUB_OFFLINE=1``: when the hub host cannot be reached in a few seconds only the
  cache is looked at, so nothing waits on the network's retry loop.
* a local directory holding the same files under the same names (flat, or each in a
  sub-folder named after its hub repo, e.g. ``TerraMind-1.0-base/TerraMind_v1_base.pt``).
* ``"untrained"`` — random initialisation, for tests and demos; outputs are noise and every
  layer says so.

All files are resolved *before* the model construction, so missing weights fail in seconds
with one message naming every missing file. The model is then built with its parameters on
``meta`` (no random init the weights overwrite) and filled from memory-mapped files through
terratorch's own checkpoint filters (``checkpoint_filter_fn_generate`` and friends) —
never through ``ckpt_path=``, which silently loads nothing into ``*_generate`` models. A file
that would leave any tensor of the built model uninitialised (missing, or of another shape)
is refused, naming the file and the counts; keys for modalities the model was not built with
are fine. Each file's SHA-256 (and hub revision) goes into the outputs' provenance
(``weights_files``); tokenizers loaded from the same file are shared between models
(:mod:`inference.loading`). ``untrained`` models get a seeded real initialisation.

Device work must be serialised by the caller with :data:`DEVICE_LOCK` (the app holds it around
every model call so that two sessions never share GPU memory at once); nothing in
``inference`` acquires it, so nested calls cannot deadlock.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.errors import InvalidRequestError, OutOfMemoryError, WeightsUnavailableError
from inference.loading import (
    TOKENIZERS,
    load_model_file,
    load_part,
    parameters_on_meta,
    uninitialised,
)
from inference.modalities import GENERATABLE, Modality
from inference.speed import SpeedOptions, apply_speed
from inference.terratorch_import import import_terratorch
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

logger = logging.getLogger(__name__)

#: Serialises device work across threads (Streamlit sessions). Held by the caller, not here.
DEVICE_LOCK = threading.Lock()

#: Label stored with every output of an untrained model.
UNTRAINED_LABEL = "untrained — outputs are noise"

#: ``progress(message)`` as each phase of a model build starts.
PhaseFn = Callable[[str], None]


class ModelSize(StrEnum):
    """TerraMind v1 model sizes."""

    TINY = "tiny"
    SMALL = "small"
    BASE = "base"
    LARGE = "large"


def parse_model_size(size: ModelSize | str) -> ModelSize:
    """The :class:`ModelSize` for ``size`` (case and surrounding spaces ignored).

    Raises:
        InvalidRequestError: not tiny, small, base or large.
    """
    try:
        return ModelSize(str(size).strip().lower())
    except ValueError as err:
        raise InvalidRequestError(
            f"Model size must be one of {[s.value for s in ModelSize]}, got {size!r}."
        ) from err


@dataclass(frozen=True)
class GenerationSpec:
    """What a generation model is: doubles as a cache key for the app.

    Attributes:
        size: Model size.
        outputs: Generated modalities, in generation order.
        weights: Weight source as given (``hub``, a directory, ``untrained``).
        device: Resolved device string, e.g. ``cpu`` or ``cuda:0``.
        timesteps: Default diffusion steps (a task may override it per call).
    """

    size: ModelSize
    outputs: tuple[Modality, ...]
    weights: str
    device: str
    timesteps: int

    @property
    def registry_name(self) -> str:
        """terratorch ``FULL_MODEL_REGISTRY`` name, e.g. ``terramind_v1_base_generate``."""
        return f"terramind_v1_{self.size.value}_generate"


@dataclass
class LoadedModel:
    """A terratorch TerraMind module on its device, in eval mode, with its provenance.

    Attributes:
        module: The torch module (``None`` after :meth:`unload`).
        registry_name: terratorch registry name it was built from.
        device: Device the module lives on.
        weights_label: ``hub:<repo>``, ``local:<dir>`` or ``untrained``.
        untrained: True when the weights are random.
        weight_files: One record (file, SHA-256, hub revision) per file loaded.
        load_phases: Seconds spent in each phase of the build.
        speed: The speed paths in use.
    """

    module: Any
    registry_name: str
    device: torch.device
    weights_label: str
    untrained: bool
    weight_files: tuple[WeightRecord, ...] = field(default=(), kw_only=True)
    load_phases: dict[str, float] = field(default_factory=dict, kw_only=True)
    speed: SpeedOptions = field(default_factory=SpeedOptions, kw_only=True)

    def weight_files_json(self) -> str:
        """:attr:`weight_files` as a JSON list (the ``weights_files`` provenance attr)."""
        import json

        return json.dumps([r.as_dict() for r in self.weight_files])

    def unload(self) -> None:
        """Drop the module and return its memory (CUDA cache included)."""
        self.module = None
        gc.collect()
        _empty_device_cache(self.device)

    @property
    def loaded(self) -> bool:
        """Whether the module is still held."""
        return self.module is not None


@dataclass
class GenerationModel(LoadedModel):
    """A ``terramind_v1_*_generate`` model ready for :func:`inference.generate.generate`.

    Attributes:
        spec: The spec it was built from.
        autocast: dtype for ``torch.autocast`` on this device, or None for full precision.
    """

    spec: GenerationSpec
    autocast: torch.dtype | None = None

    @property
    def outputs(self) -> tuple[Modality, ...]:
        """The modalities this model generates."""
        return self.spec.outputs


# ----------------------------------------------------------------------------------------------
# Devices


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto``/``cuda``/``cuda:N``/``mps``/``cpu`` into a usable ``torch.device``.

    Args:
        name: ``auto`` picks CUDA, then Apple MPS, then CPU.

    Returns:
        The device.

    Raises:
        InvalidRequestError: the name is unknown or the device is not available here.
    """
    import torch

    key = (name or "auto").strip().lower()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not _mps_available():
            raise InvalidRequestError(
                f"Device {name!r} asked for, but Apple MPS is not available here; "
                "set TERRALENS_DEVICE=auto or cpu."
            )
        return torch.device("mps")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InvalidRequestError(
                f"Device {name!r} asked for, but no CUDA GPU is visible to torch; "
                "set TERRALENS_DEVICE=auto or cpu, or check the NVIDIA driver/container runtime."
            )
        try:
            device = torch.device(key)
        except RuntimeError as err:
            raise InvalidRequestError(f"Cannot parse device {name!r}: {err}") from err
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidRequestError(
                f"Device {name!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist."
            )
        return device
    raise InvalidRequestError(f"Unknown device {name!r}: use auto, cuda, cuda:N, mps or cpu.")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast_dtype(device: torch.device, *, cpu_bf16: bool = False) -> torch.dtype | None:
    """The reduced-precision dtype to autocast with on ``device``.

    Args:
        device: Target device.
        cpu_bf16: Use bfloat16 on CPU too (≈1.7× faster here, quality unchecked).

    Returns:
        ``torch.bfloat16`` on CUDA when supported, else ``torch.float16``; None (full fp32) on
        CPU and MPS unless ``cpu_bf16``.
    """
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_bf16:
        return torch.bfloat16
    return None


def _empty_device_cache(device: torch.device | None) -> None:
    import torch

    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device is not None and device.type == "mps" and _mps_available():
        torch.mps.empty_cache()


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a device (or host) out-of-memory error raised by torch."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


@contextlib.contextmanager
def oom_as_error(what: str, *, device: torch.device | None = None) -> Iterator[None]:
    """Re-raise torch out-of-memory errors as :class:`OutOfMemoryError` with advice.

    Args:
        what: The work being done, for the message (e.g. ``"generating S1GRD, LULC"``).
        device: Device whose cache is emptied after a failure.

    Raises:
        OutOfMemoryError: the device ran out of memory inside the block.
    """
    try:
        yield
    except OutOfMemoryError:
        raise
    except BaseException as err:
        if not is_out_of_memory(err):
            raise
        _empty_device_cache(device)
        where = f" on {device}" if device is not None else ""
        raise OutOfMemoryError(
            f"Out of memory{where} while {what}: lower the chip batch size, pick a smaller "
            f"model size, or ask for fewer outputs at once ({err})."
        ) from err


# ----------------------------------------------------------------------------------------------
# Building


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
       already loaded the same file onto the same device, else loaded from its file;
    4. the model's checkpoint goes through terratorch's filter and is assigned from a
       memory-mapped file; any tensor left on ``meta`` refuses the model;
    5. every file's SHA-256 (and hub revision) is recorded in :attr:`LoadedModel.weight_files`.

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
        on_bytes: Called as weight files download from the hub (bytes done and total).
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
    phases = _Phases(progress)

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
            with phases("recording weight files (sha256)"):
                records = weight_records(paths)
            for key in list(tokenizers):
                with phases(f"loading tokenizer {key}"):
                    tokenizers[key] = _tokenizer(tokenizers[key], key, paths[key], dev)
            with phases(f"loading {paths['model'].name}"):
                load_model_file(module, paths["model"], what=registry_name)
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
    speed = speed if speed is not None else SpeedOptions.from_env()
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


def _tokenizer(built: Any, key: str, path: Path, device: torch.device) -> Any:
    """The shared tokenizer for ``key`` from ``path`` on ``device``; ``built`` (on meta) is
    filled and shared when no other model holds one."""
    ident = TOKENIZERS.identity(key, path, device)
    shared = TOKENIZERS.get(ident)
    if shared is not None:
        return shared
    if key == "coords":
        from tokenizers import Tokenizer

        try:
            built.text_tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # the tokenizers library raises plain Exceptions
            raise WeightsUnavailableError(
                f"Coordinate vocabulary {path.name!r} ({str(path)!r}) is unreadable ({err}): "
                "re-download it or fix TERRALENS_WEIGHTS."
            ) from err
    else:
        load_part(built, path, what=f"tokenizer {key!r}")
    left = uninitialised(built)
    if left:  # pragma: no cover - load_part refuses such files first
        raise WeightsUnavailableError(
            f"Tokenizer file {path.name!r} leaves {len(left)} tensors unset, e.g. {left[:3]}."
        )
    built = built.to(device).eval()
    TOKENIZERS.put(ident, built)
    return built


class _Phases:
    """Times named phases, tells ``progress`` as each starts, logs each duration."""

    def __init__(self, progress: PhaseFn | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + took
            logger.info("%s: %.2f s", name, took)


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


def normalise_outputs(outputs: Iterable[Modality | str]) -> tuple[Modality, ...]:
    """Validate generation outputs: a non-empty, duplicate-free subset of ``GENERATABLE``.

    Raises:
        InvalidRequestError: empty, unknown or not generatable modality.
    """
    if isinstance(outputs, str | Modality):
        outputs = [outputs]
    result: list[Modality] = []
    for raw in outputs:
        try:
            mod = Modality(str(raw).strip().upper())
        except ValueError as err:
            raise InvalidRequestError(
                f"Unknown output modality {raw!r}: choose from {[m.value for m in GENERATABLE]}."
            ) from err
        if mod not in GENERATABLE:
            raise InvalidRequestError(
                f"TerraMind cannot generate {raw!r} from S2L2A here: choose from "
                f"{[m.value for m in GENERATABLE]}."
            )
        if mod not in result:
            result.append(mod)
    if not result:
        raise InvalidRequestError(
            f"Choose at least one output to generate from {[m.value for m in GENERATABLE]}."
        )
    return tuple(result)


def terratorch_version() -> str:
    """Installed terratorch version (without importing it)."""
    try:
        return importlib.metadata.version("terratorch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
