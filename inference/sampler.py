"""A top-p filter that sorts the vocabulary once, installed per model instance.

terratorch's ``GenerationSampler.top_k_top_p_filtering`` sorts every token's logits over the
whole vocabulary (``torch.sort``), then sorts again (``torch.argsort`` of the sorted indices)
only to undo the permutation — two full sorts per decoding step and output, 4–6% of a base
run on CPU (bench/README.md). :func:`top_k_top_p_filtering` keeps the same first sort and the
same arithmetic (softmax, cumulative sum, shifted threshold), and undoes the permutation with a
``scatter`` instead: the mask is bit-identical, so the same seed draws exactly the same
tokens (``tests/test_sampler.py`` checks it against terratorch's method on the same logits).

The patch is per instance and switchable: :func:`install` binds the function on one model's
sampler (nothing in terratorch or site-packages changes; other models keep the original);
:func:`uninstall` removes it. :func:`inference.build.build_terramind` installs it when
``SpeedOptions.fast_sampler`` is on (the default; ``TERRALENS_FAST_SAMPLER=0`` turns it off).
"""

from __future__ import annotations

import types
from typing import Any

_ATTR = "top_k_top_p_filtering"


def top_k_top_p_filtering(self: Any, logits: Any, top_k: float = 0.0, top_p: float = 0.0) -> Any:
    """terratorch's top-k / top-p filter of ``logits [N, V]`` (in place), with one sort.

    Args:
        self: The ``GenerationSampler`` (unused; the signature of the method it replaces).
        logits: ``[N, V]`` logits, modified in place.
        top_k: Keep the ``k`` largest (an int, or a float share of the vocabulary); 0: off.
        top_p: Keep the smallest set of tokens whose probability reaches ``top_p``; 0: off.

    Returns:
        ``logits`` with the removed tokens set to ``-inf``.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    if top_k > 0.0:
        if isinstance(top_k, int):
            k = min(top_k, logits.shape[-1])
        elif isinstance(top_k, float):
            k = min(int(top_k * logits.shape[-1]), logits.shape[-1])
        else:
            raise ValueError(f"Invalid value for top_k: {top_k}")
        indices_to_remove = logits < torch.topk(logits, k)[0][..., -1, None]
        logits.masked_fill_(indices_to_remove, float("-inf"))
    if top_p > 0.0:
        sorted_logits, sorted_indices = torch.sort(logits, dim=1, descending=True)
        cum_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        sorted_to_remove = cum_probs > top_p
        # Shift right to keep the first token above the threshold too (as terratorch does).
        sorted_to_remove[..., 1:] = sorted_to_remove[..., :-1].clone()
        sorted_to_remove[..., 0] = 0
        # Undo the sort's permutation by scattering, not by sorting its indices again.
        to_remove = torch.empty_like(sorted_to_remove).scatter_(1, sorted_indices,
                                                                sorted_to_remove)
        logits.masked_fill_(to_remove, float("-inf"))
    return logits


def install(module: Any) -> bool:
    """Use :func:`top_k_top_p_filtering` in ``module``'s sampler (this instance only).

    Returns:
        True when ``module`` has a terratorch ``GenerationSampler`` and it was patched.
    """
    sampler = getattr(module, "sampler", None)
    if sampler is None or not hasattr(type(sampler), _ATTR):
        return False
    setattr(sampler, _ATTR, types.MethodType(top_k_top_p_filtering, sampler))
    return True


def uninstall(module: Any) -> None:
    """Give ``module``'s sampler terratorch's own filter back."""
    sampler = getattr(module, "sampler", None)
    if sampler is not None and _ATTR in vars(sampler):
        delattr(sampler, _ATTR)


def installed(module: Any) -> bool:
    """Whether ``module``'s sampler uses the one-sort filter."""
    sampler = getattr(module, "sampler", None)
    return sampler is not None and _ATTR in vars(sampler)
