"""Where TerraMind weights come from: the hub, a local folder, or nowhere (untrained).

A weight source string (``TERRALENS_WEIGHTS``) is ``"hub"``, a local directory, or
``"untrained"``. Files are named as on the Hugging Face hub, with the repo ids and file names
taken from terratorch's own tables (``pretrained_weights`` in its TerraMind registers), so the
hub, a pre-filled ``HF_HOME`` cache and a copied folder all hold the same files.

The hub host is probed with a plain TCP connection first (``HUB_PROBE_TIMEOUT_S``): when it is
unreachable only the local cache is consulted, so an offline machine fails in well under a
second instead of sitting in ``huggingface_hub``'s retry loop (≈24 s per file here).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from inference.errors import InvalidRequestError, WeightsUnavailableError

logger = logging.getLogger(__name__)

WEIGHTS_HUB = "hub"
WEIGHTS_UNTRAINED = "untrained"
#: Seconds to wait for a TCP connection to the hub before treating it as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0

_HUB_ORG = "ibm-esa-geospatial"


@dataclass(frozen=True)
class WeightFile:
    """One file of a model's weights, named as on the Hugging Face hub.

    Attributes:
        repo_id: Hub repository, e.g. ``ibm-esa-geospatial/TerraMind-1.0-base``.
        filename: File inside the repository, e.g. ``TerraMind_v1_base.pt``.
        key: What the file fills: ``"model"`` or the tokenizer key in the model
            (e.g. ``"tok_sen1grd@224"``, ``"coords"``).
    """

    repo_id: str
    filename: str
    key: str

    @property
    def repo_name(self) -> str:
        """The repository name without the organisation."""
        return self.repo_id.rsplit("/", 1)[-1]



def weights_label(weights: str, size: str) -> str:
    """Provenance label for a weight source (the ``weights`` attr of outputs).

    Args:
        weights: ``hub``, a local directory, or ``untrained``.
        size: Model size (tiny, small, base, large).

    Returns:
        ``hub:<repo>``, ``local:<absolute dir>`` or ``untrained``.
    """
    kind = weights_kind(weights)
    if kind == WEIGHTS_UNTRAINED:
        return WEIGHTS_UNTRAINED
    if kind == WEIGHTS_HUB:
        return f"hub:{_HUB_ORG}/TerraMind-1.0-{str(size).lower()}"
    return f"local:{Path(weights).expanduser().resolve()}"


def weights_kind(weights: str) -> str:
    """``"hub"``, ``"untrained"`` or ``"local"`` for a weight source string."""
    value = (weights or "").strip()
    if value.lower() in {WEIGHTS_HUB, WEIGHTS_UNTRAINED}:
        return value.lower()
    if not value:
        raise InvalidRequestError(
            "No weight source given: set TERRALENS_WEIGHTS to 'hub', 'untrained' or a directory."
        )
    return "local"


def _tokenizer_key(name: str, *, as_input: bool) -> str | None:
    """terratorch's tokenizer key for a modality name, None when it needs no tokenizer.

    Mirrors ``build_modality_embeddings``/``build_output_modality_embeddings``: raw image inputs
    (S2, S1, DEM) are patch-embedded, everything generated or conditioned on is tokenized.
    """
    n = name.lower().replace("s2", "sen2").replace("s1", "sen1").replace("location", "coords")
    if "coord" in n:
        return "coords"
    if "lulc" in n:
        return "tok_lulc@224"
    if "ndvi" in n:
        return "tok_ndvi@224"
    if as_input:
        return None
    if "sen2" in n:
        return "tok_sen2l2a@224"
    if "sen1rtc" in n:
        return "tok_sen1rtc@224"
    if "sen1" in n:
        return "tok_sen1grd@224"
    if "dem" in n:
        return "tok_dem@224"
    return None


def tokenizer_file(key: str) -> WeightFile:
    from terratorch.models.backbones.terramind.model.terramind_register import tokenizer_dict
    from terratorch.models.backbones.terramind.tokenizer import tokenizer_register

    builder = tokenizer_dict["v1"].get(key)
    if builder is None:
        raise InvalidRequestError(f"TerraMind v1 has no tokenizer for {key!r}.")
    entry = tokenizer_register.pretrained_weights[builder.__name__]
    return WeightFile(entry["hf_hub_id"], entry["hf_hub_filename"], key)


def _variant(registry_name: str) -> str:
    """``terramind_v1_base_generate`` → ``terramind_v1_base`` (key of terratorch's weights)."""
    for suffix in ("_generate", "_encdec", "_tim"):
        if registry_name.endswith(suffix):
            return registry_name[: -len(suffix)]
    return registry_name


def required_weight_files(
    registry_name: str,
    *,
    modalities: Iterable[str] = (),
    output_modalities: Iterable[str] = (),
    tim_modalities: Iterable[str] = (),
) -> list[WeightFile]:
    """Every file a TerraMind model needs: its own checkpoint and one per tokenizer.

    Args:
        registry_name: e.g. ``terramind_v1_base_generate`` or ``terramind_v1_base_tim``.
        modalities: Input modalities (raw images need no tokenizer; LULC/NDVI/coords do).
        output_modalities: Generated modalities (each needs its tokenizer).
        tim_modalities: TiM modalities (each needs its tokenizer).

    Returns:
        The files, the model checkpoint first.
    """
    from terratorch.models.backbones.terramind.model.terramind_register import pretrained_weights

    variant = _variant(registry_name)
    if variant not in pretrained_weights:
        raise InvalidRequestError(f"No published weights for TerraMind model {registry_name!r}.")
    entry = pretrained_weights[variant]
    files = [WeightFile(entry["hf_hub_id"], entry["hf_hub_filename"], "model")]
    keys: list[str] = []
    for name in modalities:
        keys.append(_tokenizer_key(str(name), as_input=True) or "")
    for name in (*output_modalities, *tim_modalities):
        keys.append(_tokenizer_key(str(name), as_input=False) or "")
    for key in dict.fromkeys(k for k in keys if k):
        files.append(tokenizer_file(key))
    return files


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub endpoint opens within a few seconds."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # cannot probe through a proxy: let huggingface_hub try
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


#: Older private name, kept for callers that imported it.
_hub_reachable = hub_reachable


def _how_to_provide(files: list[WeightFile], weights: str) -> str:
    names = ", ".join(f"{f.filename} (hub repo {f.repo_id})" for f in files)
    return (
        f"Missing: {names}. To provide them: set TERRALENS_WEIGHTS to a folder holding these "
        "files under the same names; or pre-fill the Hugging Face cache (HF_HOME) on a machine "
        "with internet (e.g. `hf download <repo> <file>`) and copy it here; or run with internet "
        "access and TERRALENS_WEIGHTS=hub. For a demo without weights, "
        f"TERRALENS_WEIGHTS=untrained (outputs are noise). Weight source was {weights!r}."
    )


def resolve_weight_files(files: list[WeightFile], weights: str) -> dict[str, Path]:
    """Find every file on disk (downloading from the hub when ``weights == "hub"``).

    Args:
        files: From :func:`required_weight_files`.
        weights: ``hub`` or a local directory.

    Returns:
        Paths keyed by :attr:`WeightFile.key`.

    Raises:
        WeightsUnavailableError: some files are missing; the message lists all of them and
            says how to provide them.
    """
    kind = weights_kind(weights)
    found: dict[str, Path] = {}
    missing: list[WeightFile] = []
    if kind == "local":
        root = Path(weights).expanduser()
        if not root.is_dir():
            raise WeightsUnavailableError(
                f"TERRALENS_WEIGHTS={weights!r} is not a directory. "
                + _how_to_provide(files, weights)
            )
        for f in files:
            candidates = (root / f.filename, root / f.repo_name / f.filename)
            hit = next((p for p in candidates if p.is_file()), None)
            if hit is None:
                missing.append(f)
            else:
                found[f.key] = hit
    elif kind == WEIGHTS_HUB:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        offline = not hub_reachable()
        for f in files:
            try:
                path = hf_hub_download(f.repo_id, f.filename, local_files_only=offline)
            except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
                logger.info("weight file %s/%s unavailable: %s", f.repo_id, f.filename, err)
                missing.append(f)
                # Not in the cache and the hub did not answer: do not wait on it again.
                offline = offline or isinstance(err, LocalEntryNotFoundError)
            else:
                found[f.key] = Path(path)
        if missing and offline:
            home = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise WeightsUnavailableError(
                "TerraMind weights not found: the Hugging Face hub is unreachable (offline) and "
                f"they are not in the local cache (HF_HOME={home!r}). "
                + _how_to_provide(missing, weights)
            )
    else:
        raise InvalidRequestError(f"Weight source {weights!r} has no files to resolve.")
    if missing:
        raise WeightsUnavailableError(
            f"TerraMind weights not found in {weights!r}. " + _how_to_provide(missing, weights)
        )
    return found


def _torch_load(path: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format checkpoint: mmap unsupported
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError) as err:
        raise WeightsUnavailableError(
            f"Cannot read weight file {str(path)!r} ({err}): re-download it or fix "
            "TERRALENS_WEIGHTS."
        ) from err
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"Weight file {str(path)!r} holds no state dict.")
    return state


def load_weights(module: Any, paths: dict[str, Path]) -> None:
    """Load resolved files into a freshly built module, as terratorch's pretrained path does.

    The model checkpoint goes through terratorch's own filter (``checkpoint_filter_fn_generate``,
    ``_tim`` or the ViT one) and ``strict=True``; each tokenizer gets its file.

    Raises:
        WeightsUnavailableError: a file is unreadable or does not fit the module.
    """
    from terratorch.models.backbones.terramind.model import terramind_register as reg
    from terratorch.models.backbones.terramind.model.terramind_generation import (
        TerraMindGeneration,
    )
    from terratorch.models.backbones.terramind.model.terramind_tim import TerraMindTiM

    state = _torch_load(paths["model"])
    if isinstance(module, TerraMindGeneration):
        state = reg.checkpoint_filter_fn_generate(state, module)
    elif isinstance(module, TerraMindTiM):
        state = reg.checkpoint_filter_fn_tim(state, module)
    else:
        state = reg.checkpoint_filter_fn(state, module)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"Weight file {str(paths['model'])!r} does not fit this model ({err}): check that "
            "it is the TerraMind v1 checkpoint of the chosen size."
        ) from err
    tokenizers = getattr(module, "tokenizer", {}) or {}
    for key, tok in tokenizers.items():
        path = paths.get(key)
        if path is None:
            raise WeightsUnavailableError(f"No weight file resolved for tokenizer {key!r}.")
        if key == "coords":
            from tokenizers import Tokenizer

            tok.text_tokenizer = Tokenizer.from_file(str(path))
            continue
        try:
            tok.load_state_dict(_torch_load(path), strict=True)
        except RuntimeError as err:
            raise WeightsUnavailableError(
                f"Tokenizer file {str(path)!r} does not fit tokenizer {key!r} ({err})."
            ) from err
