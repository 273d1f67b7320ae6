"""AOI parsing and validation: what an analyst drawing or uploading an area would notice."""

from __future__ import annotations

import json
import math

import pytest

from app.aoi import AOI
from inference.errors import InvalidAOIError

# Authalic (equal-area) radius of WGS84: a spherical lat/lon box area within ~0.3 %.
R_AUTHALIC_KM = 6371.0072


def _sphere_box_km2(w: float, s: float, e: float, n: float) -> float:
    return (
        R_AUTHALIC_KM**2 * math.radians(e - w)
        * (math.sin(math.radians(n)) - math.sin(math.radians(s)))
    )


def _square(x0: float, y0: float, size: float) -> list[list[float]]:
    return [[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]]


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark><name>field</name>
<Polygon><outerBoundaryIs><LinearRing><coordinates>
 15.0,45.0,0 15.1,45.0,0 15.1,45.1,0 15.0,45.1,0 15.0,45.0,0
</coordinates></LinearRing></outerBoundaryIs>
<innerBoundaryIs><LinearRing><coordinates>
 15.04,45.04 15.06,45.04 15.06,45.06 15.04,45.06 15.04,45.04
</coordinates></LinearRing></innerBoundaryIs></Polygon></Placemark></Document></kml>"""


def test_bbox_area_is_geodesic_and_bbox_round_trips() -> None:
    aoi = AOI.from_bbox(15.0, 45.0, 15.1, 45.1)
    assert aoi.bbox == pytest.approx((15.0, 45.0, 15.1, 45.1))
    assert aoi.area_km2 == pytest.approx(_sphere_box_km2(15.0, 45.0, 15.1, 45.1), rel=5e-3)
    assert aoi.centroid == pytest.approx((15.05, 45.05))
    # Degrees shrink towards the poles: the same box at 70° N is much smaller.
    assert AOI.from_bbox(15.0, 70.0, 15.1, 70.1).area_km2 < 0.5 * aoi.area_km2


def test_json_round_trip_equality_and_hash() -> None:
    aoi = AOI.from_bbox(15.0, 45.0, 15.1, 45.1)
    again = AOI.from_json(aoi.to_json())
    assert again == aoi
    assert hash(again) == hash(aoi)
    assert AOI.from_bbox(15.0, 45.0, 15.1, 45.2) != aoi
    feature = aoi.to_feature(name="x")
    assert feature["type"] == "Feature"
    assert feature["properties"]["name"] == "x"
    assert feature["properties"]["area_km2"] == pytest.approx(aoi.area_km2)
    assert AOI.from_geojson(json.dumps(feature)) == aoi


def test_from_geojson_accepts_geometry_feature_and_collection() -> None:
    ring = _square(15.0, 45.0, 0.05)
    geometry = {"type": "Polygon", "coordinates": [ring]}
    feature = {"type": "Feature", "properties": {}, "geometry": geometry}
    assert AOI.from_geojson(geometry) == AOI.from_geojson(json.dumps(feature))
    second = {"type": "Feature", "properties": {},
              "geometry": {"type": "Polygon", "coordinates": [_square(15.2, 45.0, 0.05)]}}
    merged = AOI.from_geojson({"type": "FeatureCollection", "features": [feature, second]})
    assert merged.geometry["type"] == "MultiPolygon"
    single = AOI.from_geojson(geometry).area_km2
    assert merged.area_km2 == pytest.approx(2 * single, rel=1e-3)
    merged.validate(max_km2=100)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "FeatureCollection", "features": []}', "no features"),
        ('{"type": "Feature", "properties": {}, "geometry": null}', "no geometry"),
        ('{"type": "Polygon", "coordinates": "abc"}', "cannot be read"),
        ('{"coordinates": [1, 2]}', "no GeoJSON 'type'"),
        ("[1, 2]", "must be an object"),
    ],
)
def test_from_geojson_rejects_unreadable_input(data: str, fragment: str) -> None:
    with pytest.raises(InvalidAOIError, match=fragment):
        AOI.from_geojson(data)


def test_from_kml_reads_polygons_with_holes() -> None:
    aoi = AOI.from_kml(KML)
    outer = _sphere_box_km2(15.0, 45.0, 15.1, 45.1)
    hole = _sphere_box_km2(15.04, 45.04, 15.06, 45.06)
    assert aoi.area_km2 == pytest.approx(outer - hole, rel=5e-3)
    assert aoi.validate(max_km2=100) is aoi


def test_from_kml_errors_name_the_problem() -> None:
    with pytest.raises(InvalidAOIError, match="not valid KML"):
        AOI.from_kml("<kml><Placemark>")
    line = KML.replace("Polygon", "LineString")
    with pytest.raises(InvalidAOIError, match="no <Polygon>"):
        AOI.from_kml(line)
    with pytest.raises(InvalidAOIError, match=r"'15\.0;45\.0'"):
        AOI.from_kml(KML.replace("15.0,45.0,0 15.1", "15.0;45.0 15.1"))


def test_from_drawing_prefers_last_active_then_all_drawings() -> None:
    first = {"type": "Feature", "properties": {},
             "geometry": {"type": "Polygon", "coordinates": [_square(15.0, 45.0, 0.02)]}}
    last = {"type": "Feature", "properties": {},
            "geometry": {"type": "Polygon", "coordinates": [_square(15.5, 45.5, 0.03)]}}
    value = {"last_active_drawing": last, "all_drawings": [first, last], "zoom": 10}
    assert AOI.from_drawing(value) == AOI.from_geojson(last)
    value = {"last_active_drawing": None, "all_drawings": [first]}
    assert AOI.from_drawing(value) == AOI.from_geojson(first)


def test_from_drawing_turns_a_circle_into_a_polygon() -> None:
    circle = {"type": "Feature", "properties": {"radius": 2000.0},
              "geometry": {"type": "Point", "coordinates": [15.0, 45.0]}}
    aoi = AOI.from_drawing({"last_active_drawing": circle, "all_drawings": [circle]})
    assert aoi.geometry["type"] == "Polygon"
    assert aoi.area_km2 == pytest.approx(math.pi * 2.0**2, rel=0.01)
    assert aoi.centroid == pytest.approx((15.0, 45.0), abs=1e-4)


@pytest.mark.parametrize(
    "value", [None, {}, {"last_active_drawing": None, "all_drawings": None},
              {"last_active_drawing": None, "all_drawings": []}],
)
def test_from_drawing_without_a_drawing_says_draw_one(value: dict | None) -> None:
    with pytest.raises(InvalidAOIError, match="draw a rectangle or polygon"):
        AOI.from_drawing(value)


def test_from_drawing_refuses_a_marker() -> None:
    marker = {"type": "Feature", "properties": {},
              "geometry": {"type": "Point", "coordinates": [15.0, 45.0]}}
    with pytest.raises(InvalidAOIError, match="point marker"):
        AOI.from_drawing({"last_active_drawing": marker})


def test_validate_refuses_a_huge_aoi_with_area_and_limit_in_the_message() -> None:
    aoi = AOI.from_bbox(14.0, 44.0, 16.0, 46.0)
    with pytest.raises(InvalidAOIError) as info:
        aoi.validate(max_km2=100)
    message = str(info.value)
    assert f"{aoi.area_km2:,.1f} km²" in message
    assert "100.0 km²" in message
    assert aoi.validate(max_km2=aoi.area_km2 + 1) is aoi


def test_validate_refuses_empty_and_non_polygons() -> None:
    with pytest.raises(InvalidAOIError, match="empty"):
        AOI({"type": "Polygon", "coordinates": []}).validate(100)
    with pytest.raises(InvalidAOIError, match="'LineString'"):
        AOI({"type": "LineString", "coordinates": [[15, 45], [15.1, 45.1]]}).validate(100)
    with pytest.raises(InvalidAOIError, match="zero area"):
        AOI.from_bbox(15.0, 45.0, 15.0, 45.1).validate(100)


def test_validate_refuses_self_intersection_without_repairing_it() -> None:
    ring = [[15.0, 45.0], [15.1, 45.1], [15.1, 45.0], [15.0, 45.1], [15.0, 45.0]]
    bowtie = {"type": "Polygon", "coordinates": [ring]}
    aoi = AOI.from_geojson(bowtie)
    with pytest.raises(InvalidAOIError, match="Self-intersection"):
        aoi.validate(100)
    assert aoi.geometry["type"] == "Polygon"  # untouched
    repaired = aoi.made_valid().validate(100)
    assert repaired.shape.is_valid
    assert repaired.area_km2 == pytest.approx(_sphere_box_km2(15.0, 45.0, 15.1, 45.1) / 2, rel=0.01)


def test_validate_refuses_coordinates_out_of_range() -> None:
    with pytest.raises(InvalidAOIError, match=r"lon/lat range.*longitude first"):
        AOI.from_bbox(45.0, 95.0, 45.1, 95.1).validate(100)
    with pytest.raises(InvalidAOIError, match="lon/lat range"):
        AOI.from_bbox(180.5, 10.0, 181.0, 10.1).validate(100)


def test_antimeridian_crossing_is_refused_clearly() -> None:
    with pytest.raises(InvalidAOIError, match="antimeridian") as info:
        AOI.from_bbox(179.9, -17.0, -179.9, -16.9)
    assert "179.9" in str(info.value)
    wrapped = {"type": "Polygon", "coordinates": [
        [[179.9, -17.0], [-179.9, -17.0], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.0]]]}
    with pytest.raises(InvalidAOIError, match="antimeridian"):
        AOI.from_geojson(wrapped).validate(max_km2=1e9)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((15.0, 45.1, 15.1, 45.0), "south > north"),
        ((15.0, 45.0, float("nan"), 45.1), "finite"),
        (("15", 45.0, 15.1, 45.1), "number of degrees"),
    ],
)
def test_from_bbox_rejects_bad_numbers(args: tuple, fragment: str) -> None:
    with pytest.raises(InvalidAOIError, match=fragment):
        AOI.from_bbox(*args)


def test_invalid_limit_is_reported() -> None:
    with pytest.raises(InvalidAOIError, match="positive number"):
        AOI.from_bbox(15.0, 45.0, 15.1, 45.1).validate(0)
