"""How far a generated layer is from a real one: pure metric functions on numpy arrays.

Both arrays are on the same grid; ``valid`` selects the pixels compared (inside the AOI, data
in both). Continuous layers get bias, MAE, RMSE, Pearson r, SSIM and the share of pixels within
one standard deviation of the real values; class maps get overall accuracy, per-class IoU and
F1, Cohen's kappa and the confusion matrix (rows = real class, columns = generated class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inference.errors import InvalidRequestError

#: Smallest side (pixels) of an image for SSIM (scikit-image's default 7×7 window).
SSIM_MIN_SIDE = 7


def _check(generated: np.ndarray, real: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if generated.shape != real.shape or generated.ndim != 2:
        raise InvalidRequestError(
            f"generated and real layers must be 2-D arrays on one grid, got shapes "
            f"{generated.shape!r} and {real.shape!r}"
        )
    if valid is None:
        return np.ones(generated.shape, dtype=bool)
    if valid.shape != generated.shape:
        raise InvalidRequestError(
            f"the valid mask has shape {valid.shape!r}, the layers {generated.shape!r}")
    return valid.astype(bool)


def ssim_masked(generated: np.ndarray, real: np.ndarray, valid: np.ndarray) -> float | None:
    """Mean structural similarity over the valid pixels (``None`` when too small or flat).

    The SSIM map is computed on the whole grid (scikit-image, 7×7 window, data range = the
    real values' range) with invalid pixels of both set to the real mean, then averaged over
    the valid pixels only.
    """
    from skimage.metrics import structural_similarity

    if min(generated.shape) < SSIM_MIN_SIDE or not valid.any():
        return None
    r = real[valid]
    data_range = float(r.max() - r.min())
    if data_range <= 0:
        return None
    fill = float(r.mean())
    g_img = np.where(valid, generated, fill).astype(np.float64)
    r_img = np.where(valid, real, fill).astype(np.float64)
    _, ssim_map = structural_similarity(g_img, r_img, data_range=data_range, full=True)
    return float(np.asarray(ssim_map)[valid].mean())


def continuous_metrics(generated: np.ndarray, real: np.ndarray,
                       valid: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of a continuous generated layer against the real one.

    Args:
        generated: Generated values ``[H, W]`` (NaN = no data).
        real: Real values on the same grid (NaN = no data).
        valid: Pixels to compare (``True``); non-finite pixels of either are always left out.

    Returns:
        ``pixels``, ``bias`` (mean G − R), ``mae``, ``rmse``, ``pearson_r``, ``ssim``,
        ``within_1std`` (share of pixels with |G − R| ≤ std of the real values),
        ``real_mean``, ``real_std``, ``generated_mean``, ``generated_std``; the values are
        ``None`` when no pixel is comparable (``r`` also when either side is constant).
    """
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    mask = _check(g, r, valid) & np.isfinite(g) & np.isfinite(r)
    n = int(mask.sum())
    keys = ("bias", "mae", "rmse", "pearson_r", "ssim", "within_1std", "real_mean",
            "real_std", "generated_mean", "generated_std")
    out: dict[str, Any] = {"pixels": n, **dict.fromkeys(keys)}
    if n == 0:
        return out
    gv, rv = g[mask], r[mask]
    diff = gv - rv
    real_std = float(rv.std())
    out.update({
        "bias": float(diff.mean()),
        "mae": float(np.abs(diff).mean()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "within_1std": float((np.abs(diff) <= real_std).mean()),
        "real_mean": float(rv.mean()), "real_std": real_std,
        "generated_mean": float(gv.mean()), "generated_std": float(gv.std()),
    })
    if n > 1 and gv.std() > 0 and real_std > 0:
        out["pearson_r"] = float(np.corrcoef(gv, rv)[0, 1])
    out["ssim"] = ssim_masked(g, r, mask)
    return out


def confusion_matrix(generated: np.ndarray, real: np.ndarray, labels: Sequence[int],
                     valid: np.ndarray | None = None) -> np.ndarray:
    """Pixel counts ``[len(labels), len(labels)]``: row = real class, column = generated class.

    Pixels whose real or generated value is not one of ``labels`` are left out.
    """
    g = np.asarray(generated)
    r = np.asarray(real)
    mask = _check(g, r, valid)
    index = np.full(256, -1, dtype=np.int64)
    for position, label in enumerate(labels):
        index[int(label)] = position
    gi = index[np.clip(g.astype(np.int64), 0, 255)]
    ri = index[np.clip(r.astype(np.int64), 0, 255)]
    keep = mask & (gi >= 0) & (ri >= 0)
    k = len(labels)
    counts = np.bincount(ri[keep] * k + gi[keep], minlength=k * k)
    return counts.reshape(k, k)


def class_metrics(generated: np.ndarray, real: np.ndarray, labels: Sequence[int],
                  names: Sequence[str] | None = None,
                  valid: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of a generated class map against the real one.

    Args:
        generated: Generated classes ``[H, W]``.
        real: Real classes on the same grid.
        labels: Class values compared (others, e.g. no data, are left out).
        names: Class names, in the order of ``labels``.
        valid: Pixels to compare.

    Returns:
        ``pixels``, ``overall_accuracy``, ``kappa`` (Cohen's), ``labels``, ``names``,
        ``confusion`` (rows real, columns generated, as lists) and ``per_class``: one
        ``{value, name, iou, f1, real_pixels, generated_pixels}`` per label (``iou``/``f1``
        ``None`` for a class in neither map).
    """
    names = list(names) if names is not None else [str(v) for v in labels]
    if len(names) != len(labels):
        raise InvalidRequestError(f"{len(names)} class names for {len(labels)} labels")
    cm = confusion_matrix(generated, real, labels, valid).astype(np.float64)
    n = float(cm.sum())
    tp = np.diag(cm)
    real_n, gen_n = cm.sum(axis=1), cm.sum(axis=0)
    per_class = []
    for i, value in enumerate(labels):
        union = real_n[i] + gen_n[i] - tp[i]
        per_class.append({
            "value": int(value), "name": names[i],
            "iou": float(tp[i] / union) if union else None,
            "f1": float(2 * tp[i] / (real_n[i] + gen_n[i])) if union else None,
            "real_pixels": int(real_n[i]), "generated_pixels": int(gen_n[i]),
        })
    accuracy = kappa = None
    if n:
        accuracy = float(tp.sum() / n)
        expected = float((real_n * gen_n).sum() / n**2)
        kappa = float((accuracy - expected) / (1 - expected)) if expected < 1 else None
    return {
        "pixels": int(n), "overall_accuracy": accuracy, "kappa": kappa,
        "labels": [int(v) for v in labels], "names": names,
        "confusion": cm.astype(np.int64).tolist(), "per_class": per_class,
    }


def histogram2d(generated: np.ndarray, real: np.ndarray, valid: np.ndarray | None = None,
                *, bins: int = 40) -> dict[str, Any]:
    """A 2-D histogram of generated against real values (for the generated-vs-real plot).

    Returns:
        ``edges`` (shared by both axes), ``counts`` (``[real bin][generated bin]``), or empty
        lists when no pixel is comparable.
    """
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    mask = _check(g, r, valid) & np.isfinite(g) & np.isfinite(r)
    if not mask.any():
        return {"edges": [], "counts": []}
    lo = float(min(g[mask].min(), r[mask].min()))
    hi = float(max(g[mask].max(), r[mask].max()))
    if hi <= lo:
        hi = lo + 1.0
    counts, edges, _ = np.histogram2d(r[mask], g[mask], bins=bins, range=[[lo, hi], [lo, hi]])
    return {"edges": [float(e) for e in edges], "counts": counts.astype(np.int64).tolist()}
