"""Geolocation summaries and exports: haversine distances, spherical centroid, GeoJSON and CSV.

Coordinates are (lon, lat) in degrees, EPSG:4326; distances are great-circle km on a sphere of
the mean Earth radius.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.errors import InvalidRequestError
from inference.geolocate_samples import GeolocationResult, check_lonlat

#: Mean Earth radius (IUGG), km.
EARTH_RADIUS_KM = 6371.0088
#: Distance thresholds of :func:`summary`, km.
WITHIN_KM = (100, 500, 2500)


def haversine_km(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> np.ndarray:
    """Great-circle distance(s) in km between points given in degrees (broadcasts)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=np.float64))
                              for v in (lon1, lat1, lon2, lat2))
    a = (np.sin((lat2 - lat1) / 2) ** 2
         + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def spherical_centroid(points: np.ndarray) -> tuple[float, float] | None:
    """Mean direction of lon/lat points (None when empty or antipodally balanced)."""
    if len(points) == 0:
        return None
    lon, lat = np.radians(points[:, 0]), np.radians(points[:, 1])
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)]).mean(1)
    norm = float(np.linalg.norm(xyz))
    if norm < 1e-9:
        return None
    x, y, z = xyz / norm
    return float(np.degrees(np.arctan2(y, x))), float(np.degrees(np.arcsin(z)))


def summary(result: GeolocationResult, true_lonlat: Sequence[float] | None = None
            ) -> dict[str, Any]:
    """Numbers that describe a run: counts, centroid, spread, distances to a known location.

    Args:
        result: The run.
        true_lonlat: The known (lon, lat) of the condition, if any.

    Returns:
        ``n``, ``valid``, ``invalid``, ``invalid_reasons``, ``centroid_lonlat`` and
        ``median_km_to_centroid``; with ``true_lonlat`` also ``median_km``, ``mean_km``,
        ``nearest_km`` and ``share_within_km`` (share of *valid* samples within 100, 500,
        2500 km). Distance values are None when no sample is valid.

    Raises:
        InvalidRequestError: ``true_lonlat`` is not a valid coordinate.
    """
    pts = result.samples
    centroid = spherical_centroid(pts)
    out: dict[str, Any] = {
        "n": result.n,
        "valid": len(pts),
        "invalid": int(result.invalid),
        "invalid_reasons": dict(result.invalid_reasons),
        "centroid_lonlat": list(centroid) if centroid else None,
        "median_km_to_centroid": (
            float(np.median(haversine_km(pts[:, 0], pts[:, 1], *centroid))) if centroid else None
        ),
    }
    if true_lonlat is not None:
        truth = check_lonlat(*true_lonlat) if len(true_lonlat) == 2 else check_lonlat(None, None)
        if not truth.valid:
            raise InvalidRequestError(
                f"true_lonlat must be a valid (lon, lat) in degrees, got {true_lonlat!r}."
            )
        out["true_lonlat"] = [truth.lon, truth.lat]
        if len(pts):
            d = haversine_km(pts[:, 0], pts[:, 1], truth.lon, truth.lat)
            out |= {"median_km": float(np.median(d)), "mean_km": float(d.mean()),
                    "nearest_km": float(d.min()),
                    "share_within_km": {str(k): float((d <= k).mean()) for k in WITHIN_KM}}
        else:
            out |= {"median_km": None, "mean_km": None, "nearest_km": None,
                    "share_within_km": {str(k): None for k in WITHIN_KM}}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_geojson(result: GeolocationResult) -> dict[str, Any]:
    """The valid samples as a GeoJSON FeatureCollection of Points (lon, lat; EPSG:4326).

    The run's parameters, counts and invalid reasons ride along as the collection's
    ``properties`` (a foreign member, ignored by readers that do not know it).
    """
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
         "properties": {"sample": i}}
        for i, (x, y) in enumerate(result.samples)
    ]
    props = _plain(result.params) | {"valid": len(result.samples),
                                     "invalid": int(result.invalid),
                                     "invalid_reasons": dict(result.invalid_reasons)}
    return {"type": "FeatureCollection", "features": features, "properties": props}


def to_csv(result: GeolocationResult) -> str:
    """The valid samples as CSV text: ``sample,lon,lat`` (degrees, EPSG:4326)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample", "lon", "lat"])
    for i, (x, y) in enumerate(result.samples):
        writer.writerow([i, repr(float(x)), repr(float(y))])
    return buffer.getvalue()


__all__ = [
    "EARTH_RADIUS_KM",
    "WITHIN_KM",
    "haversine_km",
    "spherical_centroid",
    "summary",
    "to_csv",
    "to_geojson",
]
