"""TiM segmentation: fine-tuned TerraMind "Thinking in Modalities" checkpoints over any AOI.

Two ways to segment with TerraMind live in TerraLens:

* **Zero-shot water** (:func:`zero_shot_water`, implemented in :mod:`inference.water` and
  re-exported here): TerraMind generates land cover from Sentinel-2 and water is read off it.
* **Fine-tuned checkpoints** (this module): a terratorch ``SemanticSegmentationTask`` Lightning
  checkpoint (what ``terratorch fit`` writes) whose backbone is ``terramind_v1_*_tim`` (or a
  plain ``terramind_v1_*``). A TiM backbone first generates its TiM modality (e.g. LULC) as
  tokens from the inputs and encodes both; the decoder head then predicts the classes.

Loading (:func:`load_tim_checkpoint`) is offline-safe: the backbone is rebuilt with
``backbone_pretrained=False`` (so terratorch never downloads the pre-trained weights) and every
weight — encoder, TiM generator, tokenizers, decoder, head — comes from the checkpoint.

Standardisation: the model expects standardised inputs (the data module normalised them in
training). The means/stds are taken from the checkpoint's data-module hyper-parameters when
present, else TerraMind's pre-training statistics held by terratorch
(``v1_pretraining_mean``/``_std``). Sentinel-2 inputs are offset-corrected DN as the scene loader
returns them; a checkpoint trained on data still carrying the +1000 offset sees a 1000 DN shift.

The TiM intermediate: the tokens the backbone generated are caught on their way into the
encoder (a forward pre-hook on the TiM modality's embedding layer) and decoded with the
checkpoint's own tokenizer. For LULC this gives the ``TIM_LULC`` ``[G]`` layer — the land cover
the model "thought" before segmenting. Other TiM modalities (S1, DEM, NDVI) need a diffusion
decoder and are not decoded (the layer list says so in ``tim_not_decoded``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.errors import CheckpointError, InvalidRequestError, WeightsUnavailableError
from inference.generate import batch_seed
from inference.modalities import LULC_CLASSES, MODALITY_INFO, Modality
from inference.models import (
    LoadedModel,
    autocast_dtype,
    oom_as_error,
    resolve_device,
    terratorch_version,
)
from inference.tiling import CancelFn, ProgressFn, tiled_apply
from inference.water import WATER_CLASSES, WATER_NODATA, water_from_lulc, zero_shot_water

if TYPE_CHECKING:
    import torch
    import xarray as xr

logger = logging.getLogger(__name__)

PREDICTION = "PREDICTION"
PREDICTION_PROB = "PREDICTION_PROB"
#: Class value written where an input had no data.
PREDICTION_NODATA = 255
#: Prefix of decoded TiM intermediate layers (``TIM_LULC``).
TIM_PREFIX = "TIM_"
#: Input attrs copied onto every output (provenance).
PROVENANCE_ATTRS = ("scene_id", "collection", "datetime", "offset_applied")

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


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, numpy and torch for TerraMind's samplers; restore afterwards.

    TerraMind has no seed argument: its token samplers draw from ``random`` and torch's global
    generator. The caller's RNG states are restored on exit.
    """
    import torch

    py, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------------
# Checkpoints


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
        folder = snapshot_download(
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
    found = _pick_checkpoint(Path(folder), f"hub repo {text!r}")
    return found, f"hub:{text}"


def _torch_load(path: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not zip-format: no mmap
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
            raise CheckpointError(f"Cannot read checkpoint {str(path)!r}: {err}") from err
    except Exception as err:  # noqa: BLE001 - pickle/zip/EOF errors for foreign files
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r} as a weights-only torch file ({err}); "
            "pass a Lightning checkpoint written by `terratorch fit`."
        ) from err


def _band_names(mod: Modality, raw: Any) -> tuple[str, ...]:
    """TerraLens band names for a checkpoint's band list (terratorch or TerraLens spelling)."""
    full = MODALITY_INFO[mod].bands
    if raw is None:
        return full
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
        device: ``torch.device`` or a name for :func:`inference.models.resolve_device`.
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


# ----------------------------------------------------------------------------------------------
# Segmentation


def _stack_inputs(tim_model: TimModel, inputs: Mapping[Modality, xr.DataArray]
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, slice]], xr.DataArray]:
    """Standardised ``[C, H, W]`` stack, valid mask and per-input channel slices."""
    import rioxarray  # noqa: F401

    ref: xr.DataArray | None = None
    parts, layout, valid, start = [], [], None, 0
    for mod in tim_model.modalities:
        da = inputs[mod]
        if tuple(da.dims) != ("band", "y", "x"):
            raise InvalidRequestError(
                f"{mod.value} input must have dims ('band', 'y', 'x'), got {tuple(da.dims)!r}."
            )
        if da.rio.crs is None:
            raise InvalidRequestError(f"{mod.value} input has no CRS: write one with rio.")
        names = [str(b) for b in da.coords["band"].values] if "band" in da.coords else []
        wanted = list(tim_model.bands[mod])
        lacking = [b for b in wanted if b not in names]
        if lacking:
            raise InvalidRequestError(
                f"{mod.value} input lacks bands {lacking!r} (has {names!r}); the checkpoint "
                f"needs {wanted!r}."
            )
        if ref is None:
            ref = da
        elif (da.shape[1:] != ref.shape[1:] or da.rio.crs != ref.rio.crs
              or not da.rio.transform().almost_equals(ref.rio.transform(), precision=1e-6)):
            raise InvalidRequestError(
                f"{mod.value} input is on another grid ({da.shape[1:]!r}, {da.rio.crs}) than "
                f"{tim_model.modalities[0].value} ({ref.shape[1:]!r}, {ref.rio.crs}): reproject "
                "it onto the same grid first."
            )
        data = np.asarray(da.sel(band=wanted).values, dtype=np.float32)
        ok = np.isfinite(data).all(axis=0)
        valid = ok if valid is None else valid & ok
        mean = tim_model.means[mod][:, None, None]
        std = tim_model.stds[mod][:, None, None]
        # No-data pixels become the mean (0 after standardising) and are masked in outputs.
        data = np.where(np.isfinite(data), data, mean)
        parts.append(((data - mean) / std).astype(np.float32))
        layout.append((tim_model.info.input_keys[mod], slice(start, start + len(wanted))))
        start += len(wanted)
    if ref is None or valid is None:  # pragma: no cover - modalities is never empty
        raise CheckpointError("The checkpoint declares no input modality.")
    if not valid.any():
        raise InvalidRequestError("The inputs have no valid pixel in this AOI: pick another scene.")
    return np.concatenate(parts), valid, layout, ref


class _ChipSegmenter:
    """The chip function: standardised stacked inputs → class probabilities (+ TiM LULC)."""

    def __init__(self, tim_model: TimModel, layout: list[tuple[str, slice]], seed: int,
                 decode_tim: tuple[str, ...]) -> None:
        self.model = tim_model
        self.layout = layout
        self.seed = seed
        self.decode_tim = decode_tim

    def __call__(self, batch: np.ndarray, indices: Sequence[int]) -> np.ndarray:
        import torch

        task = self.model.module
        if task is None:
            raise InvalidRequestError("The checkpoint was unloaded; load it again.")
        dev = self.model.device
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev)
        inputs = {key: x[:, sl] for key, sl in self.layout}
        encoder = task.model.encoder
        captured: dict[str, Any] = {}
        hooks = []
        for name in self.decode_tim:
            key = encoder.mod_name_mapping[name]

            def grab(_module: Any, args: tuple[Any, ...], key: str = key) -> None:
                captured[key] = args[0]

            hooks.append(encoder.encoder_embeddings[key].register_forward_pre_hook(grab))
        cast = autocast_dtype(dev)
        amp = torch.autocast(dev.type, dtype=cast) if cast else contextlib.nullcontext()
        what = f"segmenting {len(batch)} chips with {self.model.registry_name}"
        try:
            with seeded_rng(batch_seed(self.seed, int(indices[0]))), torch.no_grad(), amp, \
                    oom_as_error(what, device=dev):
                logits = task.model(inputs).output.float()
                parts = [torch.softmax(logits, dim=1)]
                for name in self.decode_tim:
                    key = encoder.mod_name_mapping[name]
                    tokens = captured[key]
                    b, _, h, w = batch.shape
                    tokenizer = encoder.tokenizer[key]
                    grid = tokens.reshape(b, h // tokenizer.patch_size, w // tokenizer.patch_size)
                    decoded = tokenizer.decode_tokens(grid, image_size=(h, w)).float()
                    parts.append(torch.softmax(decoded, dim=1))
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat(parts, dim=1).cpu().numpy()


def _on_grid(data: np.ndarray, like: xr.DataArray, bands: Sequence[str],
             attrs: dict[str, Any]) -> xr.DataArray:
    import xarray as xr

    da = xr.DataArray(
        data, dims=("band", "y", "x"),
        coords={"band": list(bands), "y": like.coords["y"].values, "x": like.coords["x"].values},
        attrs=attrs,
    )
    return da.rio.write_crs(like.rio.crs).rio.write_transform(like.rio.transform())


def segment(
    tim_model: TimModel,
    inputs: Mapping[Modality, xr.DataArray],
    *,
    seed: int = 0,
    chip: int = 224,
    overlap: int = 32,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> dict[str, xr.DataArray]:
    """Segment an AOI with a fine-tuned checkpoint, tiled with blended seams.

    Args:
        tim_model: From :func:`load_tim_checkpoint`.
        inputs: One ``[band, y, x]`` DataArray per modality the checkpoint needs (extra ones
            are ignored), all on the same grid (shape, CRS, transform). NaN marks no data.
        seed: Seed of the TiM token sampler (the same seed reproduces the same result).
        chip: Chip side in pixels (multiple of 16; 224 is what TerraMind was trained on).
        overlap: Pixels shared by neighbouring chips (blended).
        batch_size: Chips per model call.
        progress: ``progress(chips_done, chips_total)``.
        cancel: Return True to stop with :class:`RunCancelledError`.

    Returns:
        ``PREDICTION`` ([P], uint8 class map, 255 where an input had no data, ``class_names``
        attr), ``PREDICTION_PROB`` ([P], float32 per-class probabilities, NaN no data) and,
        for a LULC TiM backbone, ``TIM_LULC`` ([G], uint8 LULC classes the backbone generated),
        each on exactly the grid of the inputs.

    Raises:
        CheckpointError: an input the checkpoint needs is missing.
        InvalidRequestError: bad inputs or tiling parameters.
        OutOfMemoryError: lower ``batch_size``.
        RunCancelledError: cancelled.
    """
    check_inputs(tim_model, set(inputs))
    if isinstance(chip, bool) or not isinstance(chip, int) or chip < 32 or chip % 16:
        raise InvalidRequestError(f"chip must be a multiple of 16 pixels ≥ 32, got {chip!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidRequestError(f"seed must be a non-negative integer, got {seed!r}.")
    stacked, valid, layout, ref = _stack_inputs(tim_model, inputs)
    tim = tuple(t for t in tim_model.tim_modalities if "lulc" in t.lower())
    skipped = [t for t in tim_model.tim_modalities if t not in tim]
    fn = _ChipSegmenter(tim_model, layout, seed, tim)
    probs = tiled_apply(fn, stacked, chip=chip, overlap=overlap, batch_size=batch_size,
                        progress=progress, cancel=cancel)
    k = tim_model.num_classes
    base = {key: ref.attrs[key] for key in PROVENANCE_ATTRS if key in ref.attrs}
    base |= {
        "model": tim_model.registry_name,
        "weights": tim_model.weights_label,
        "checkpoint": tim_model.weights_label,
        "untrained": bool(tim_model.untrained),
        "seed": int(seed),
        "standardisation": tim_model.standardisation,
        "inputs": json.dumps([m.value for m in tim_model.modalities]),
        "input_scenes": json.dumps({m.value: str(inputs[m].attrs.get("scene_id", ""))
                                    for m in tim_model.modalities}),
        "tim_modalities": json.dumps(list(tim_model.tim_modalities)),
        "terratorch_version": terratorch_version(),
    }
    if skipped:
        base["tim_not_decoded"] = json.dumps(skipped)
    names = json.dumps(list(tim_model.class_names))
    pred_attrs = base | {"kind": "prediction", "synthetic": False, "class_names": names}
    classes = np.where(valid, probs[:k].argmax(axis=0), PREDICTION_NODATA).astype(np.uint8)
    out = {
        PREDICTION: _on_grid(classes[None], ref, [PREDICTION], pred_attrs | {
            "modality": PREDICTION, "units": "class",
            "long_name": f"Segmentation by fine-tuned {tim_model.registry_name}",
        }).rio.write_nodata(PREDICTION_NODATA),
        PREDICTION_PROB: _on_grid(
            np.where(valid, probs[:k], np.nan).astype(np.float32), ref,
            list(tim_model.class_names), pred_attrs | {
                "modality": PREDICTION_PROB, "units": "probability",
                "long_name": "Class probabilities of the fine-tuned checkpoint",
            }),
    }
    start = k
    for name in tim:
        lulc = probs[start:start + len(LULC_CLASSES)]
        start += len(LULC_CLASSES)
        layer = f"{TIM_PREFIX}{Modality.LULC.value}"
        out[layer] = _on_grid(
            np.where(valid, lulc.argmax(axis=0), 0).astype(np.uint8)[None], ref,
            [Modality.LULC.value], base | {
                "kind": "generated", "synthetic": True, "modality": layer, "units": "class",
                "long_name": f"Land cover the TiM backbone generated ({name}) before segmenting",
                "class_names": json.dumps([c.name for c in LULC_CLASSES]),
            })
    return out


__all__ = [
    "INPUT_KEYS",
    "PREDICTION",
    "PREDICTION_NODATA",
    "PREDICTION_PROB",
    "TIM_PREFIX",
    "WATER_CLASSES",
    "WATER_NODATA",
    "TimCheckpointInfo",
    "TimModel",
    "check_inputs",
    "load_tim_checkpoint",
    "read_tim_checkpoint",
    "required_inputs",
    "resolve_checkpoint",
    "seeded_rng",
    "segment",
    "terratorch_modality",
    "water_from_lulc",
    "zero_shot_water",
]
