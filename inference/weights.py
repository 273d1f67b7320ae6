"""Where TerraMind weights come from: the hub, a local folder, or nowhere (untrained).

A weight source string (``TERRALENS_WEIGHTS``) is ``"hub"``, a local directory, or
``"untrained"``. Files are named as on the Hugging Face hub, with the repo ids and file names
taken from terratorch's own tables (``pretrained_weights`` in its TerraMind registers), so the
hub, a pre-filled ``HF_HOME`` cache and a copied folder all hold the same files.

The hub host is probed with a plain TCP connection first (``HUB_PROBE_TIMEOUT_S``): when it is
unreachable only the local cache is consulted, so an offline machine fails in well under a
second instead of sitting in ``huggingface_hub``'s retry loop (≈24 s per file here).

A download has two limits (:func:`hub_limits`): a time-out per hub request
(``TERRALENS_HUB_TIMEOUT``, for the metadata request and for each read of the file) and an
overall deadline for all the files of one model (``TERRALENS_HUB_DEADLINE``), so a hub that
trickles bytes cannot hold a run (or the Docker build) for ever.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

from inference.env import seconds_env
from inference.errors import InvalidRequestError, WeightsUnavailableError

logger = logging.getLogger(__name__)

WEIGHTS_HUB = "hub"
WEIGHTS_UNTRAINED = "untrained"
#: Seconds to wait for a TCP connection to the hub before treating it as unreachable.
HUB_PROBE_TIMEOUT_S = 3.0

_HUB_ORG = "ibm-esa-geospatial"

#: Seconds per hub request (metadata, and each read of a file) unless TERRALENS_HUB_TIMEOUT.
DEFAULT_HUB_TIMEOUT_S = 30.0
#: Seconds for all the files of one model unless TERRALENS_HUB_DEADLINE (base: 1.4 GB).
DEFAULT_HUB_DEADLINE_S = 3600.0

#: ``on_bytes(file name, bytes so far, total bytes or None)`` while a file downloads.
BytesFn = Callable[[str, int, "int | None"], None]


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


@dataclass(frozen=True)
class HubLimits:
    """How long a hub download may take.

    Attributes:
        request_s: Seconds per request (the metadata request, and each read of the file).
        deadline_s: Seconds for all the files of one :func:`resolve_weight_files` call.
    """

    request_s: float = DEFAULT_HUB_TIMEOUT_S
    deadline_s: float = DEFAULT_HUB_DEADLINE_S


def hub_limits() -> HubLimits:
    """The hub limits from ``TERRALENS_HUB_TIMEOUT`` and ``TERRALENS_HUB_DEADLINE`` (seconds).

    Raises:
        InvalidRequestError: a variable is not a finite positive number.
    """
    return HubLimits(
        request_s=seconds_env("TERRALENS_HUB_TIMEOUT", DEFAULT_HUB_TIMEOUT_S),
        deadline_s=seconds_env("TERRALENS_HUB_DEADLINE", DEFAULT_HUB_DEADLINE_S),
    )


class _DownloadCancelledError(Exception):
    """Raised inside a download thread whose deadline has passed."""


class _Transfer:
    """The ``tqdm_class`` given to ``hf_hub_download``: reports bytes, stops when cancelled."""

    def __init__(self, *, filename: str, cancel: threading.Event, on_bytes: BytesFn | None,
                 total: int | None = None, initial: int = 0, **_: Any) -> None:
        self.filename, self.cancel, self.on_bytes = filename, cancel, on_bytes
        self.total, self.n = total, initial

    def __enter__(self) -> _Transfer:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float | None = 1) -> None:
        """Count ``n`` more bytes; raise when the download's deadline has passed."""
        if self.cancel.is_set():
            raise _DownloadCancelledError(self.filename)
        self.n += int(n or 0)
        if self.on_bytes is not None:
            self.on_bytes(self.filename, self.n, self.total)

    def close(self) -> None:
        """Nothing to release (``tqdm`` API)."""


def _hub_download(f: WeightFile, *, offline: bool, limits: HubLimits, deadline_at: float,
                  on_bytes: BytesFn | None) -> str:
    """``hf_hub_download`` under a per-request time-out and an overall deadline.

    The download runs in a daemon thread; when the deadline passes first, the thread is told to
    stop at its next chunk and :class:`WeightsUnavailableError` is raised at once.
    """
    from huggingface_hub import constants, hf_hub_download

    if offline:
        return hf_hub_download(f.repo_id, f.filename, local_files_only=True)
    if not os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT"):  # the user's own setting wins
        constants.HF_HUB_DOWNLOAD_TIMEOUT = max(1, math.ceil(limits.request_s))
    cancel = threading.Event()
    transfer = functools.partial(_Transfer, filename=f.filename, cancel=cancel,
                                 on_bytes=on_bytes)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["path"] = hf_hub_download(f.repo_id, f.filename, etag_timeout=limits.request_s,
                                              tqdm_class=cast(Any, transfer))
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err

    worker = threading.Thread(target=work, name=f"hub-download-{f.filename}", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline_at - time.monotonic()))
    if worker.is_alive():
        cancel.set()
        raise WeightsUnavailableError(
            f"Downloading {f.repo_id}/{f.filename} from the Hugging Face hub did not finish "
            f"within {limits.deadline_s:g} s (TERRALENS_HUB_DEADLINE): the hub or the network "
            "is too slow. Raise TERRALENS_HUB_DEADLINE, or download the weights once with "
            "`terralens weights download` (or `hf download`) and point TERRALENS_WEIGHTS at them."
        )
    err = outcome.get("error")
    if isinstance(err, Exception) and not isinstance(err, OSError | WeightsUnavailableError):
        # huggingface_hub lets its HTTP client's errors through (a read that timed out on every
        # retry): the caller treats it like any other unreachable file.
        raise OSError(f"{type(err).__name__}: {err}") from err
    if err is not None:
        raise err
    return str(outcome["path"])


def resolve_weight_files(files: list[WeightFile], weights: str, *,
                         on_bytes: BytesFn | None = None,
                         limits: HubLimits | None = None) -> dict[str, Path]:
    """Find every file on disk (downloading from the hub when ``weights == "hub"``).

    Args:
        files: From :func:`required_weight_files`.
        weights: ``hub`` or a local directory.
        on_bytes: Told ``(file name, bytes so far, total)`` while a file downloads.
        limits: Hub time-out and deadline (default: :func:`hub_limits`).

    Returns:
        Paths keyed by :attr:`WeightFile.key`.

    Raises:
        WeightsUnavailableError: some files are missing (the message lists all of them and
            says how to provide them), or the hub download passed its deadline.
        InvalidRequestError: the hub limits in the environment are not valid.
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
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        limits = limits or hub_limits()
        deadline_at = time.monotonic() + limits.deadline_s
        offline = not hub_reachable()
        for f in files:
            try:
                path = _hub_download(f, offline=offline, limits=limits, deadline_at=deadline_at,
                                     on_bytes=on_bytes)
            except WeightsUnavailableError:
                raise  # the deadline passed: the other files would not fit in it either
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
