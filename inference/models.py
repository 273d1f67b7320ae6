"""What a TerraMind model is: sizes, output sets, the generation spec (the app's cache key)
and the loaded model with its provenance.

Building one is :mod:`inference.build` (:func:`~inference.build.build_terramind`,
:func:`~inference.build.load_generation_model`); weight sources are :mod:`inference.weights`;
devices, precision and the device lock are :mod:`inference.devices`. Importing this module
imports neither torch nor terratorch.
"""

from __future__ import annotations

import gc
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from inference.devices import empty_device_cache
from inference.errors import InvalidRequestError
from inference.modalities import GENERATABLE, Modality
from inference.speed import SpeedOptions
from inference.weights import WeightRecord

if TYPE_CHECKING:
    import torch

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
        empty_device_cache(self.device)

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
