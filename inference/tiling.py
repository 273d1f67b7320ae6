"""Tiled inference over any window size: overlapping chips, smooth blending, bounded memory.

:func:`tiled_apply` is a pure function of (forward function, array, chip, overlap, batch size):
it knows nothing about TerraMind, so it is tested with an identity model and smooth synthetic
fields before it meets a real model.

How it works:

* Chips of ``chip × chip`` pixels sit on a regular grid with stride ``chip - overlap``; the last
  row/column of chips is aligned with the far edge, so every pixel is covered and no chip reads
  outside the array. A side shorter than one chip is padded (mirror, then edge) up to the chip
  size and cropped back afterwards.
* Chips are cut from the array batch by batch (``batch_size`` at a time), passed through ``fn``
  and added into a float64 output sum and a weight sum; memory is the output plus one batch.
* Each chip's contribution is weighted by a separable raised-cosine window that rises over the
  ``overlap`` pixels at its borders and is 1 elsewhere. The window never reaches zero and the
  sum is divided by the summed weights, so pixels near the image edge (covered by one chip)
  keep their exact value and seams between chips fade over the overlap instead of jumping.
* Class maps must be blended as probabilities or logits and arg-maxed afterwards (never blend
  class indices): ``fn`` returns scores, the caller takes the argmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from inference.errors import InvalidRequestError, RunCancelledError
from inference.executors import Executor, InProcessExecutor

#: ``fn(batch [B, C, chip, chip], chip_indices) -> [B, C_out, chip, chip]``.
ChipFn = Callable[[np.ndarray, Sequence[int]], np.ndarray]
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class ChipWindow:
    """One chip: its index in the plan and its top-left pixel in the (padded) array.

    Attributes:
        index: Position in :func:`plan_chips`'s list (row-major), used to derive seeds.
        row: First row of the chip.
        col: First column of the chip.
        size: Side of the square chip in pixels.
    """

    index: int
    row: int
    col: int
    size: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the chip in the padded array."""
        return slice(self.row, self.row + self.size), slice(self.col, self.col + self.size)


def _validate(chip: int, overlap: int, batch_size: int | None = None) -> None:
    if isinstance(chip, bool) or not isinstance(chip, int) or chip < 1:
        raise InvalidRequestError(f"chip must be a positive integer (pixels), got {chip!r}.")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chip:
        raise InvalidRequestError(
            f"overlap must be an integer in 0..chip-1 (chip={chip}), got {overlap!r}."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise InvalidRequestError(f"batch_size must be a positive integer, got {batch_size!r}.")


def _starts(length: int, chip: int, stride: int) -> list[int]:
    """Chip start positions along one axis; the last chip ends at the far edge."""
    if length <= chip:
        return [0]
    n = math.ceil((length - chip) / stride) + 1
    return sorted({min(i * stride, length - chip) for i in range(n)})


def plan_chips(h: int, w: int, chip: int = 224, overlap: int = 32) -> list[ChipWindow]:
    """The chips covering an ``h × w`` window, row-major.

    Args:
        h: Height in pixels (any positive size).
        w: Width in pixels.
        chip: Chip side in pixels.
        overlap: Pixels shared by neighbouring chips (at least; edge chips may share more).

    Returns:
        The chip windows; sides shorter than ``chip`` get one chip (padded when applied).

    Raises:
        InvalidRequestError: non-positive sizes or ``overlap`` not in ``0..chip-1``.
    """
    _validate(chip, overlap)
    if h < 1 or w < 1:
        raise InvalidRequestError(f"Window must be at least 1×1 pixels, got {h}×{w}.")
    stride = chip - overlap
    rows, cols = _starts(h, chip, stride), _starts(w, chip, stride)
    return [
        ChipWindow(i * len(cols) + j, r, c, chip)
        for i, r in enumerate(rows)
        for j, c in enumerate(cols)
    ]


def chips_for_mask(
    mask: np.ndarray, chip: int = 224, overlap: int = 32
) -> list[ChipWindow]:
    """The chips of :func:`plan_chips` that hold at least one True pixel of ``mask [H, W]``.

    Chips only needed for pixels nobody asked for (outside a drawn AOI polygon, over a
    scene's no-data strip) are left out; the kept chips keep their plan indices (and seeds).

    Raises:
        InvalidRequestError: ``mask`` is not 2-D, or selects no pixel.
    """
    if np.ndim(mask) != 2:
        raise InvalidRequestError(f"mask must be [H, W], got shape {np.shape(mask)!r}.")
    h, w = np.shape(mask)
    wanted = np.zeros((max(h, chip), max(w, chip)), dtype=bool)
    wanted[:h, :w] = mask
    plan = [win for win in plan_chips(h, w, chip, overlap) if wanted[win.slices].any()]
    if not plan:
        raise InvalidRequestError("The mask selects no pixel: there is nothing to compute.")
    return plan


def restrict_to_aoi(valid: np.ndarray, aoi_mask: np.ndarray | None) -> np.ndarray:
    """Pixels to compute: valid input pixels inside the AOI (``aoi_mask`` True), ``[H, W]``.

    Raises:
        InvalidRequestError: ``aoi_mask`` has another shape, or no valid pixel is inside it.
    """
    if aoi_mask is None:
        return valid
    if np.shape(aoi_mask) != np.shape(valid):
        raise InvalidRequestError(
            f"The AOI mask {np.shape(aoi_mask)!r} does not match the input grid "
            f"{np.shape(valid)!r}."
        )
    wanted: np.ndarray = valid & np.asarray(aoi_mask, dtype=bool)
    if not wanted.any():
        raise InvalidRequestError(
            "The scene has no valid pixel inside the AOI: move the AOI or pick another scene."
        )
    return wanted


def _chips_to_run(
    h: int, w: int, chip: int, overlap: int, mask: np.ndarray | None
) -> list[ChipWindow]:
    """The plan of an ``h × w`` window, only its chips touching ``mask`` when one is given."""
    if mask is None:
        return plan_chips(h, w, chip, overlap)
    if np.shape(mask) != (h, w):
        raise InvalidRequestError(
            f"mask must have the array's shape {(h, w)!r}, got {np.shape(mask)!r}."
        )
    return chips_for_mask(np.asarray(mask, dtype=bool), chip, overlap)


def count_chips(
    h: int, w: int, chip: int = 224, overlap: int = 32, mask: np.ndarray | None = None
) -> int:
    """Number of chips :func:`tiled_apply` runs for an ``h × w`` window (for estimates),
    counting only chips that touch ``mask`` when one is given."""
    return len(_chips_to_run(h, w, chip, overlap, mask))


def blend_window(chip: int, overlap: int) -> np.ndarray:
    """The ``chip × chip`` blending weights: raised cosine over ``overlap`` pixels, else 1.

    Values are strictly positive (the first border pixel weighs ``≈ (π/(overlap+1))²/4``), so
    every covered pixel has a defined weighted mean.
    """
    ramp = np.ones(chip, dtype=np.float64)
    if overlap > 0:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(1, overlap + 1) / (overlap + 1))
        ramp[:overlap] = np.minimum(ramp[:overlap], edge)
        ramp[chip - overlap :] = np.minimum(ramp[chip - overlap :], edge[::-1])
    return np.outer(ramp, ramp)


def _pad_to_chip(array: np.ndarray, chip: int) -> np.ndarray:
    _, h, w = array.shape
    pad_h, pad_w = max(0, chip - h), max(0, chip - w)
    if pad_h == 0 and pad_w == 0:
        return array
    # "symmetric" mirrors the border (repeating it) and copes with pads larger than the side.
    return np.pad(array, ((0, 0), (0, pad_h), (0, pad_w)), mode="symmetric")


def tiled_apply(
    fn: ChipFn,
    array: np.ndarray,
    *,
    chip: int = 224,
    overlap: int = 32,
    batch_size: int = 4,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    executor: Executor | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Apply a chip-wise function over a whole ``[C, H, W]`` array with blended seams.

    Args:
        fn: Called with a batch ``[B, C, chip, chip]`` (same dtype as ``array``) and the plan
            indices of its chips; returns ``[B, C_out, chip, chip]``. Calls happen in plan order.
        array: Input ``[C, H, W]``, any ``H, W ≥ 1``.
        chip: Chip side in pixels.
        overlap: Overlap between neighbouring chips, blended with :func:`blend_window`.
        batch_size: Chips per ``fn`` call (bounds memory).
        progress: Called as ``progress(chips_done, chips_total)`` after each batch.
        cancel: Checked before each batch; returning True raises :class:`RunCancelledError`.
        executor: Where batches run (default: in this thread, see :mod:`inference.executors`).
        mask: Optional ``[H, W]`` bool, True where an output is wanted; chips holding no True
            pixel are skipped (not counted in progress) and pixels no chip computed are NaN.

    Returns:
        ``[C_out, H, W]`` float32: the weighted mean of the chip outputs covering each pixel
        (NaN only where ``mask`` made every covering chip skip).

    Raises:
        InvalidRequestError: bad array shape, chip, overlap or batch size, or ``fn`` returned
            the wrong shape.
        RunCancelledError: ``cancel()`` returned True.
    """
    _validate(chip, overlap, batch_size)
    if not isinstance(array, np.ndarray) or array.ndim != 3:
        raise InvalidRequestError(
            f"tiled_apply needs a [C, H, W] numpy array, got {type(array).__name__} with "
            f"shape {getattr(array, 'shape', None)!r}."
        )
    _, h, w = array.shape
    plan = _chips_to_run(h, w, chip, overlap, mask)
    padded = _pad_to_chip(array, chip)
    window = blend_window(chip, overlap)
    total = len(plan)
    groups = [plan[i : i + batch_size] for i in range(0, total, batch_size)]

    def batches() -> Iterator[tuple[np.ndarray, list[int]]]:
        done = 0
        for windows in groups:
            if cancel is not None and cancel():
                raise RunCancelledError(
                    f"Run cancelled after {done} of {total} chips; nothing was saved."
                )
            done += len(windows)
            batch = np.stack([padded[(slice(None), *win.slices)] for win in windows])
            yield batch, [win.index for win in windows]

    out_sum: np.ndarray | None = None
    weight_sum = np.zeros(padded.shape[1:], dtype=np.float64)
    done = 0
    results = (executor or InProcessExecutor()).map_batches(fn, batches())
    for windows, raw in zip(groups, results, strict=False):
        result = np.asarray(raw)
        expected = (len(windows), chip, chip)
        if result.ndim != 4 or (result.shape[0], *result.shape[2:]) != expected:
            raise InvalidRequestError(
                f"The chip function returned shape {result.shape!r}; expected "
                f"({len(windows)}, C_out, {chip}, {chip})."
            )
        if out_sum is None:
            out_sum = np.zeros((result.shape[1], *padded.shape[1:]), dtype=np.float64)
        elif result.shape[1] != out_sum.shape[0]:
            raise InvalidRequestError(
                f"The chip function returned {result.shape[1]} channels after "
                f"{out_sum.shape[0]} before: it must return the same bands for every chip."
            )
        for win, chip_out in zip(windows, result, strict=True):
            rows, cols = win.slices
            out_sum[:, rows, cols] += chip_out * window
            weight_sum[rows, cols] += window
        done += len(windows)
        if progress is not None:
            progress(done, total)
    if out_sum is None:  # pragma: no cover - plan_chips always returns at least one chip
        raise InvalidRequestError("Nothing to tile.")
    # Divide in place (no second full-size float64 array at the memory peak).
    weights = weight_sum[:h, :w]
    blended = out_sum[:, :h, :w]
    np.divide(blended, weights[None], out=blended, where=weights[None] > 0)
    blended[:, weights == 0] = np.nan
    return blended.astype(np.float32)
