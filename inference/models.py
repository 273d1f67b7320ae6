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

All files are resolved *before* the (slow) model construction, so missing weights fail in
seconds with one message naming every missing file. Weights are then loaded with
terratorch's own checkpoint filters (``checkpoint_filter_fn_generate`` and friends) and
``strict=True`` — never through ``ckpt_path=``, which silently loads nothing into
``*_generate`` models.

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
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.errors import InvalidRequestError, OutOfMemoryError
from inference.modalities import GENERATABLE, Modality
from inference.weights import (
    WEIGHTS_UNTRAINED,
    load_weights,
    required_weight_files,
    resolve_weight_files,
    tokenizer_file,
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
    """

    module: Any
    registry_name: str
    device: torch.device
    weights_label: str
    untrained: bool

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
    **kwargs: Any,
) -> LoadedModel:
    """Build any TerraMind v1 model from terratorch's registries with resolved weights.

    Use this for generation (``terramind_v1_*_generate``), geolocation (a ``*_generate`` with
    ``output_modalities=["coords"]``) or TiM backbones (``terramind_v1_*_tim``). Weight files
    are resolved first (fast failure), the model is built with ``pretrained=False`` and the
    files are loaded with terratorch's checkpoint filters, ``strict=True``.

    Args:
        registry_name: e.g. ``terramind_v1_base_generate``, ``terramind_v1_tiny_tim``.
        weights: ``hub``, a local directory, or ``untrained``.
        device: Target device (a ``torch.device`` or a name for :func:`resolve_device`).
        full_model: Look in ``FULL_MODEL_REGISTRY`` (True) or ``BACKBONE_REGISTRY`` (False);
            default: full for ``*_generate``/``*_encdec``/tokenizers, backbone otherwise.
        **kwargs: Passed to the registry builder (``modalities``, ``output_modalities``,
            ``tim_modalities``, ``standardize``, ``timesteps``...). ``pretrained`` and
            ``ckpt_path`` are refused.

    Returns:
        The module on ``device`` in eval mode, with its weights label.

    Raises:
        WeightsUnavailableError: weight files are missing or do not fit.
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

    paths: dict[str, Path] = {}
    if kind != WEIGHTS_UNTRAINED:
        files = required_weight_files(
            registry_name,
            modalities=_names(kwargs.get("modalities")),
            output_modalities=_names(kwargs.get("output_modalities")),
            tim_modalities=_names(kwargs.get("tim_modalities")),
        )
        paths = resolve_weight_files(files, weights)

    from terratorch.registry import BACKBONE_REGISTRY, FULL_MODEL_REGISTRY

    if full_model is None:
        full_model = registry_name.endswith(("_generate", "_encdec", "_tokenizer")) or (
            "_tokenizer_" in registry_name
        )
    registry = FULL_MODEL_REGISTRY if full_model else BACKBONE_REGISTRY
    with oom_as_error(f"building {registry_name}", device=dev), warnings.catch_warnings():
        # TiM warns that an un-pretrained model cannot generate; weights are loaded below.
        warnings.filterwarnings("ignore", message=".*not pre-trained.*")
        try:
            module = registry.build(registry_name, pretrained=False, **kwargs)
        except (KeyError, ValueError, NotImplementedError, TypeError) as err:
            raise InvalidRequestError(
                f"terratorch cannot build {registry_name!r} with {kwargs!r}: {err}"
            ) from err
        if paths:
            missing_tok = [k for k in (getattr(module, "tokenizer", {}) or {}) if k not in paths]
            if missing_tok:  # a tokenizer the prediction did not foresee
                paths |= resolve_weight_files([tokenizer_file(k) for k in missing_tok], weights)
            load_weights(module, paths)
        module = module.to(dev)
        module.eval()
    return LoadedModel(
        module=module,
        registry_name=registry_name,
        device=dev,
        weights_label=weights_label(weights, size.value),
        untrained=kind == WEIGHTS_UNTRAINED,
    )


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
    )
    return GenerationModel(
        module=loaded.module,
        registry_name=loaded.registry_name,
        device=loaded.device,
        weights_label=loaded.weights_label,
        untrained=loaded.untrained,
        spec=spec,
        autocast=autocast_dtype(dev),
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
