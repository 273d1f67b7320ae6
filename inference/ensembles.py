"""Seed-ensemble statistics over a member axis: pure numpy, no model, no I/O.

A seed ensemble is N samples of the same generation (one per batch entry of the same chip, see
:mod:`inference.generate`). Continuous outputs are summarised by their per-pixel **mean** (the
layer shown) and **standard deviation** (the ``[U]`` layer, in the output's own units: dB, m,
NDVI); class outputs by each member's vote (its arg-max class), the **mode** of the votes (the
layer shown), the **agreement** (share of members voting the mode) and the **entropy** of the
vote shares, in bits.

Conventions (the tests recompute them independently):

* ``members`` has the member axis first: ``[N, ...]``.
* The standard deviation is the sample standard deviation (``ddof=1``): an estimate of the
  model's sampling spread, not the spread of these N draws only. One member gives 0.
* Ties of the mode go to the lowest class index (``numpy.argmax`` of the vote counts).
* Entropy ``H = -Σ_k p_k log2 p_k`` over the vote shares ``p_k = n_k / N`` (``0 log 0 = 0``):
  0 when every member agrees, at most ``log2(min(N, classes))``.
* NaN members (no data) give NaN statistics; votes of no-data pixels are the caller's to mask.
"""

from __future__ import annotations

import numpy as np

#: Fewest and most members an ensemble may have (1 = no ensemble).
MIN_MEMBERS = 1
MAX_MEMBERS = 16


def _members(members: np.ndarray, *, least: int = 1) -> np.ndarray:
    array = np.asarray(members)
    if array.ndim < 1 or array.shape[0] < least:
        raise ValueError(
            f"members must have at least {least} entries on axis 0, got shape {array.shape!r}."
        )
    return array


def ensemble_mean(members: np.ndarray) -> np.ndarray:
    """Per-pixel mean over the member axis (float32; NaN where any member is NaN)."""
    return np.asarray(_members(members).astype(np.float64).mean(axis=0), dtype=np.float32)


def ensemble_std(members: np.ndarray) -> np.ndarray:
    """Per-pixel sample standard deviation (``ddof=1``) over the member axis, float32.

    Zero for identical members and for a single member; NaN where any member is NaN.
    """
    array = _members(members).astype(np.float64)
    if array.shape[0] == 1:
        return np.where(np.isfinite(array[0]), 0.0, np.nan).astype(np.float32)
    return np.asarray(array.std(axis=0, ddof=1), dtype=np.float32)


def vote_counts(votes: np.ndarray, classes: int) -> np.ndarray:
    """``[classes, ...]`` number of members voting each class.

    Args:
        votes: ``[N, ...]`` integer class of each member (0..classes-1).
        classes: Number of classes.

    Raises:
        ValueError: a vote outside ``0..classes-1``.
    """
    array = _members(votes)
    if array.size and (array.min() < 0 or array.max() >= classes):
        raise ValueError(f"votes must lie in 0..{classes - 1}, got {array.min()}..{array.max()}.")
    counts = np.zeros((classes, *array.shape[1:]), dtype=np.int32)
    for k in range(classes):
        counts[k] = (array == k).sum(axis=0)
    return counts


def ensemble_mode(counts: np.ndarray) -> np.ndarray:
    """The most voted class per pixel (ties: the lowest index), from :func:`vote_counts`."""
    return np.asarray(np.argmax(counts, axis=0))


def ensemble_agreement(counts: np.ndarray) -> np.ndarray:
    """Share of members voting the mode, per pixel (``1/N`` .. 1), float32."""
    total = counts.sum(axis=0)
    return (counts.max(axis=0) / np.maximum(total, 1)).astype(np.float32)


def vote_entropy(counts: np.ndarray) -> np.ndarray:
    """Entropy of the vote shares in bits, per pixel, float32 (0 = unanimous)."""
    total = np.maximum(counts.sum(axis=0), 1)
    shares = counts / total
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, -shares * np.log2(shares), 0.0)
    return np.asarray(terms.sum(axis=0) + 0.0, dtype=np.float32)


__all__ = [
    "MAX_MEMBERS",
    "MIN_MEMBERS",
    "ensemble_agreement",
    "ensemble_mean",
    "ensemble_mode",
    "ensemble_std",
    "vote_counts",
    "vote_entropy",
]
