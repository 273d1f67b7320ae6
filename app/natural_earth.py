"""Natural Earth 1:50m land and country borders from the vendored ``world-atlas`` TopoJSON.

The interactive map draws them in the browser (:class:`app.map_tools.OfflineBasemap`); map
exports (:mod:`app.map_export`) draw the same file with matplotlib, so a PNG or PDF made with no
network still shows the coast and the borders around a run. Coordinates come out in Web
Mercator (EPSG:3857) metres, the grid of rendered layers (:func:`app.layers.render_png`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from app.map_tools import WORLD_ATLAS
from inference.errors import ExportError

#: The vendored TopoJSON (``assets/`` is the app's static root).
WORLD_ATLAS_PATH = Path(__file__).resolve().parent.parent / "assets" / WORLD_ATLAS
#: Web Mercator's sphere radius (metres) and the latitude limit of its square world.
EARTH_RADIUS_M = 6_378_137.0
MAX_LATITUDE = 85.05112878


@dataclass(frozen=True)
class Outlines:
    """Land polygons and border lines in EPSG:3857 metres.

    Attributes:
        land: Rings of the land polygons (outer rings and holes), each ``(n, 2)`` x/y arrays.
        borders: Country borders (arcs shared by two countries), each ``(n, 2)``.
    """

    land: tuple[np.ndarray, ...]
    borders: tuple[np.ndarray, ...]


def lonlat_to_mercator(lon: np.ndarray | float, lat: np.ndarray | float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude degrees → Web Mercator x/y metres (latitudes clipped to ±85.05°)."""
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.clip(np.asarray(lat, dtype=np.float64), -MAX_LATITUDE, MAX_LATITUDE)
    x = EARTH_RADIUS_M * np.radians(lon_a)
    y = EARTH_RADIUS_M * np.log(np.tan(math.pi / 4 + np.radians(lat_a) / 2))
    return x, y


def mercator_to_lonlat(x: np.ndarray | float, y: np.ndarray | float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Web Mercator x/y metres → longitude/latitude degrees."""
    lon = np.degrees(np.asarray(x, dtype=np.float64) / EARTH_RADIUS_M)
    lat = np.degrees(2 * np.arctan(np.exp(np.asarray(y, dtype=np.float64) / EARTH_RADIUS_M))
                     - math.pi / 2)
    return lon, lat


def _decode_arcs(topology: dict[str, Any]) -> list[np.ndarray]:
    """Quantised, delta-encoded TopoJSON arcs → lon/lat arrays."""
    transform = topology.get("transform")
    arcs = []
    for raw in topology["arcs"]:
        points = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
        if transform:
            points = np.cumsum(points, axis=0) * transform["scale"] + transform["translate"]
        arcs.append(points)
    return arcs


def _ring(arcs: list[np.ndarray], indices: list[int]) -> np.ndarray:
    """One ring from its arc indices (``~i`` = arc ``i`` reversed); shared ends dropped."""
    parts = []
    for n, index in enumerate(indices):
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        parts.append(arc if n == 0 else arc[1:])
    return np.concatenate(parts)


def _polygons(geometry: dict[str, Any]) -> list[list[list[int]]]:
    if geometry.get("type") == "Polygon":
        return [geometry["arcs"]]
    if geometry.get("type") == "MultiPolygon":
        return list(geometry["arcs"])
    return []


def _to_mercator(points: np.ndarray) -> np.ndarray:
    x, y = lonlat_to_mercator(points[:, 0], points[:, 1])
    return np.column_stack([x, y])


@lru_cache(maxsize=2)
def outlines(path: str = str(WORLD_ATLAS_PATH)) -> Outlines:
    """Land rings and country borders of the world-atlas file, in EPSG:3857 (read once).

    Args:
        path: A world-atlas ``countries-*.json`` TopoJSON (default: the vendored 1:50m file).

    Raises:
        ExportError: the file is missing or not a world-atlas topology.
    """
    try:
        topology = json.loads(Path(path).read_text(encoding="utf-8"))
        arcs = _decode_arcs(topology)
        objects = topology["objects"]
        land_geometries = objects["land"]["geometries"]
        countries = objects["countries"]["geometries"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(
            f"the offline basemap {path!r} is unreadable ({err}); reinstall TerraLens' assets"
        ) from err
    land = [
        _to_mercator(_ring(arcs, ring))
        for geometry in land_geometries for polygon in _polygons(geometry) for ring in polygon
    ]
    users: dict[int, set[int]] = {}
    for number, geometry in enumerate(countries):
        for polygon in _polygons(geometry):
            for ring in polygon:
                for index in ring:
                    users.setdefault(index if index >= 0 else ~index, set()).add(number)
    borders = [_to_mercator(arcs[i]) for i, who in sorted(users.items()) if len(who) > 1]
    return Outlines(land=tuple(land), borders=tuple(borders))
