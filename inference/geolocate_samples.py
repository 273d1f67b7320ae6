"""Geolocation samples: decoded ``coords`` text parsed strictly into points, and the run's result.

TerraMind's ``coords`` modality decodes to a short text ``"lat=<deg> lon=<deg>"``. Text that is
not ``lat=<number> lon=<number>``, non-finite numbers and coordinates outside
[-180, 180] × [-90, 90] are never returned as points; they are counted in
:attr:`GeolocationResult.invalid` with their reason (``INVALID_*``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Reasons a sample is invalid.
INVALID_UNPARSABLE = "unparsable"
INVALID_NOT_FINITE = "not finite"
INVALID_OUT_OF_RANGE = "out of range"

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf(?:inity)?)"
_COORD_TEXT = re.compile(
    rf"^\s*lat\s*=\s*(?P<lat>{_NUMBER})\s+lon\s*=\s*(?P<lon>{_NUMBER})\s*$", re.IGNORECASE
)


@dataclass(frozen=True)
class ParsedSample:
    """One decoded sample: a point, or the reason it is not one."""

    lon: float | None
    lat: float | None
    reason: str | None

    @property
    def valid(self) -> bool:
        """Whether this is a usable point."""
        return self.reason is None


def check_lonlat(lon: Any, lat: Any) -> ParsedSample:
    """Validate one ``(lon, lat)`` pair (numbers in degrees)."""
    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        return ParsedSample(None, None, INVALID_UNPARSABLE)
    if not (math.isfinite(x) and math.isfinite(y)):
        return ParsedSample(None, None, INVALID_NOT_FINITE)
    if not (-180.0 <= x <= 180.0 and -90.0 <= y <= 90.0):
        return ParsedSample(None, None, INVALID_OUT_OF_RANGE)
    return ParsedSample(x, y, None)


def parse_sample(raw: Any) -> ParsedSample:
    """Parse one model output: ``"lat=<deg> lon=<deg>"`` text or a ``[lon, lat]`` pair."""
    if isinstance(raw, str):
        match = _COORD_TEXT.match(raw)
        if match is None:
            return ParsedSample(None, None, INVALID_UNPARSABLE)
        return check_lonlat(match["lon"], match["lat"])
    if isinstance(raw, Sequence | np.ndarray) and len(raw) == 2:
        return check_lonlat(raw[0], raw[1])
    return ParsedSample(None, None, INVALID_UNPARSABLE)


def parse_samples(raw: Sequence[Any]) -> tuple[np.ndarray, dict[str, int]]:
    """Parse many outputs into valid ``[k, 2]`` lon/lat points and invalid counts by reason."""
    points: list[tuple[float | None, float | None]] = []
    reasons: dict[str, int] = {}
    for item in raw:
        parsed = parse_sample(item)
        if parsed.reason is None:
            points.append((parsed.lon, parsed.lat))
        else:
            reasons[parsed.reason] = reasons.get(parsed.reason, 0) + 1
    return np.asarray(points, dtype=np.float64).reshape(-1, 2), reasons


@dataclass(frozen=True)
class GeolocationResult:
    """Coordinate samples of one geolocation run.

    Attributes:
        samples: ``[k, 2]`` valid samples, (lon, lat) in degrees (EPSG:4326).
        invalid: Samples that were not valid coordinates.
        params: What ran (condition, n, temperature, top_p, top_k, seed, model, weights...).
        invalid_reasons: Invalid samples by reason.
        raw: The decoded text of every sample, in order (for inspection).
    """

    samples: np.ndarray
    invalid: int
    params: dict[str, Any]
    invalid_reasons: dict[str, int] = field(default_factory=dict)
    raw: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """Samples drawn (valid + invalid)."""
        return len(self.samples) + int(self.invalid)


__all__ = [
    "INVALID_NOT_FINITE",
    "INVALID_OUT_OF_RANGE",
    "INVALID_UNPARSABLE",
    "GeolocationResult",
    "ParsedSample",
    "check_lonlat",
    "parse_sample",
    "parse_samples",
]
