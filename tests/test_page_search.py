"""AppTest of the Search page: AOI input and validation, search against the real STAC API,
the results table, scene selection and loading."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
from pathlib import Path

import morecantile
import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from app.aoi import AOI
from app.catalog import SearchRequest, search_scenes
from app.held_tiles import held_rasters
from app.tiles import TileService, tile_routes
from app.ui import search_view
from app.ui.state import W
from tests.fixtures.app_server import map_scripts, page_test
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat

PAGE = "1_Search.py"
#: A 1.8 km square inside tile A of the generated scenes (UTM 33N metres).
AOI_A_UTM = (500_600.0, 4_983_600.0, 502_400.0, 4_985_400.0)
START, END = dt.date(2021, 1, 1), dt.date(2023, 12, 31)


@pytest.fixture
def aoi_a() -> AOI:
    return AOI.from_geojson(utm_box_to_lonlat(*AOI_A_UTM))


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _search(at, *, start: dt.date = START, end: dt.date = END, cloud: int = 100):
    at.date_input(key=W.START).set_value(start)
    at.date_input(key=W.END).set_value(end)
    at.slider(key=W.MAX_CLOUD).set_value(cloud)
    return at.button(key="FormSubmitter:search_form-Search").click().run()


def test_empty_page_asks_for_an_area(app_env: Path) -> None:
    at = page_test(PAGE).run()
    assert not at.exception
    assert any("No area yet" in i.value for i in at.info)
    # Searching without an AOI says what to do instead of failing.
    at.button(key="FormSubmitter:search_form-Search").click().run()
    assert any("area of interest first" in e for e in _errors(at))


def test_typed_bbox_becomes_the_aoi_with_its_area(app_env: Path) -> None:
    at = page_test(PAGE).run()
    at.text_input(key=W.BBOX).input("15.0, 45.0, 15.03, 45.02")
    at.button(key=W.USE_BBOX).click().run()
    assert not at.exception and not _errors(at)
    expected = AOI.from_bbox(15.0, 45.0, 15.03, 45.02).area_km2
    [metric] = [m for m in at.metric if m.label == "AOI area"]
    assert metric.value == f"{expected:,.2f} km²"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10, 40, 12, 42", "more than the limit of 10,000.0 km²"),
        ("15, 45, 15.1", "four numbers"),
        ("15, 45, 14, 46", "antimeridian"),
        ("a, b, c, d", "four numbers in degrees"),
    ],
)
def test_bad_bbox_is_refused_with_a_clear_message(app_env: Path, text: str, message: str) -> None:
    at = page_test(PAGE).run()
    at.text_input(key=W.BBOX).input(text)
    at.button(key=W.USE_BBOX).click().run()
    assert not at.exception
    assert any(message in e for e in _errors(at)), _errors(at)
    assert not at.metric  # no AOI was set


def test_pasted_geojson_becomes_the_aoi(app_env: Path, aoi_a: AOI) -> None:
    at = page_test(PAGE).run()
    at.text_area(key=W.PASTE).input(aoi_a.to_json())
    at.button(key=W.USE_UPLOAD).click().run()
    assert not at.exception and not _errors(at)
    assert at.session_state["aoi"] == aoi_a.to_json()
    at.text_area(key=W.PASTE).input('{"type": "Polygon"')
    at.button(key=W.USE_UPLOAD).click().run()
    assert any("not valid JSON" in e for e in _errors(at))


def test_huge_seeded_aoi_shows_the_limit(app_env: Path) -> None:
    at = page_test(PAGE)
    at.session_state["aoi"] = AOI.from_bbox(10, 40, 12, 42).to_json()
    at.run()
    assert not at.exception
    assert any("more than the limit" in e for e in _errors(at))


def test_a_region_above_the_run_limit_is_an_aoi_for_searching(app_env: Path) -> None:
    at = page_test(PAGE).run()
    at.text_input(key=W.BBOX).input("15.0, 45.0, 15.2, 45.1")  # about 175 km²
    at.button(key=W.USE_BBOX).click().run()
    assert not at.exception and not _errors(at), _errors(at)
    assert at.session_state["aoi"] is not None
    assert any("can be searched" in i.value and "TERRALENS_MAX_AOI_KM2" in i.value
               for i in at.info)
    # Beyond the search limit the area is refused, naming the search setting.
    at.text_input(key=W.BBOX).input("10, 40, 12, 42")
    at.button(key=W.USE_BBOX).click().run()
    assert any("more than the limit of 10,000.0 km²" in e and "TERRALENS_MAX_SEARCH_KM2" in e
               for e in _errors(at)), _errors(at)
    assert AOI.from_json(at.session_state["aoi"]).area_km2 < 200, "the earlier AOI stays"


def test_end_before_start_is_refused(app_env: Path, aoi_a: AOI) -> None:
    at = page_test(PAGE)
    at.session_state["aoi"] = aoi_a.to_json()
    at.run()
    _search(at, start=dt.date(2022, 6, 1), end=dt.date(2022, 5, 1))
    assert not at.exception
    assert any("is before start date" in e for e in _errors(at)), _errors(at)


def test_unreachable_catalog_names_the_url(app_env: Path, aoi_a: AOI) -> None:
    at = page_test(PAGE)
    at.session_state["aoi"] = aoi_a.to_json()
    at.run()
    _search(at)
    assert not at.exception
    url = os.environ["TERRALENS_STAC_URL"]
    assert any(url in e for e in _errors(at)), _errors(at)  # in a code span: shown literally
    assert any("TERRALENS_STAC_URL" in i.value for i in at.info)


@pytest.mark.integration
def test_search_lists_the_catalog_scenes_and_loads_one(
    app_env: Path, aoi_a: AOI, stac_api_url: str, s2_scene_set: SceneSet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    expected = search_scenes(
        SearchRequest(aoi=aoi_a, start=START, end=END, max_cloud=100.0), stac_url=stac_api_url
    )
    assert len(expected) >= 3
    at = page_test(PAGE)
    at.session_state["aoi"] = aoi_a.to_json()
    at.run()
    _search(at)
    assert not at.exception and not _errors(at)
    table = at.dataframe[0].value
    assert len(table) == len(expected)
    assert list(table["Item id"]) == [s.id for s in expected]
    assert list(table["AOI coverage %"]) == [round(s.aoi_coverage, 1) for s in expected]

    # The cloud filter hides cloudy scenes without searching again.
    at.slider(key=W.FILTER_CLOUD).set_value(10).run()
    shown = at.dataframe[0].value
    assert list(shown["Item id"]) == [
        s.id for s in expected if s.cloud_cover is not None and s.cloud_cover <= 10
    ]

    # A selected scene (dataframe selection cannot be clicked in AppTest: seed it) can be loaded.
    chosen = next(s for s in expected if s.id == "S2A_T33TWL_20220615_A")
    at.session_state["selected_scene_id"] = chosen.id
    at.run()
    assert any(chosen.id in h.value for h in at.subheader)
    assert at.image, "the catalog preview of the selected scene is shown"
    at.button(key=W.LOAD).click().run()
    assert not at.exception and not _errors(at)
    scene = at.session_state["scene"]
    assert scene.attrs["scene_id"].startswith(chosen.id)
    cloud, _ = s2_scene_set.expected_shares(chosen.id, aoi_a.geometry)
    text = "\n".join(m.value for m in at.markdown)
    shown = re.search(r"\*\*AOI cloud share\*\* ([0-9.]+)%", text)
    assert shown is not None, text
    assert float(shown.group(1)) == pytest.approx(100 * cloud, abs=1.0)  # 20 m SCL truth
    assert "1000 DN subtracted" in text
    # The true-colour preview went onto the map state and a link leads to the Run page.
    assert at.session_state["scene_preview"] is not None
    # The preview is drawn from the app's tiles (a held copy of its bands), not inlined.
    [script] = map_scripts(at)
    assert "data:image" not in script and "L.imageOverlay(" not in script
    [url] = [u.replace("\\u0026", "&")  # as the browser reads the JSON string
             for u in re.findall(r'L\.tileLayer\(\s*"(/tiles/held/[^"]+)"', script)]
    service = TileService(app_env / "runs", held=held_rasters())
    client = TestClient(Starlette(routes=tile_routes(lambda: service)))
    w, s, e, n = aoi_a.bbox
    tile = next(iter(morecantile.tms.get("WebMercatorQuad").tiles(w, s, e, n, zooms=[15])))
    response = client.get(url.format(z=tile.z, x=tile.x, y=tile.y))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))
    assert (rgba[..., 3] == 255).sum() > 1000, "the scene's pixels are in the tile"
    assert client.get(url.replace(url.split("/")[3], "A" * 24).format(
        z=tile.z, x=tile.x, y=tile.y)).status_code == 404
    assert any("run" in str(link.proto.page) for link in at.get("page_link"))


@pytest.mark.integration
def test_a_large_region_is_searched_but_only_a_run_sized_area_is_loaded(
    app_env: Path, stac_api_url: str, s2_scene_set: SceneSet, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    large = AOI.from_geojson(utm_box_to_lonlat(494_000.0, 4_977_000.0, 509_000.0, 4_992_000.0))
    assert 100 < large.area_km2 < 400  # above the run limit (100 km²), far below the search one
    at = page_test(PAGE)
    at.session_state["aoi"] = large.to_json()
    at.run()
    _search(at)
    assert not at.exception and not _errors(at), _errors(at)
    table = at.dataframe[0].value
    assert len(table) >= 3
    at.session_state["selected_scene_id"] = table["Item id"][0]
    at.run()
    warning = next(w.value for w in at.warning if "Loading needs a smaller area" in w.value)
    assert "TERRALENS_MAX_AOI_KM2" in warning and "100.0 km²" in warning
    assert at.button(key=W.LOAD).disabled
    assert at.session_state["scene"] is None if "scene" in at.session_state else True


@pytest.mark.integration
def test_search_without_results_says_what_to_change(
    app_env: Path, aoi_a: AOI, stac_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    at = page_test(PAGE)
    at.session_state["aoi"] = aoi_a.to_json()
    at.run()
    _search(at, start=dt.date(2019, 1, 1), end=dt.date(2019, 2, 1))
    assert not at.exception
    assert any("Widen the date range" in w.value for w in at.warning)
    assert not at.dataframe


def test_new_drawing_is_detected_once() -> None:
    drawing = {"type": "Feature", "properties": {},
               "geometry": {"type": "Polygon", "coordinates": [[[15, 45], [15.01, 45],
                                                                [15.01, 45.01], [15, 45]]]}}
    value = {"last_active_drawing": drawing}
    first = search_view.new_drawing(value, None)
    assert first is not None
    assert search_view.new_drawing(value, first) is None
    assert search_view.new_drawing({"last_active_drawing": None}, first) is None
    assert search_view.aoi_from_map(value).area_km2 > 0


@pytest.mark.parametrize(("same_area", "warned"), [(True, False), (False, True)])
def test_a_loaded_scene_warns_when_the_area_changed_since(
    app_env: Path, aoi_a: AOI, same_area: bool, warned: bool
) -> None:
    from tests.fixtures.models import s2_window

    scene = s2_window(24, 20, seed=5)
    scene.attrs.update({"scene_id": "S2A_TEST_SCENE", "datetime": "2022-06-15T10:00:31Z"})
    at = page_test(PAGE)
    at.session_state["scene"] = scene
    # The scene's AOI as a Feature: the same area in another spelling is not a change.
    at.session_state["scene_aoi"] = (
        '{"type": "Feature", "properties": {}, "geometry": ' + aoi_a.to_json() + "}")
    at.session_state["aoi"] = (aoi_a if same_area else AOI.from_bbox(15, 45, 15.01, 45.01)
                               ).to_json()
    at.run()
    assert not at.exception
    assert any("Loaded scene" in h.value for h in at.subheader)
    changed = [w.value for w in at.warning if "area changed" in w.value]
    assert bool(changed) is warned, changed


def test_jump_to_moves_the_map_and_its_last_report_does_not_undo_it(app_env: Path) -> None:
    """'Jump to' passes the typed place to the map; the map's previous report of its view
    (still in the session) does not pull it back."""
    from tests.fixtures.app_server import map_args

    at = page_test(PAGE)
    at.run()
    at.session_state[W.SEARCH_MAP] = {"center": {"lat": 20.0, "lng": 0.0}, "zoom": 3,
                                      "last_active_drawing": None}
    at.run()
    at.number_input(key=W.JUMP_LAT).set_value(46.0)
    at.number_input(key=W.JUMP_LON).set_value(14.5)
    at.button(key=W.JUMP).click().run()
    assert not at.exception
    [args] = map_args(at)
    assert args["center"] == [46.0, 14.5] and args["zoom"] == 12
    at.run()
    assert map_args(at)[0]["center"] == [46.0, 14.5]
