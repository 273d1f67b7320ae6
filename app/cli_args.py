"""Command-line arguments shared by the ``terralens`` sub-commands: the area of interest."""

from __future__ import annotations

from pathlib import Path

from app.aoi import AOI
from inference.errors import InvalidRequestError


def parse_bbox(text: str) -> AOI:
    """The AOI of a ``--bbox W,S,E,N`` value (EPSG:4326 degrees)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        raise InvalidRequestError(f"--bbox needs four numbers W,S,E,N, got {text!r}")
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError as err:
        raise InvalidRequestError(f"--bbox needs four numbers W,S,E,N, got {text!r}") from err
    return AOI.from_bbox(west, south, east, north)


def read_aoi_file(path: str) -> AOI:
    """The AOI in a GeoJSON or KML file (``--aoi``)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidRequestError(f"cannot read the AOI file {path!r} ({err.strerror})") from err
    if file.suffix.lower() == ".kml":
        return AOI.from_kml(text)
    return AOI.from_geojson(text)


def aoi_from_args(aoi_path: str | None, bbox: str | None) -> AOI:
    """The AOI of a command: the ``--aoi`` file when given, else the ``--bbox`` value.

    Raises:
        InvalidRequestError: neither is given, or the value cannot be read.
        InvalidAOIError: the geometry is not a valid AOI.
    """
    if aoi_path:
        return read_aoi_file(aoi_path)
    if bbox:
        return parse_bbox(bbox)
    raise InvalidRequestError("give the area of interest with --bbox W,S,E,N or --aoi FILE")
