"""Filling a built model's tokenizers from their files, shared between models, in parallel.

A model built on ``meta`` (:func:`inference.loading.parameters_on_meta`) holds empty
tokenizers; :func:`load_tokenizers` replaces each with the tokenizer another model already
loaded from the same file onto the same device (:data:`inference.loading.TOKENIZERS`), or
fills it from its memory-mapped file. With ``workers > 1`` the files are read on helper
threads: unpickling holds the GIL, but the page-cache reads of a cold file and the copies to
a GPU do not, so two files overlap on two cores (``bench/coldstart.py`` shows the phases).
``progress`` (through :class:`inference.phases.Phases`) is told about every tokenizer from the
calling thread.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.errors import WeightsUnavailableError
from inference.loading import TOKENIZERS, load_part, uninitialised
from inference.phases import Phases

if TYPE_CHECKING:
    import torch


def tokenizer_phase(key: str) -> str:
    """The phase name of loading tokenizer ``key`` (as :class:`Phases` reports it)."""
    return f"loading tokenizer {key}"


def load_tokenizer(built: Any, key: str, path: Path, device: torch.device) -> Any:
    """The shared tokenizer for ``key`` from ``path`` on ``device``.

    Args:
        built: The model's tokenizer as built (on ``meta``); filled and shared when no other
            model holds one from the same file on the same device.
        key: The model's tokenizer key (``tok_lulc@224``, ``coords``...).
        path: Its weight file (the coordinate vocabulary for ``coords``).
        device: Where it runs.

    Returns:
        The tokenizer to put in the model (``built`` or the shared one).

    Raises:
        WeightsUnavailableError: the file is unreadable or does not fill the tokenizer.
    """
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


def _timed(built: Any, key: str, path: Path, device: torch.device) -> tuple[Any, float]:
    start = time.perf_counter()
    return load_tokenizer(built, key, path, device), time.perf_counter() - start


def load_tokenizers(tokenizers: Any, paths: dict[str, Path], device: torch.device, *,
                    phases: Phases, workers: int = 2) -> None:
    """Replace every entry of ``tokenizers`` (a model's ``ModuleDict``) with its loaded one.

    Args:
        tokenizers: ``module.tokenizer`` of a model built on ``meta``; changed in place.
        paths: Weight file of each tokenizer key.
        device: Where the tokenizers run.
        phases: Told ``loading tokenizer <key>`` as each is handed to a worker; its seconds
            are the worker's.
        workers: Threads reading files at once (1: one after the other, in this thread).

    Raises:
        WeightsUnavailableError: a file is unreadable or does not fit (the first in key order).
    """
    keys = list(tokenizers)
    if workers <= 1 or len(keys) <= 1:
        for key in keys:
            with phases(tokenizer_phase(key)):
                tokenizers[key] = load_tokenizer(tokenizers[key], key, paths[key], device)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="terralens-tok") as pool:
        futures = {}
        for key in keys:
            phases.announce(tokenizer_phase(key))
            futures[key] = pool.submit(_timed, tokenizers[key], key, paths[key], device)
        for key in keys:  # in key order, so that the first failure is always the same one
            loaded, took = futures[key].result()
            phases.add(tokenizer_phase(key), took)
            tokenizers[key] = loaded
