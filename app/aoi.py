"""The area of interest (AOI): one frozen value, built from a bbox, GeoJSON, KML or a map drawing.

The AOI is always a GeoJSON geometry in EPSG:4326 (lon/lat degrees). Constructors parse loose
input and raise :class:`~inference.errors.InvalidAOIError` when it cannot be read at all;
:meth:`AOI.validate` then checks the rules an AOI must satisfy before it reaches the catalog
(not empty, a valid polygon, inside lon/lat range, not crossing the antimeridian, not larger than
the configured limit). Nothing is repaired silently: :meth:`AOI.made_valid` exists for callers
that want to repair an invalid outline on purpose.

Example:
    >>> aoi = AOI.from_bbox(15.0, 45.0, 15.05, 45.03).validate(max_km2=100)
    >>> round(aoi.area_km2, 1)
    13.1
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import shapely
import shapely.errors
import shapely.validation
from pyproj import Geod
from shapely.geometry import Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry

from inference.errors import InvalidAOIError, InvalidRequestError

#: The ellipsoid used for every geodesic area and distance in TerraLens.
GEOD = Geod(ellps="WGS84")

#: Default window limit (bounding box km²) as a multiple of the AOI area limit.
WINDOW_FACTOR = 4.0
_POLYGON_TYPES = frozenset({"Polygon", "MultiPolygon"})
_CIRCLE_VERTICES = 64


def _as_plain_json(obj: Any) -> Any:
    """Tuples to lists, numbers to float: the form ``json.loads`` would give back."""
    return json.loads(json.dumps(obj))


def _geometry_from_mapping(geometry: Mapping[str, Any]) -> BaseGeometry:
    """Parse a GeoJSON geometry mapping into shapely, as an :class:`InvalidAOIError` on failure."""
    if not isinstance(geometry, Mapping):
        raise InvalidAOIError(f"AOI geometry must be a GeoJSON object, got {geometry!r}")
    gtype = geometry.get("type")
    if not isinstance(gtype, str):
        raise InvalidAOIError(f"AOI geometry has no GeoJSON 'type': {dict(geometry)!r}")
    try:
        geom = shape(geometry)
    except RecursionError as err:
        raise InvalidAOIError(
            f"AOI geometry of type {gtype!r} is nested too deeply to be a polygon"
        ) from err
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as err:
        raise InvalidAOIError(
            f"AOI geometry of type {gtype!r} cannot be read ({err}); check its coordinates: "
            f"{json.dumps(dict(geometry))[:200]!r}"
        ) from err
    except shapely.errors.GEOSException as err:
        raise InvalidAOIError(
            f"AOI geometry of type {gtype!r} cannot be read ({err})"
        ) from err
    return geom


def geojson_geometry(obj: Any, *, what: str = "geometry") -> dict[str, Any]:
    """The GeoJSON geometry of a geometry dict, a Feature, GeoJSON text or an :class:`AOI`.

    Args:
        obj: What to read.
        what: How the error messages name ``obj`` (e.g. ``"aoi"``).

    Raises:
        InvalidRequestError: ``obj`` is none of these.
    """
    if hasattr(obj, "geometry") and not isinstance(obj, Mapping):  # an AOI
        obj = obj.geometry
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as err:
            raise InvalidRequestError(f"{what} is not GeoJSON text: {obj[:80]!r}") from err
    if isinstance(obj, Mapping) and obj.get("type") == "Feature":
        obj = obj.get("geometry")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("type"), str):
        raise InvalidRequestError(f"{what} must be a GeoJSON geometry, got {obj!r}")
    return dict(obj)


def geodesic_area_km2(geom: BaseGeometry) -> float:
    """Geodesic area (WGS84 ellipsoid) of a lon/lat geometry in km², whatever its ring order.

    pyproj sums signed ring areas, so rings are first oriented (exterior counter-clockwise,
    holes clockwise): otherwise a hole drawn in the same direction as its shell adds area.
    """
    if geom.is_empty:
        return 0.0
    area_m2, _ = GEOD.geometry_area_perimeter(shapely.orient_polygons(geom))
    return abs(float(area_m2)) / 1e6


def _union(geoms: list[BaseGeometry]) -> BaseGeometry:
    if len(geoms) == 1:
        return geoms[0]
    try:
        return shapely.union_all(geoms)
    except shapely.errors.GEOSException as err:
        raise InvalidAOIError(
            f"the {len(geoms)} shapes of the AOI cannot be merged ({err}); "
            "check that each one is a valid polygon"
        ) from err


def _geodesic_circle(lon: float, lat: float, radius_m: float) -> Polygon:
    """A polygon approximating a circle of ``radius_m`` metres around (lon, lat)."""
    azimuths = [360.0 * i / _CIRCLE_VERTICES for i in range(_CIRCLE_VERTICES)]
    lons, lats, _ = GEOD.fwd(
        [lon] * _CIRCLE_VERTICES, [lat] * _CIRCLE_VERTICES, azimuths,
        [radius_m] * _CIRCLE_VERTICES,
    )
    return Polygon(zip(lons, lats, strict=True))


@dataclass(frozen=True, eq=False)
class AOI:
    """An area of interest: a GeoJSON geometry in EPSG:4326.

    Two AOIs are equal (and hash equally) when their canonical JSON (:meth:`to_json`) is equal,
    so an AOI can be part of a cache key.

    Attributes:
        geometry: GeoJSON geometry dict (lon/lat degrees, EPSG:4326). Treat it as read-only.
    """

    geometry: dict[str, Any]

    def __post_init__(self) -> None:
        geom = _geometry_from_mapping(self.geometry)
        # Store the normalised form (plain lists) so equal shapes give equal JSON.
        object.__setattr__(self, "geometry", _as_plain_json(mapping(geom)))
        self.__dict__["shape"] = geom

    # -- identity -------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AOI):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        w, s, e, n = self.bbox
        return (
            f"AOI({self.geometry.get('type')}, bbox=({w:.5f}, {s:.5f}, {e:.5f}, {n:.5f}), "
            f"area_km2={self.area_km2:.3f})"
        )

    # -- derived values -------------------------------------------------------------------------
    @cached_property
    def shape(self) -> BaseGeometry:
        """The geometry as a shapely object (lon/lat degrees)."""
        return shape(self.geometry)  # pragma: no cover - set in __post_init__

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        if self.shape.is_empty:
            return (math.nan, math.nan, math.nan, math.nan)
        w, s, e, n = self.shape.bounds
        return (float(w), float(s), float(e), float(n))

    @cached_property
    def area_km2(self) -> float:
        """Geodesic area on the WGS84 ellipsoid, in km² (0 for non-polygons)."""
        return geodesic_area_km2(self.shape)

    @property
    def centroid(self) -> tuple[float, float]:
        """(lon, lat) of the centroid, computed in degrees (fine for AOIs of a few hundred km)."""
        c = self.shape.centroid
        return (float(c.x), float(c.y))

    # -- serialisation --------------------------------------------------------------------------
    def to_json(self) -> str:
        """Canonical JSON of :attr:`geometry` (sorted keys, no spaces): stable cache keys."""
        return json.dumps(self.geometry, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AOI:
        """Inverse of :meth:`to_json` (also accepts a Feature or FeatureCollection)."""
        return cls.from_geojson(text)

    def to_feature(self, **properties: Any) -> dict[str, Any]:
        """A GeoJSON Feature of the AOI with ``area_km2`` and any extra ``properties``."""
        props = {"area_km2": round(self.area_km2, 6), **properties}
        return {"type": "Feature", "geometry": _as_plain_json(self.geometry), "properties": props}

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_bbox(cls, west: float, south: float, east: float, north: float) -> AOI:
        """An AOI from a bounding box in degrees.

        Args:
            west: Western longitude.
            south: Southern latitude.
            east: Eastern longitude; must be >= ``west`` (antimeridian crossings are refused).
            north: Northern latitude; must be >= ``south``.

        Raises:
            InvalidAOIError: a value is not a finite number, the box is upside down or it
                crosses the antimeridian.
        """
        values = {"west": west, "south": south, "east": east, "north": north}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidAOIError(f"bbox {name} must be a number of degrees, got {value!r}")
            if not math.isfinite(value):
                raise InvalidAOIError(f"bbox {name} must be a finite number, got {value!r}")
        bbox = (west, south, east, north)
        if west > east:
            raise InvalidAOIError(
                f"bbox {bbox!r} has west > east, i.e. it crosses the antimeridian (180°); "
                "TerraLens does not support that: split the area into two AOIs, one on each side"
            )
        if south > north:
            raise InvalidAOIError(
                f"bbox {bbox!r} has south > north; give it as west,south,east,north"
            )
        return cls(_as_plain_json(mapping(box(west, south, east, north))))

    @classmethod
    def from_geojson(cls, data: str | bytes | Mapping[str, Any]) -> AOI:
        """An AOI from GeoJSON text or a parsed GeoJSON object.

        Accepts a geometry, a Feature, or a FeatureCollection (several features are merged into
        one (multi)polygon).

        Raises:
            InvalidAOIError: not JSON, not GeoJSON, or no geometry in it.
        """
        if isinstance(data, str | bytes):
            try:
                obj = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                snippet = data[:80]
                raise InvalidAOIError(f"AOI file is not valid JSON ({err}): {snippet!r}") from err
            except ValueError as err:  # an integer of more than 4300 digits
                raise InvalidAOIError(
                    f"the AOI file holds a number that is not a coordinate ({str(err)[:60]}…): "
                    "give lon/lat degrees"
                ) from err
            except RecursionError as err:
                raise InvalidAOIError(
                    "the AOI file is nested too deeply to be GeoJSON: export the area as a "
                    "plain Polygon, Feature or FeatureCollection"
                ) from err
        else:
            obj = data
        try:
            return cls._from_geometry(_geojson_to_shape(obj))
        except RecursionError as err:
            raise InvalidAOIError(
                "the AOI GeoJSON is nested too deeply: export the area as a plain Polygon, "
                "Feature or FeatureCollection"
            ) from err

    @classmethod
    def from_kml(cls, text: str | bytes) -> AOI:
        """An AOI from KML text: every ``<Polygon>`` in it, merged.

        Raises:
            InvalidAOIError: not XML, or no polygon with readable coordinates.
        """
        try:
            root = ET.fromstring(text)
        except ET.ParseError as err:
            raise InvalidAOIError(
                f"AOI file is not valid KML/XML ({err}): {text[:80]!r}"
            ) from err
        polygons = [_kml_polygon(el) for el in root.iter() if _local(el.tag) == "Polygon"]
        if not polygons:
            raise InvalidAOIError(
                "the KML holds no <Polygon>; export the area as a polygon (not a path or a "
                f"placemark): {text[:80]!r}"
            )
        return cls._from_geometry(_union(polygons))

    @classmethod
    def from_drawing(cls, value: Mapping[str, Any] | None) -> AOI:
        """An AOI from the value ``st_folium`` returns for a map with Leaflet.draw.

        Uses ``last_active_drawing`` when it holds a shape, otherwise the last entry of
        ``all_drawings``. Circles (a Point with a ``radius`` property in metres) become a
        64-vertex geodesic polygon.

        Raises:
            InvalidAOIError: nothing has been drawn, or the drawing is not an area.
        """
        if not value:
            raise InvalidAOIError("no AOI drawn yet: draw a rectangle or polygon on the map")
        feature = value.get("last_active_drawing")
        if not feature:
            drawings = value.get("all_drawings") or []
            feature = drawings[-1] if drawings else None
        if not feature:
            raise InvalidAOIError("no AOI drawn yet: draw a rectangle or polygon on the map")
        if not isinstance(feature, Mapping):
            raise InvalidAOIError(f"the map returned a drawing that is not GeoJSON: {feature!r}")
        geometry = feature.get("geometry", feature)
        props = feature.get("properties") or {}
        if isinstance(geometry, Mapping) and geometry.get("type") == "Point":
            radius = props.get("radius") if isinstance(props, Mapping) else None
            if isinstance(radius, int | float) and radius > 0:
                lon, lat = geometry["coordinates"][:2]
                return cls._from_geometry(_geodesic_circle(float(lon), float(lat), float(radius)))
            raise InvalidAOIError(
                f"the drawing is a point marker {geometry.get('coordinates')!r}, not an area: "
                "draw a rectangle or polygon"
            )
        return cls.from_geojson(feature)

    @classmethod
    def _from_geometry(cls, geom: BaseGeometry) -> AOI:
        return cls(_as_plain_json(mapping(geom)))

    # -- checks ---------------------------------------------------------------------------------
    def made_valid(self) -> AOI:
        """A repaired copy (``shapely.make_valid``, polygon parts only). Only on request."""
        fixed = shapely.make_valid(self.shape)
        if fixed.geom_type == "GeometryCollection":
            parts = [g for g in fixed.geoms if g.geom_type in _POLYGON_TYPES]
            fixed = _union(parts) if parts else Polygon()
        return AOI._from_geometry(fixed)

    @property
    def window_km2(self) -> float:
        """Geodesic area of the bounding box in km²: what a scene window over the AOI covers."""
        if self.shape.is_empty:
            return 0.0
        return geodesic_area_km2(box(*self.bbox))

    def validate(self, max_km2: float, max_window_km2: float | None = None, *,
                 area_setting: str = "TERRALENS_MAX_AOI_KM2",
                 window_setting: str = "TERRALENS_MAX_WINDOW_KM2") -> AOI:
        """Check the AOI can be searched and processed; returns ``self`` for chaining.

        Scenes are read over the AOI's bounding box, so the box is checked too: two small
        fields far apart (or a thin diagonal strip) have a small area but a huge window.

        Args:
            max_km2: Largest accepted geodesic area in km² (``Settings.max_aoi_km2``).
            max_window_km2: Largest accepted bounding box in km² (``Settings.max_window_km2``;
                default 4 × ``max_km2``).

        Raises:
            InvalidAOIError: empty, not a polygon, outside lon/lat range, crossing the
                antimeridian, invalid (e.g. self-intersecting), larger than ``max_km2`` or with
                a bounding box larger than ``max_window_km2``; the message names the setting
                that raises the limit (``area_setting``, ``window_setting``: the search
                checks its own limit, ``TERRALENS_MAX_SEARCH_KM2``).
        """
        _check_limit(max_km2, "the AOI size limit")
        if max_window_km2 is None:
            max_window_km2 = WINDOW_FACTOR * max_km2
        _check_limit(max_window_km2, "the AOI window limit")
        geom = self.shape
        gtype = geom.geom_type
        if geom.is_empty:
            raise InvalidAOIError(f"the AOI is empty ({gtype}): draw or upload an area first")
        if gtype not in _POLYGON_TYPES:
            raise InvalidAOIError(
                f"the AOI must be a Polygon or MultiPolygon, got a {gtype!r}: draw an area, "
                "not a line or a point"
            )
        w, s, e, n = self.bbox
        if w < -180 or e > 180 or s < -90 or n > 90:
            raise InvalidAOIError(
                f"the AOI bbox {self.bbox!r} leaves the lon/lat range (-180..180, -90..90): "
                "give coordinates in EPSG:4326 degrees, longitude first"
            )
        if e - w > 180:
            raise InvalidAOIError(
                f"the AOI spans {e - w:.1f}° of longitude (bbox {self.bbox!r}); it probably "
                "crosses the antimeridian (180°), which TerraLens does not support: split it "
                "into two AOIs, one on each side"
            )
        if not geom.is_valid:
            reason = shapely.validation.explain_validity(geom)
            if reason.startswith("Too few points"):
                raise InvalidAOIError(
                    f"the AOI has zero area ({reason}, bbox {self.bbox!r}): draw an area"
                )
            raise InvalidAOIError(
                f"the AOI outline is invalid ({reason}): redraw it so that its edges do not cross"
            )
        area = self.area_km2
        if area <= 0:
            raise InvalidAOIError(f"the AOI has zero area (bbox {self.bbox!r}): draw an area")
        if area > max_km2:
            raise InvalidAOIError(
                f"the AOI covers {area:,.1f} km², more than the limit of {max_km2:,.1f} km²: "
                f"draw a smaller area (or raise {area_setting})"
            )
        window = self.window_km2
        if window > max_window_km2:
            w, s, e, n = self.bbox
            raise InvalidAOIError(
                f"the AOI covers only {area:,.1f} km², but its bounding box ({w:.4f}, {s:.4f}, "
                f"{e:.4f}, {n:.4f}) covers {window:,.1f} km² (about {window * 1e4 / 1e6:,.1f} "
                f"million pixels at 10 m), more than the window limit of {max_window_km2:,.1f} "
                "km²: scenes are read over the whole box, so split the area into parts that lie "
                f"close together (e.g. one AOI per field) and run each, or raise {window_setting}"
            )
        return self


def _check_limit(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not value > 0:
        raise InvalidAOIError(f"{what} must be a finite, positive number, got {value!r}")


def _local(tag: str) -> str:
    """The XML tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def _kml_ring(element: ET.Element | None) -> list[tuple[float, float]]:
    if element is None:
        return []
    coords = next((el for el in element.iter() if _local(el.tag) == "coordinates"), None)
    text = coords.text if coords is not None else None
    if not text or not text.strip():
        raise InvalidAOIError("a KML polygon ring has no <coordinates>")
    points: list[tuple[float, float]] = []
    for token in text.split():
        parts = token.split(",")
        try:
            lon, lat = float(parts[0]), float(parts[1])
        except (ValueError, IndexError) as err:
            raise InvalidAOIError(
                f"KML coordinate {token!r} is not 'lon,lat[,alt]'"
            ) from err
        points.append((lon, lat))
    if len(points) < 3:
        raise InvalidAOIError(f"a KML polygon ring needs at least 3 points, got {points!r}")
    return points


def _kml_polygon(element: ET.Element) -> Polygon:
    outer = next((el for el in element if _local(el.tag) == "outerBoundaryIs"), None)
    if outer is None:
        raise InvalidAOIError("a KML <Polygon> has no <outerBoundaryIs>")
    holes = [_kml_ring(el) for el in element if _local(el.tag) == "innerBoundaryIs"]
    return Polygon(_kml_ring(outer), holes)


def _geojson_to_shape(obj: Any) -> BaseGeometry:
    """Turn a GeoJSON geometry / Feature / FeatureCollection into one shapely geometry."""
    if not isinstance(obj, Mapping):
        raise InvalidAOIError(f"AOI GeoJSON must be an object, got {obj!r:.120}")
    gtype = obj.get("type")
    if gtype == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list) or not features:
            raise InvalidAOIError(
                "the GeoJSON FeatureCollection has no features: add the AOI polygon to it"
            )
        return _union(list(_feature_shapes(features)))
    if gtype == "Feature":
        return next(iter(_feature_shapes([obj])))
    if gtype == "GeometryCollection":
        members = obj.get("geometries") or []
        if not members:
            raise InvalidAOIError("the GeoJSON GeometryCollection is empty")
        return _union([_geometry_from_mapping(g) for g in members])
    return _geometry_from_mapping(obj)


def _feature_shapes(features: Iterable[Any]) -> Iterable[BaseGeometry]:
    for feature in features:
        geometry = feature.get("geometry") if isinstance(feature, Mapping) else None
        if not geometry:
            raise InvalidAOIError(f"a GeoJSON feature has no geometry: {feature!r:.120}")
        yield _geojson_to_shape(geometry)
