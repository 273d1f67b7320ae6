"""Building TerraMind without a random initialisation the weights overwrite, and sharing
tokenizers between models.

* :func:`parameters_on_meta` — while active *in the calling thread*, every ``nn.Parameter``
  registered is replaced by a ``meta`` tensor of the same shape and dtype (through torch's
  own ``register_module_parameter_registration_hook``): building base with four tokenizers
  allocates and initialises nothing (≈0.1 s instead of ≈40 s). Buffers stay real, so values
  computed at construction (sin-cos position embeddings, quantiser codebooks, diffusion
  schedules) are kept. Other threads building modules at the same time are not affected.
* :func:`load_part` — loads one file into one part (the transformer or a tokenizer) with
  ``load_state_dict(assign=True)`` from a memory-mapped checkpoint, after refusing a file that
  would leave any of the part's tensors uninitialised (:func:`inference.weights.check_coverage`).
* :func:`uninitialised` — names of tensors still on ``meta``: with a meta build, a tensor no
  file filled is trivially visible, and :func:`inference.build.build_terramind` refuses the
  model rather than run it half-random.
* :class:`TokenizerCache` — tokenizers are 97% of a generation model's memory and the same
  files serve every model size and output set: a tokenizer loaded from a file is kept (weakly)
  under (key, file identity, device) and reused by the next model that needs it, so the app's
  generation and geolocation models, or two sizes, hold one copy. Entries vanish with the
  last model holding them.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.errors import WeightsUnavailableError
from inference.weights import check_coverage, torch_load

if TYPE_CHECKING:
    import torch

_META = threading.local()
_HOOK_LOCK = threading.Lock()
_HOOK: list[Any] = []  # [handle, users]


def _to_meta(module: Any, name: str, param: Any) -> Any:
    import torch

    if param is None or not getattr(_META, "active", 0) or param.device.type == "meta":
        return None
    return torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Register every new ``nn.Parameter`` of this thread on the ``meta`` device."""
    import torch

    with _HOOK_LOCK:
        if not _HOOK:
            handle = torch.nn.modules.module.register_module_parameter_registration_hook(
                _to_meta
            )
            _HOOK[:] = [handle, 0]
        _HOOK[1] += 1
    _META.active = getattr(_META, "active", 0) + 1
    try:
        yield
    finally:
        _META.active -= 1
        with _HOOK_LOCK:
            _HOOK[1] -= 1
            if _HOOK[1] == 0:
                _HOOK[0].remove()
                _HOOK.clear()


def uninitialised(module: Any) -> list[str]:
    """Names of the module's parameters and buffers still on the ``meta`` device."""
    names = [n for n, p in module.named_parameters() if p.is_meta]
    return names + [n for n, b in module.named_buffers() if b is not None and b.is_meta]


def _cast_like(state: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """Tensors of ``state`` in the dtype of the tensor they replace (``assign`` keeps the
    file's dtype; ``copy_`` would have cast)."""
    out = {}
    for key, value in state.items():
        target = expected.get(key)
        if target is not None and value.dtype != target.dtype and value.is_floating_point():
            value = value.to(target.dtype)
        out[key] = value
    return out


def load_part(part: Any, path: Path, *, what: str) -> None:
    """Fill one tokenizer (or any module without a terratorch filter) from its file.

    Raises:
        WeightsUnavailableError: unreadable file, or one that leaves tensors uninitialised.
    """
    state = torch_load(path)
    expected = part.state_dict()
    check_coverage(expected, state, path, what=what)
    state = {k: v for k, v in state.items() if k in expected}
    try:
        part.load_state_dict(_cast_like(state, expected), strict=True, assign=True)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"Weight file {path.name!r} ({str(path)!r}) does not fit {what} ({err})."
        ) from err


def load_model_file(module: Any, path: Path, *, what: str) -> None:
    """Fill a TerraMind model's own tensors (not its tokenizers) from its checkpoint.

    The file is checked for coverage first, then goes through terratorch's own filter
    (``checkpoint_filter_fn_generate``, ``_tim`` or the ViT one) and is loaded strictly with
    ``assign=True``.

    Raises:
        WeightsUnavailableError: unreadable file, or one that leaves tensors uninitialised.
    """
    from inference.terratorch_import import import_terratorch

    import_terratorch()
    from terratorch.models.backbones.terramind.model import terramind_register as reg
    from terratorch.models.backbones.terramind.model.terramind_generation import (
        TerraMindGeneration,
    )
    from terratorch.models.backbones.terramind.model.terramind_tim import TerraMindTiM

    state = torch_load(path)
    own = {k: v for k, v in module.state_dict().items() if not k.startswith("tokenizer.")}
    if isinstance(module, TerraMindGeneration):
        check_coverage(own, state, path, what=what, prefixes=("sampler.model.",))
        state = reg.checkpoint_filter_fn_generate(state, module)
    elif isinstance(module, TerraMindTiM):
        check_coverage(own, state, path, what=what, prefixes=("", "sampler.model."))
        state = reg.checkpoint_filter_fn_tim(state, module)
    else:
        check_coverage(own, state, path, what=what)
        state = reg.checkpoint_filter_fn(state, module)
    # The filter fills every key the file lacks with the module's own tensor: keep only what
    # the file gives (coverage is checked above); tokenizers are loaded separately.
    state = {k: v for k, v in state.items() if k in own}
    try:
        missing, _ = module.load_state_dict(
            _cast_like(state, own), strict=False, assign=True
        )
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"Weight file {path.name!r} ({str(path)!r}) does not fit {what} ({err})."
        ) from err
    left = [k for k in missing if not k.startswith("tokenizer.")]
    if left:  # pragma: no cover - check_coverage refuses these first
        raise WeightsUnavailableError(
            f"Weight file {path.name!r} leaves {len(left)} tensors of {what} unset, e.g. "
            f"{left[:3]}."
        )


class TokenizerCache:
    """Tokenizers loaded from files, shared by every model that needs the same one.

    Keys are (tokenizer key, file path, size, mtime, device); values are held weakly, so a
    tokenizer lives exactly as long as some model uses it.
    """

    def __init__(self) -> None:
        self._items: weakref.WeakValueDictionary[tuple[Any, ...], Any] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    @staticmethod
    def identity(key: str, path: Path, device: torch.device) -> tuple[Any, ...]:
        """The cache key of tokenizer ``key`` read from ``path`` onto ``device``."""
        target = Path(path).resolve()
        stat = target.stat()
        return (key, str(target), stat.st_size, stat.st_mtime_ns, str(device))

    def get(self, ident: tuple[Any, ...]) -> Any:
        """The shared tokenizer for ``ident``, or None."""
        with self._lock:
            return self._items.get(ident)

    def put(self, ident: tuple[Any, ...], tokenizer: Any) -> None:
        """Share ``tokenizer`` under ``ident``."""
        with self._lock:
            self._items[ident] = tokenizer

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


#: The process-wide tokenizer cache used by :func:`inference.build.build_terramind`.
TOKENIZERS = TokenizerCache()
