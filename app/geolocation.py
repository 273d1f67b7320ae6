"""A geolocation's result as the job runtime keeps it: samples, summary and the true centre.

:class:`GeolocationOutcome` round-trips through JSON (:meth:`~GeolocationOutcome.to_json`), so a
finished geolocation job keeps its result in its job record and any page, in any session, can
show it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyproj import Transformer

from inference.geolocate_samples import GeolocationResult


def centre_lonlat(da: Any) -> tuple[float, float] | None:
    """(lon, lat) of the centre pixel of a georeferenced DataArray, or ``None``."""
    crs = getattr(getattr(da, "rio", None), "crs", None)
    if crs is None or "x" not in da.coords or "y" not in da.coords:
        return None
    x = float(da.coords["x"].values[da.sizes["x"] // 2])
    y = float(da.coords["y"].values[da.sizes["y"] // 2])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


@dataclass(frozen=True)
class GeolocationOutcome:
    """What a geolocation job produced.

    Attributes:
        result: The samples and parameters.
        summary: :func:`inference.geolocate_summary.summary` of the samples.
        true_lonlat: The condition's known (lon, lat), when it has one.
    """

    result: GeolocationResult
    summary: dict[str, Any]
    true_lonlat: tuple[float, float] | None = None

    def to_json(self) -> str:
        """JSON text of the outcome (samples as (lon, lat) pairs)."""
        r = self.result
        return json.dumps({
            "samples": np.asarray(r.samples, dtype=float).reshape(-1, 2).tolist(),
            "invalid": int(r.invalid), "params": r.params,
            "invalid_reasons": dict(r.invalid_reasons), "raw": list(r.raw),
            "summary": self.summary,
            "true_lonlat": list(self.true_lonlat) if self.true_lonlat else None,
        }, default=str)

    @classmethod
    def from_json(cls, text: str) -> GeolocationOutcome:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        result = GeolocationResult(
            samples=np.asarray(data["samples"], dtype=float).reshape(-1, 2),
            invalid=int(data["invalid"]), params=dict(data["params"]),
            invalid_reasons=dict(data.get("invalid_reasons") or {}),
            raw=tuple(data.get("raw") or ()),
        )
        truth = data.get("true_lonlat")
        return cls(result=result, summary=dict(data["summary"]),
                   true_lonlat=(float(truth[0]), float(truth[1])) if truth else None)
