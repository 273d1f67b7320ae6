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
import threading
import warnings
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
    """The hub file of tokenizer ``key`` (e.g. ``"tok_lulc@224"``), from terratorch's table."""
    from inference.terratorch_import import import_terratorch

    import_terratorch()
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
    from inference.terratorch_import import import_terratorch

    import_terratorch()
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


# ----------------------------------------------------------------------------------------------
# Reading files: refuse what is not a checkpoint, and record what was read


@dataclass(frozen=True)
class WeightRecord:
    """Provenance of one weight file that went into a model.

    Attributes:
        key: What the file filled (``"model"`` or a tokenizer key).
        filename: The file's name (as on the hub).
        sha256: Hex digest of the file's bytes.
        revision: Hub commit the file came from (``None`` for a local folder).
    """

    key: str
    filename: str
    sha256: str
    revision: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The record as a plain dict (for JSON provenance), without empty fields."""
        out = {"key": self.key, "file": self.filename, "sha256": self.sha256}
        if self.revision:
            out["revision"] = self.revision
        return out


_HEX = frozenset("0123456789abcdef")
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def hub_revision(path: Path) -> str | None:
    """The hub commit of a file in a Hugging Face cache (``…/snapshots/<commit>/<file>``)."""
    parts = Path(path).parts
    if len(parts) >= 3 and parts[-3] == "snapshots" and len(parts[-2]) == 40:
        return parts[-2]
    return None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for the life of the process.

    A file in a Hugging Face cache is a link to ``blobs/<sha256>`` (large files are stored
    under their SHA-256), so its digest is read from the link target without hashing.
    """
    import hashlib

    target = Path(path).resolve()
    stat = target.stat()
    memo = (str(target), stat.st_size, stat.st_mtime_ns)
    with _DIGEST_LOCK:
        if memo in _DIGESTS:
            return _DIGESTS[memo]
    name = target.name
    if target.parent.name == "blobs" and len(name) == 64 and set(name) <= _HEX:
        digest = name
    else:
        with target.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[memo] = digest
    return digest


def weight_records(paths: dict[str, Path], *, threads: int = 2) -> tuple[WeightRecord, ...]:
    """:class:`WeightRecord` of every resolved file (hashed in parallel threads)."""
    from concurrent.futures import ThreadPoolExecutor

    keys = list(paths)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        digests = list(pool.map(lambda k: file_sha256(paths[k]), keys))
    return tuple(
        WeightRecord(k, paths[k].name, d, hub_revision(paths[k]))
        for k, d in zip(keys, digests, strict=True)
    )


def _unreadable(path: Path, err: BaseException) -> WeightsUnavailableError:
    # torch's unpickling errors advise weights_only=False (arbitrary code execution): never
    # pass that on; name the error class only.
    lines = str(err).splitlines()
    detail = lines[0] if lines and "weights_only" not in str(err) else "no tensor data"
    return WeightsUnavailableError(
        f"Weight file {path.name!r} ({str(path)!r}) is not a readable TerraMind checkpoint "
        f"({type(err).__name__}: {detail}): it "
        "is empty, truncated or not a torch checkpoint. Re-download it (from the hub repo named "
        "in the TerraMind docs, or `hf download`), or point TERRALENS_WEIGHTS at a folder with "
        "intact files."
    )


def torch_load(path: Path) -> dict[str, Any]:
    """Load a checkpoint's state dict (memory-mapped when the file allows), tensors only.

    Raises:
        WeightsUnavailableError: the file is missing, empty, truncated, not a torch
            checkpoint, or holds no state dict (never a raw unpickling error).
    """
    import pickle


    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise EOFError("the file is empty")
        with warnings.catch_warnings():
            # A non-checkpoint that looks like a pickle warns before it fails: the error says it.
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            state = _load_state(path)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        raise _unreadable(path, err) from err
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise WeightsUnavailableError(
            f"Weight file {path.name!r} ({str(path)!r}) holds no state dict (a "
            f"{type(state).__name__}): it is not a TerraMind checkpoint."
        )
    return state


def _load_state(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format checkpoint (mmap needs one): read it whole
        return torch.load(path, map_location="cpu", weights_only=True)


#: Older private name, kept for callers that imported it.
_torch_load = torch_load


def check_coverage(
    expected: dict[str, Any], state: dict[str, Any], path: Path, *, what: str,
    prefixes: tuple[str, ...] = ("",),
) -> None:
    """Refuse a file that would leave any tensor of the built part uninitialised.

    Args:
        expected: The part's own state dict (name → tensor, meta tensors allowed).
        state: The file's state dict.
        path: The file (for the message).
        what: The part it fills, e.g. ``"terramind_v1_tiny_generate"`` or a tokenizer key.
        prefixes: Prefixes the file's keys may need to match ``expected`` (terratorch maps
            ``k`` to ``"sampler.model." + k`` for generation models).

    Keys of the file that the part does not have are fine: the hub checkpoint holds every
    modality's embeddings, a model built for fewer modalities uses some of them.

    Raises:
        WeightsUnavailableError: some tensors would be missing or have another shape; the
            message names the file and the counts.
    """
    filled: set[str] = set()
    mismatched: list[str] = []
    for key, value in state.items():
        for prefix in prefixes:
            name = prefix + key
            if name not in expected:
                continue
            if tuple(getattr(value, "shape", ())) == tuple(expected[name].shape):
                filled.add(name)
            else:
                mismatched.append(name)
    missing = [k for k in expected if k not in filled and k not in mismatched]
    bad = sorted(set(mismatched)) + missing
    if bad:
        raise WeightsUnavailableError(
            f"Weight file {path.name!r} ({str(path)!r}) does not fit {what}: it would leave "
            f"{len(bad)} of its {len(expected)} tensors uninitialised ({len(missing)} missing, "
            f"{len(set(mismatched))} of another shape; e.g. {bad[:3]}). Check that it is the "
            "TerraMind v1 file of the chosen model size, re-download it, or fix "
            "TERRALENS_WEIGHTS."
        )
