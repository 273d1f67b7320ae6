"""Catalog search against a real STAC API (stac-fastapi-pgstac) loaded with generated scenes."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time
from typing import Any

import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from app.aoi import AOI
from app.catalog import (
    Collection,
    SceneSummary,
    SearchRequest,
    SearchResults,
    search_scenes,
    summarise_item,
)
from inference.errors import CatalogError, InvalidRequestError
from tests.fixtures.s2_scenes import EPSG, S2_COLLECTION, SceneSet, tile_box, utm_box_to_lonlat
from tests.fixtures.stac_api import closed_port_url, local_http_server

integration = pytest.mark.integration

#: Inside tile A only (UTM metres).
AOI_A_UTM = (500_600.0, 4_983_600.0, 502_400.0, 4_985_400.0)
#: Straddling tiles A and B: half in each.
AOI_AB_UTM = (501_500.0, 4_983_500.0, 504_500.0, 4_985_500.0)
#: Inside tile C only.
AOI_C_UTM = (500_600.0, 5_013_600.0, 502_400.0, 5_015_400.0)

ALL_DAYS = ("2020-01-01", "2024-12-31")


def aoi_utm(bounds: tuple[float, float, float, float]) -> AOI:
    return AOI.from_geojson(utm_box_to_lonlat(*bounds))


def expected_ids(scene_set: SceneSet, tiles: set[str], *, collection: str = S2_COLLECTION,
                 max_cloud: float = 100.0, start: str = ALL_DAYS[0],
                 end: str = ALL_DAYS[1]) -> list[str]:
    """Truth from the generator: ids in datetime order."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    specs = [
        s.spec for s in scene_set.scenes.values()
        if s.spec.tile in tiles and s.spec.collection == collection
        and s.spec.cloud_cover <= max_cloud and first <= s.spec.datetime.date() <= last
    ]
    return [s.item_id for s in sorted(specs, key=lambda s: (s.datetime, s.item_id))]


def ids(scenes: list[SceneSummary]) -> list[str]:
    return [s.id for s in scenes]


# -- the request ----------------------------------------------------------------------------------
def test_request_normalises_dates_and_collection() -> None:
    aoi = aoi_utm(AOI_A_UTM)
    req = SearchRequest(aoi, "2022-06-01", dt.datetime(2022, 6, 30, 12), "sentinel-1-rtc", 10, 5)
    assert req.start == dt.date(2022, 6, 1)
    assert req.end == dt.date(2022, 6, 30)
    assert req.collection is Collection.SENTINEL_1_RTC
    assert req.cloud_filter() is None  # radar: no cloud filter
    assert req == SearchRequest(aoi, dt.date(2022, 6, 1), "2022-06-30", "sentinel-1-rtc", 10.0, 5)
    assert hash(req) == hash(SearchRequest(aoi, "2022-06-01", "2022-06-30", "sentinel-1-rtc",
                                           10, 5))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"start": "2022-06-30", "end": "2022-06-01"}, "before start date '2022-06-30'"),
        ({"start": "30/06/2022"}, "'30/06/2022'"),
        ({"max_cloud": 101}, "0..100, got 101"),
        ({"max_cloud": -1}, "got -1"),
        ({"limit": 0}, "1..500, got 0"),
        ({"limit": 501}, "got 501"),
        ({"limit": 2.5}, "got 2.5"),
        ({"collection": "landsat-c2-l2"}, "unknown collection 'landsat-c2-l2'"),
        ({"aoi": "15,45,16,46"}, "app.aoi.AOI"),
    ],
)
def test_request_rejects_bad_values(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"aoi": aoi_utm(AOI_A_UTM), "start": "2022-06-01",
                            "end": "2022-06-30"}
    args.update(kwargs)
    with pytest.raises(InvalidRequestError) as info:
        SearchRequest(**args)
    assert fragment in str(info.value)


# -- search against the real API ------------------------------------------------------------------
@integration
def test_search_filters_cloud_cover_and_sorts_by_date(
    stac_api_url: str, s2_scene_set: SceneSet
) -> None:
    aoi = aoi_utm(AOI_A_UTM)
    every = search_scenes(SearchRequest(aoi, *ALL_DAYS, max_cloud=100, limit=50),
                          stac_url=stac_api_url)
    assert ids(every) == expected_ids(s2_scene_set, {"A"})
    assert [s.datetime for s in every] == sorted(s.datetime for s in every)
    clear = search_scenes(SearchRequest(aoi, *ALL_DAYS, max_cloud=10, limit=50),
                          stac_url=stac_api_url)
    assert ids(clear) == expected_ids(s2_scene_set, {"A"}, max_cloud=10)
    assert clear and all(s.cloud_cover is not None and s.cloud_cover <= 10 for s in clear)
    assert len(clear) < len(every)


@integration
def test_search_filters_by_date_inclusive_days(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    aoi = aoi_utm(AOI_A_UTM)
    found = search_scenes(SearchRequest(aoi, "2022-06-15", "2022-06-15", max_cloud=100),
                          stac_url=stac_api_url)
    assert ids(found) == expected_ids(s2_scene_set, {"A"}, start="2022-06-15", end="2022-06-15")
    assert len(found) == 1


@integration
def test_search_filters_by_area(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    only_c = search_scenes(SearchRequest(aoi_utm(AOI_C_UTM), *ALL_DAYS, max_cloud=100),
                           stac_url=stac_api_url)
    assert ids(only_c) == expected_ids(s2_scene_set, {"C"})
    both = search_scenes(SearchRequest(aoi_utm(AOI_AB_UTM), *ALL_DAYS, max_cloud=100),
                         stac_url=stac_api_url)
    assert ids(both) == expected_ids(s2_scene_set, {"A", "B"})


@integration
def test_limit_keeps_the_most_recent_scenes(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    truth = expected_ids(s2_scene_set, {"A", "B"})
    found = search_scenes(SearchRequest(aoi_utm(AOI_AB_UTM), *ALL_DAYS, max_cloud=100, limit=2),
                          stac_url=stac_api_url)
    assert ids(found) == truth[-2:]


@integration
def test_paging_collects_every_page(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    truth = expected_ids(s2_scene_set, {"A", "B"})
    assert len(truth) > 4
    found = search_scenes(SearchRequest(aoi_utm(AOI_AB_UTM), *ALL_DAYS, max_cloud=100, limit=50),
                          stac_url=stac_api_url, page_size=2)
    assert ids(found) == truth
    capped = search_scenes(SearchRequest(aoi_utm(AOI_AB_UTM), *ALL_DAYS, max_cloud=100, limit=3),
                           stac_url=stac_api_url, page_size=2)
    assert ids(capped) == truth[-3:]


@integration
def test_aoi_coverage_matches_utm_truth(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    aoi = aoi_utm(AOI_AB_UTM)
    found = search_scenes(SearchRequest(aoi, "2022-06-15", "2022-06-15", max_cloud=100),
                          stac_url=stac_api_url)
    assert {s.id for s in found} == {"S2A_T33TWL_20220615_A", "S2A_T33TXL_20220615_B"}
    to_utm = Transformer.from_crs(4326, EPSG, always_xy=True)
    aoi_m = shapely.transform(aoi.shape, to_utm.transform, interleaved=False)
    for scene in found:
        tile = s2_scene_set.scenes[scene.id].spec.tile
        truth = aoi_m.intersection(tile_box(tile)).area / aoi_m.area * 100
        assert scene.aoi_coverage == pytest.approx(truth, abs=0.5)
    assert sum(s.aoi_coverage for s in found) == pytest.approx(100.0, abs=0.5)
    inside = search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), "2022-06-15", "2022-06-15",
                                         max_cloud=100), stac_url=stac_api_url)
    assert inside[0].aoi_coverage == pytest.approx(100.0, abs=0.01)


@integration
def test_summary_carries_item_metadata(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    found = search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), "2022-06-15", "2022-06-15",
                                        max_cloud=100), stac_url=stac_api_url)
    scene = found[0]
    generated = s2_scene_set.scenes[scene.id]
    assert scene.collection == "sentinel-2-l2a"
    assert scene.datetime == generated.spec.datetime
    assert scene.platform == generated.spec.platform
    assert scene.processing_baseline == generated.spec.baseline
    assert scene.mgrs_tile == "33TWL"
    assert scene.cloud_cover == generated.spec.cloud_cover
    assert scene.thumbnail_href == str(generated.paths["rendered_preview"])
    assert scene.item["assets"]["B04"]["href"] == str(generated.paths["B04"])
    assert shape(scene.footprint).equals_exact(shape(generated.item["geometry"]), 1e-9)
    record = scene.to_record()
    assert record["datetime"] == "2022-06-15T10:00:31Z"
    assert json.loads(json.dumps(record))["eo:cloud_cover"] == generated.spec.cloud_cover


@integration
def test_radar_search_ignores_cloud_filter(stac_api_url: str, s2_scene_set: SceneSet) -> None:
    found = search_scenes(
        SearchRequest(aoi_utm(AOI_A_UTM), *ALL_DAYS, collection="sentinel-1-rtc", max_cloud=0),
        stac_url=stac_api_url,
    )
    assert ids(found) == expected_ids(s2_scene_set, {"A"}, collection="sentinel-1-rtc")
    assert found[0].cloud_cover is None


@integration
def test_no_match_gives_an_empty_list(stac_api_url: str) -> None:
    found = search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), "2019-01-01", "2019-12-31"),
                          stac_url=stac_api_url)
    assert isinstance(found, SearchResults)
    assert found == []
    assert found.skipped == 0


# -- failures -------------------------------------------------------------------------------------
def test_unreachable_catalog_fails_fast_with_the_url() -> None:
    url = closed_port_url()
    began = time.monotonic()
    with pytest.raises(CatalogError) as info:
        search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), *ALL_DAYS), stac_url=url, timeout_s=5)
    assert time.monotonic() - began < 5.0
    assert url in str(info.value)


@pytest.mark.parametrize("url", ["ftp://example.org/stac", "not a url", ""])
def test_malformed_catalog_url_is_refused(url: str) -> None:
    with pytest.raises(CatalogError, match="http"):
        search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), *ALL_DAYS), stac_url=url)


def _landing(base: str) -> dict[str, Any]:
    return {
        "type": "Catalog", "id": "broken", "description": "test", "stac_version": "1.0.0",
        "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                       "https://api.stacspec.org/v1.0.0/item-search"],
        "links": [
            {"rel": "self", "href": base, "type": "application/json"},
            {"rel": "root", "href": base, "type": "application/json"},
            {"rel": "search", "href": f"{base}/search", "type": "application/geo+json",
             "method": "POST"},
        ],
    }


def test_malformed_items_are_skipped_and_counted(s2_scene_set: SceneSet) -> None:
    good = copy.deepcopy(s2_scene_set.scenes["S2A_T33TWL_20220615_A"].item)
    no_datetime = copy.deepcopy(good)
    no_datetime["id"] = "no-datetime"
    no_datetime["properties"]["datetime"] = None
    no_geometry = copy.deepcopy(good)
    no_geometry["id"] = "no-geometry"
    no_geometry["geometry"] = None
    answer = {"type": "FeatureCollection", "features": [no_datetime, good, no_geometry],
              "links": []}
    state: dict[str, str] = {}

    def handler(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        if path == "/stac":
            return 200, "application/json", json.dumps(_landing(state["base"])).encode()
        if path == "/stac/search":
            return 200, "application/geo+json", json.dumps(answer).encode()
        return 404, "text/plain", b"not found"

    with local_http_server(handler) as base:
        state["base"] = f"{base}/stac"
        found = search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), *ALL_DAYS),
                              stac_url=state["base"])
    assert ids(found) == ["S2A_T33TWL_20220615_A"]
    assert found.skipped == 2
    assert found.skipped_ids == ["no-datetime", "no-geometry"]


def test_server_errors_become_catalog_errors() -> None:
    state: dict[str, str] = {}

    def handler(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        if path == "/stac":
            return 200, "application/json", json.dumps(_landing(state["base"])).encode()
        return 400, "application/json", b'{"code": "BadRequest", "description": "bad filter"}'

    with local_http_server(handler) as base:
        state["base"] = f"{base}/stac"
        with pytest.raises(CatalogError, match="bad filter") as info:
            search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), *ALL_DAYS), stac_url=state["base"])
    assert state["base"] in str(info.value)


def test_a_page_that_is_not_stac_is_reported() -> None:
    def handler(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        return 200, "text/html", b"<html>hello</html>"

    with local_http_server(handler) as base, pytest.raises(CatalogError, match=base):
        search_scenes(SearchRequest(aoi_utm(AOI_A_UTM), *ALL_DAYS), stac_url=base)


def test_summarise_item_rejects_items_without_geometry_or_date(s2_scene_set: SceneSet) -> None:
    item = copy.deepcopy(s2_scene_set.scenes["S2A_T33TWL_20220615_A"].item)
    aoi = aoi_utm(AOI_A_UTM)
    assert summarise_item(item, aoi) is not None
    item["properties"]["datetime"] = "yesterday"
    assert summarise_item(item, aoi) is None
    item["properties"]["datetime"] = "2022-06-15T10:00:00Z"
    item["geometry"] = {"type": "Polygon", "coordinates": "oops"}
    assert summarise_item(item, aoi) is None


def test_scene_href_is_the_self_link_or_the_api_item_url():
    from app.catalog import scene_href

    item = {"id": "S2A x/1", "collection": "sentinel-2-l2a",
            "links": [{"rel": "self", "href": "https://stac.example/items/S2A"}]}
    assert scene_href(item, "https://other.example/") == "https://stac.example/items/S2A"
    item["links"] = []
    assert scene_href(item, "https://api.example/stac/v1/") == (
        "https://api.example/stac/v1/collections/sentinel-2-l2a/items/S2A%20x%2F1")
    assert scene_href({"id": "x"}, "https://api.example") is None
