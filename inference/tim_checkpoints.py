"""Fine-tuned TerraMind segmentation checkpoints: find, describe, load (offline), check inputs.

A checkpoint is a terratorch ``SemanticSegmentationTask`` Lightning checkpoint (what
``terratorch fit`` writes) whose backbone is ``terramind_v1_*_tim`` (or a plain
``terramind_v1_*``). It is found on disk or through the Hugging Face hub cache
(:func:`resolve_checkpoint`), described from its hyper-parameters without building anything
(:func:`read_tim_checkpoint`), and rebuilt offline (:func:`load_tim_checkpoint`): the backbone is
built with ``backbone_pretrained=False`` so terratorch never downloads the pre-trained weights,
and every weight — encoder, TiM generator, tokenizers, decoder, head — comes from the checkpoint.

Standardisation: the model expects standardised inputs (its data module normalised them in
training). Means/stds come from the checkpoint's data-module hyper-parameters when present, else
from TerraMind's pre-training statistics held by terratorch (``v1_pretraining_mean``/``_std``).

Segmentation with a loaded checkpoint lives in :mod:`inference.tim`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.devices import oom_as_error, resolve_device
from inference.errors import CheckpointError, WeightsUnavailableError
from inference.modalities import MODALITY_INFO, Modality
from inference.models import LoadedModel, terratorch_version

if TYPE_CHECKING:
    import torch

#: Raw-image modalities a checkpoint may take as input, with terratorch's embedding key.
INPUT_KEYS: dict[Modality, str] = {
    Modality.S2L2A: "untok_sen2l2a@224",
    Modality.S2L1C: "untok_sen2l1c@224",
    Modality.S1GRD: "untok_sen1grd@224",
    Modality.S1RTC: "untok_sen1rtc@224",
    Modality.DEM: "untok_dem@224",
}
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def terratorch_modality(name: str) -> Modality | None:
    """The raw-image :class:`Modality` terratorch maps a modality name to, or None.

    Mirrors terratorch's ``build_modality_embeddings`` naming rules (``S2L2A``, ``sen2l2a``,
    ``untok_sen2l2a@224``, ``S1`` → S1GRD...), so a checkpoint's ``backbone_modalities`` can be
    read without building the model.
    """
    if not isinstance(name, str):
        return None
    for mod, key in INPUT_KEYS.items():
        if name in (mod.value, key):
            return mod
    n = name.lower().replace("s2", "sen2").replace("s1", "sen1")
    if "sen2l2a" in n:
        return Modality.S2L2A
    if "sen2l1c" in n:
        return Modality.S2L1C
    if "sen1rtc" in n:
        return Modality.S1RTC
    if "sen1" in n:
        return Modality.S1GRD
    if "rgb" in n or "lulc" in n or "ndvi" in n or "coord" in n or "caption" in n:
        return None
    if "dem" in n:
        return Modality.DEM
    return None


@dataclass(frozen=True)
class TimCheckpointInfo:
    """What a segmentation checkpoint is, read from its hyper-parameters (no model built).

    Attributes:
        path: Local checkpoint file.
        source: Provenance label, ``local:<path>`` or ``hub:<repo_id>``.
        backbone: terratorch backbone name, e.g. ``terramind_v1_base_tim``.
        input_keys: Modality → the key the model's input dict uses for it.
        bands: Modality → band names (TerraLens spelling) the model takes, in order.
        tim_modalities: Modalities the backbone generates before encoding (empty: no TiM).
        class_names: One name per output class.
        checkpoint_means: Data-module means per modality, when the checkpoint holds them.
        checkpoint_stds: Data-module stds per modality, when the checkpoint holds them.
        model_args: terratorch model arguments stored in the checkpoint.
    """

    path: str
    source: str
    backbone: str
    input_keys: dict[Modality, str]
    bands: dict[Modality, tuple[str, ...]]
    tim_modalities: tuple[str, ...]
    class_names: tuple[str, ...]
    checkpoint_means: dict[Modality, tuple[float, ...]] = field(default_factory=dict)
    checkpoint_stds: dict[Modality, tuple[float, ...]] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """Input modalities, in the model's order."""
        return tuple(self.input_keys)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.class_names)


@dataclass
class TimModel(LoadedModel):
    """A loaded segmentation checkpoint (``module`` is the terratorch Lightning task).

    Attributes:
        info: What the checkpoint is.
        means: Standardisation means per input modality (band order of ``info.bands``).
        stds: Standardisation stds per input modality.
        standardisation: Where the statistics come from (``checkpoint data module`` or
            ``TerraMind v1 pre-training statistics``).
    """

    info: TimCheckpointInfo | None = None
    means: dict[Modality, np.ndarray] = field(default_factory=dict)
    stds: dict[Modality, np.ndarray] = field(default_factory=dict)
    standardisation: str = ""

    def _info(self) -> TimCheckpointInfo:
        if self.info is None:
            raise CheckpointError("This TimModel holds no checkpoint description.")
        return self.info

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """Input modalities the checkpoint needs, in its order."""
        return self._info().modalities

    @property
    def bands(self) -> dict[Modality, tuple[str, ...]]:
        """Band names per input modality."""
        return self._info().bands

    @property
    def tim_modalities(self) -> tuple[str, ...]:
        """Modalities the backbone generates before encoding ("thinks" in)."""
        return self._info().tim_modalities

    @property
    def class_names(self) -> tuple[str, ...]:
        """Output class names."""
        return self._info().class_names

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return self._info().num_classes


def _is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not Path(text).expanduser().exists()


def _pick_checkpoint(folder: Path, what: str) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _CHECKPOINT_SUFFIXES)
    ckpts = [p for p in files if p.suffix.lower() == ".ckpt"] or files
    if not ckpts:
        raise CheckpointError(
            f"No checkpoint file (*.ckpt, *.pt, *.pth) in {what}: pass the path of the "
            "Lightning checkpoint written by `terratorch fit`."
        )
    if len(ckpts) > 1:
        raise CheckpointError(
            f"Several checkpoint files in {what}: {[str(p) for p in ckpts]!r}; pass the path "
            "of the one to use."
        )
    return ckpts[0]


def resolve_checkpoint(path_or_repo_id: str | Path, *, weights_dir: str | Path | None = None
                       ) -> tuple[Path, str]:
    """Find a checkpoint file: a local file or folder, or a Hugging Face hub repo id.

    Args:
        path_or_repo_id: A ``.ckpt`` file, a folder holding exactly one, or a hub repo id such
            as ``ibm-esa-geospatial/TerraMind-base-Flood``.
        weights_dir: A local folder searched for the repo's files first
            (``<weights_dir>/<repo name>/`` or ``<weights_dir>/<org>/<repo name>/``).

    Returns:
        (local file, provenance label ``local:<path>`` or ``hub:<repo_id>``).

    Raises:
        CheckpointError: nothing usable at that path.
        WeightsUnavailableError: a hub repo that is neither cached nor reachable.
    """
    text = str(path_or_repo_id).strip()
    if not text:
        raise CheckpointError("No checkpoint given: pass a .ckpt path or a hub repo id.")
    local = Path(text).expanduser()
    if local.is_file():
        return local.resolve(), f"local:{local.resolve()}"
    if local.is_dir():
        found = _pick_checkpoint(local, f"folder {text!r}")
        return found.resolve(), f"local:{found.resolve()}"
    if not _is_repo_id(text):
        raise CheckpointError(
            f"Checkpoint {text!r} is neither a file, a folder nor a Hugging Face repo id "
            "(org/name): check the path."
        )
    org, name = text.split("/", 1)
    if weights_dir is not None:
        root = Path(weights_dir).expanduser()
        for folder in (root / name, root / org / name):
            if folder.is_dir():
                found = _pick_checkpoint(folder, f"folder {str(folder)!r}")
                return found.resolve(), f"hub:{text}"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from inference.weights import _hub_reachable

    offline = not _hub_reachable()
    try:
        snapshot = snapshot_download(
            text, allow_patterns=[f"*{s}" for s in _CHECKPOINT_SUFFIXES] + ["*.yaml", "*.json"],
            local_files_only=offline,
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        state = "unreachable (offline)" if offline else "not answering for this repo"
        raise WeightsUnavailableError(
            f"Checkpoint repo {text!r} is not in the local Hugging Face cache and the hub is "
            f"{state}. On a machine with internet run `hf download {text}` and copy the cache "
            "(HF_HOME), or download the .ckpt file and pass its local path"
            + (f" (or put it under {str(weights_dir)!r}/{name}/)" if weights_dir else "")
            + f". ({err})"
        ) from err
    found = _pick_checkpoint(Path(snapshot), f"hub repo {text!r}")
    return found, f"hub:{text}"


def _torch_load(path: Path) -> dict[str, Any]:
    import pickle
    import zipfile

    import torch

    failures = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
                zipfile.BadZipFile)
    advice = "pass a Lightning checkpoint (.ckpt) written by `terratorch fit`"
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        pass  # a legacy (non-zip) file cannot be memory-mapped: read it whole below
    except failures as err:
        raise CheckpointError(f"Cannot read checkpoint {str(path)!r} ({err}); {advice}.") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except failures as err:
        raise CheckpointError(f"Cannot read checkpoint {str(path)!r} ({err}); {advice}.") from err


def _band_names(mod: Modality, raw: Any) -> tuple[str, ...]:
    """TerraLens band names for a checkpoint's band list (terratorch or TerraLens spelling)."""
    full = MODALITY_INFO[mod].bands
    if raw is None:
        return full
    from inference.terratorch_import import import_terratorch

    import_terratorch()
    from terratorch.models.backbones.terramind.model.terramind_register import PRETRAINED_BANDS

    tt_names = PRETRAINED_BANDS.get(INPUT_KEYS[mod], [])
    names = []
    for band in raw:
        if band in full:
            names.append(band)
        elif band in tt_names and len(tt_names) == len(full):
            names.append(full[tt_names.index(band)])
        else:
            raise CheckpointError(
                f"The checkpoint uses band {band!r} for {mod.value}, which TerraLens cannot "
                f"supply (it has {list(full)!r})."
            )
    return tuple(names)


def _stats(raw: Any, input_keys: dict[Modality, str], bands: dict[Modality, tuple[str, ...]],
           what: str) -> dict[Modality, tuple[float, ...]]:
    """Per-modality means or stds from data-module hyper-parameters (empty if absent)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        if len(input_keys) != 1:
            return {}
        raw = {next(iter(input_keys.values())): raw}
    out: dict[Modality, tuple[float, ...]] = {}
    for mod, key in input_keys.items():
        values = raw.get(key, raw.get(mod.value))
        if values is None:
            return {}
        values = tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())
        full = MODALITY_INFO[mod].bands
        if len(values) == len(full) and len(bands[mod]) != len(full):
            values = tuple(values[full.index(b)] for b in bands[mod])
        if len(values) != len(bands[mod]):
            raise CheckpointError(
                f"The checkpoint's data-module {what} for {mod.value} have {len(values)} "
                f"values for {len(bands[mod])} bands."
            )
        out[mod] = values
    return out


def read_tim_checkpoint(path_or_repo_id: str | Path, *,
                        weights_dir: str | Path | None = None) -> TimCheckpointInfo:
    """Describe a segmentation checkpoint from its hyper-parameters, without building it.

    Raises:
        CheckpointError: not a terratorch TerraMind segmentation checkpoint, or one TerraLens
            cannot feed (multi-temporal, unknown input modalities or bands).
        WeightsUnavailableError: a hub repo that is neither cached nor reachable.
    """
    path, source = resolve_checkpoint(path_or_repo_id, weights_dir=weights_dir)
    ckpt = _torch_load(path)
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, Mapping) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} holds no terratorch hyper-parameters (a bare state dict?): TerraLens "
            "needs the Lightning checkpoint (.ckpt) written by `terratorch fit`."
        )
    model_args = dict(hparams.get("model_args") or {})
    backbone = str(model_args.get("backbone", ""))
    if hparams.get("task", "segmentation") != "segmentation" or not model_args.get("num_classes"):
        raise CheckpointError(
            f"{str(path)!r} is not a segmentation checkpoint (task "
            f"{hparams.get('task')!r}): pick a SemanticSegmentationTask checkpoint."
        )
    if not backbone.startswith("terramind_v1_"):
        raise CheckpointError(
            f"The checkpoint's backbone is {backbone!r}; TerraLens runs TerraMind v1 "
            "backbones (terramind_v1_*_tim or terramind_v1_*)."
        )
    if model_args.get("backbone_use_temporal"):
        raise CheckpointError(
            "This checkpoint is multi-temporal (backbone_use_temporal): it needs a time series "
            "per modality; TerraLens feeds one date. Pick a single-date checkpoint."
        )
    raw_mods = model_args.get("backbone_modalities") or ["S2L2A"]
    input_keys: dict[Modality, str] = {}
    for name in raw_mods:
        mod = terratorch_modality(name) if isinstance(name, str) else None
        if mod is None:
            raise CheckpointError(
                f"The checkpoint takes input modality {name!r}, which TerraLens cannot supply "
                f"(it loads {[m.value for m in INPUT_KEYS]!r})."
            )
        input_keys[mod] = name
    raw_bands = model_args.get("backbone_bands") or {}
    bands = {mod: _band_names(mod, raw_bands.get(key, raw_bands.get(mod.value)))
             for mod, key in input_keys.items()}
    tim = model_args.get("backbone_tim_modalities")
    if tim is None:
        tim = ["LULC"] if backbone.endswith("_tim") else []
    num_classes = int(model_args["num_classes"])
    names = hparams.get("class_names")
    if names is not None and len(names) != num_classes:
        raise CheckpointError(
            f"The checkpoint names {len(names)} classes ({list(names)!r}) but predicts "
            f"{num_classes}."
        )
    class_names = tuple(str(n) for n in names) if names else tuple(
        f"class {i}" for i in range(num_classes))
    dm = ckpt.get("datamodule_hyper_parameters") or {}
    means = _stats(dm.get("means"), input_keys, bands, "means")
    stds = _stats(dm.get("stds"), input_keys, bands, "stds")
    if set(means) != set(stds):
        means, stds = {}, {}
    return TimCheckpointInfo(
        path=str(path), source=source, backbone=backbone, input_keys=input_keys, bands=bands,
        tim_modalities=tuple(str(t) for t in tim), class_names=class_names,
        checkpoint_means=means, checkpoint_stds=stds, model_args=model_args,
    )


def _standardisation(info: TimCheckpointInfo) -> tuple[
        dict[Modality, np.ndarray], dict[Modality, np.ndarray], str]:
    if info.checkpoint_means:
        return ({m: np.asarray(v, np.float32) for m, v in info.checkpoint_means.items()},
                {m: np.asarray(v, np.float32) for m, v in info.checkpoint_stds.items()},
                "checkpoint data module")
    from inference.terratorch_import import import_terratorch

    import_terratorch()
    from terratorch.models.backbones.terramind.model import terramind_register as reg

    means, stds = {}, {}
    for mod, bands in info.bands.items():
        full = MODALITY_INFO[mod].bands
        idx = [full.index(b) for b in bands]
        means[mod] = np.asarray(reg.v1_pretraining_mean[INPUT_KEYS[mod]], np.float32)[idx]
        stds[mod] = np.asarray(reg.v1_pretraining_std[INPUT_KEYS[mod]], np.float32)[idx]
    return means, stds, "TerraMind v1 pre-training statistics"


def load_tim_checkpoint(
    path_or_repo_id: str | Path,
    *,
    device: torch.device | str = "auto",
    weights_dir: str | Path | None = None,
) -> TimModel:
    """Load a fine-tuned TerraMind segmentation checkpoint, offline.

    Args:
        path_or_repo_id: A Lightning ``.ckpt`` (``terratorch fit``), a folder holding one, or a
            Hugging Face repo id (e.g. ``ibm-esa-geospatial/TerraMind-base-Flood``), fetched
            through the hub cache.
        device: ``torch.device`` or a name for :func:`inference.devices.resolve_device`.
        weights_dir: Local folder searched for a repo id's files before the hub.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        CheckpointError: not a usable TerraMind segmentation checkpoint.
        WeightsUnavailableError: a hub repo that is neither cached nor reachable.
        OutOfMemoryError: the model does not fit on the device.
    """
    import torch

    info = read_tim_checkpoint(path_or_repo_id, weights_dir=weights_dir)
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    from inference.terratorch_import import import_terratorch

    import_terratorch()
    from terratorch.tasks import SemanticSegmentationTask

    model_args = dict(info.model_args) | {"backbone_pretrained": False}
    model_args.pop("backbone_ckpt_path", None)
    with oom_as_error(f"loading checkpoint {info.path}", device=dev), warnings.catch_warnings():
        # Expected while rebuilding: the backbone is not pre-trained (its weights come from
        # the checkpoint), and Lightning notes hyper-parameter overrides.
        warnings.filterwarnings("ignore", message=".*not pre-trained.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
        try:
            task = SemanticSegmentationTask.load_from_checkpoint(
                info.path, map_location=dev, model_args=model_args, strict=True,
            )
        except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"Cannot rebuild the model of checkpoint {info.path!r} with terratorch "
                f"{terratorch_version()}: {err}"
            ) from err
    task = task.to(dev).eval()
    encoder = getattr(task.model, "encoder", None)
    mapping = getattr(encoder, "mod_name_mapping", {}) or {}
    for mod, key in info.input_keys.items():
        if mapping and mapping.get(key) != INPUT_KEYS[mod]:
            raise CheckpointError(
                f"The backbone reads input {key!r} as {mapping.get(key)!r}, expected "
                f"{INPUT_KEYS[mod]!r}."
            )
    means, stds, source = _standardisation(info)
    return TimModel(
        module=task, registry_name=info.backbone, device=dev, weights_label=info.source,
        untrained=False, info=info, means=means, stds=stds, standardisation=source,
    )


def required_inputs(tim_model: TimModel | TimCheckpointInfo) -> set[Modality]:
    """The input modalities a checkpoint needs."""
    return set(tim_model.modalities)


def check_inputs(
    tim_model: TimModel | TimCheckpointInfo,
    available: set[Modality] | Sequence[Modality],
    *,
    within_days: int = 6,
) -> None:
    """Raise a clear error when an input the checkpoint needs was not loaded.

    Args:
        tim_model: The loaded checkpoint (or its description).
        available: Modalities loaded for the AOI.
        within_days: Days around the Sentinel-2 date suggested for a Sentinel-1 search.

    Raises:
        CheckpointError: some needed modality is missing; the message says what to load.
    """
    have = {Modality(str(m)) for m in available}
    missing = [m for m in tim_model.modalities if m not in have]
    if not missing:
        return
    advice = []
    for mod in missing:
        if mod in (Modality.S1GRD, Modality.S1RTC):
            other = Modality.S1RTC if mod is Modality.S1GRD else Modality.S1GRD
            collection = "sentinel-1-rtc" if mod is Modality.S1RTC else "sentinel-1-grd"
            if other in have:
                advice.append(
                    f"it was trained on {mod.value}, but a {other.value} scene was loaded — "
                    f"load a {collection} scene instead"
                )
            else:
                advice.append(
                    f"no Sentinel-1 scene was loaded — search {collection} for one within "
                    f"{within_days} days of the Sentinel-2 date and load it too"
                )
        elif mod is Modality.DEM:
            advice.append("no elevation model was loaded — load cop-dem-glo-30 for the AOI")
        elif mod is Modality.S2L1C:
            advice.append("it needs Sentinel-2 L1C (top of atmosphere); L2A cannot stand in")
        else:
            advice.append(f"no {mod.value} scene was loaded for the AOI")
    raise CheckpointError(
        f"This checkpoint needs {', '.join(m.value for m in missing)}; " + "; ".join(advice)
        + f" (loaded: {sorted(m.value for m in have)!r})."
    )


__all__ = [
    "INPUT_KEYS",
    "TimCheckpointInfo",
    "TimModel",
    "check_inputs",
    "load_tim_checkpoint",
    "read_tim_checkpoint",
    "required_inputs",
    "resolve_checkpoint",
    "terratorch_modality",
]
