"""End to end in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium)
against ``streamlit run app/ui/main.py`` on 127.0.0.1, with the real STAC API and a stored run.

The Search page's place search box talks to a Nominatim stand-in on 127.0.0.1
(:func:`nominatim_stub`), which also plays an unreachable service.

Screenshots go to ``test-artifacts/`` (gitignored) whether a test passes or fails; with
``TERRALENS_UPDATE_SCREENSHOTS=1`` the README screenshots in ``docs/`` are rewritten too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
import rasterio

from app.layer_names import layer_label
from app.layers import display_layers_for
from app.maps import GEOCODER_NOTHING_FOUND, GEOCODER_PLACEHOLDER, GEOCODER_UNAVAILABLE
from app.tiles import NATIVE_ZOOM_EXTRA, layer_extent, layer_id
from app.ui.layers_view import newest_output, row_key
from tests.fixtures.app_server import ARTIFACTS, REPO, run_streamlit
from tests.fixtures.s2_scenes import SCENE_SPECS, SceneSet, _lonlat_polygon, tile_box

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update",
]
MAP_IFRAME = 'iframe[title="streamlit_folium.st_folium"]'
#: Milliseconds to wait for an element (first page loads import heavy modules).
WAIT_MS = 90_000
DOCS = REPO / "docs"
#: The one place the Nominatim stub knows (Nominatim's JSON: strings, bbox south, north, west,
#: east).
PLACE = {
    "place_id": 1, "lat": "46.0500", "lon": "14.5060", "display_name": "Ljubljana, Slovenia",
    "boundingbox": ["45.95", "46.15", "14.40", "14.60"],
    "address": {"city": "Ljubljana", "country": "Slovenia"},
}


@pytest.fixture(scope="module")
def nominatim_stub() -> Iterator[dict[str, Any]]:
    """A Nominatim stand-in on 127.0.0.1 answering ``/search?q=...&format=json`` with CORS open.

    ``q`` containing "ljubljana" finds :data:`PLACE`; "offline" closes the connection without an
    answer (what a browser sees of an unreachable service); "busy" answers HTTP 503 with an
    HTML page; anything else finds nothing.

    Yields:
        ``{"url": the service root, "queries": the parsed query strings received}``.
    """
    queries: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            queries.append(query)
            q = " ".join(query.get("q", [])).lower()
            if "offline" in q:
                self.close_connection = True  # no status line at all: a network error
                return
            if "busy" in q:  # an overloaded service: an HTML error page, not JSON
                status, ctype, body = 503, "text/html", b"<h1>503 Service Unavailable</h1>"
            else:
                status, ctype = (200 if url.path == "/search" else 404), "application/json"
                body = json.dumps([PLACE] if "ljubljana" in q else []).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{httpd.server_port}/", "queries": queries}
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, stac_api_url: str, sample_run: tuple[Any, Any],
    nominatim_stub: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """A Streamlit server on the test catalog and the Nominatim stub, with the sample run in
    its store."""
    data_dir = tmp_path_factory.mktemp("browser-data")
    _, run = sample_run
    shutil.copytree(run.path, data_dir / "runs" / run.id)
    env = {
        "TERRALENS_STAC_URL": stac_api_url,
        "TERRALENS_DATA_DIR": str(data_dir),
        "TERRALENS_WEIGHTS": "untrained",
        "TERRALENS_DEVICE": "cpu",
        "TERRALENS_MODEL_SIZE": "tiny",
        "HF_HUB_OFFLINE": "1",
        "TERRALENS_GEOCODER_URL": nominatim_stub["url"],
    }
    with run_streamlit(env, data_dir / "server.log") as url:
        yield {"url": url, "run": run, "data_dir": data_dir}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)  # expect() waits 5 s by default; first loads are slower
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 1100},
                                  accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


@contextmanager
def screenshots(page: Any, name: str) -> Iterator[None]:
    """Save ``test-artifacts/<name>.png`` on success, ``<name>-FAILED.png`` on failure."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / f"{name}-FAILED.png"), full_page=True)
        raise
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _update_docs(page: Any, name: str) -> None:
    if os.environ.get("TERRALENS_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(DOCS / name), full_page=False)


def _map(page: Any) -> Any:
    return page.frame_locator(MAP_IFRAME).first


def _wait_idle(page: Any) -> None:
    """Wait until Streamlit has finished the current script run."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText"
        ".includes('Running')"
    )


#: JS: the st_folium map exists and shows at least zoom ``arg``.
_MAP_ZOOM_AT_LEAST = """(zoom) => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const map = frame && frame.contentWindow && frame.contentWindow.map_div;
    return !!map && map.getZoom() >= zoom;
}"""


#: JS: the st_folium map shows the point ``arg`` = [lat, lon] near its centre at zoom >= 10.
_MAP_CENTRED_ON = """([lat, lon]) => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const map = frame && frame.contentWindow && frame.contentWindow.map_div;
    if (!map) return false;
    const c = map.getCenter();
    return map.getZoom() >= 10 && Math.abs(c.lat - lat) < 0.05 && Math.abs(c.lng - lon) < 0.05;
}"""


def _tile_centre(tile: str) -> tuple[float, float]:
    w, s, e, n = _lonlat_polygon(tile_box(tile)).bounds
    return (s + n) / 2, (w + e) / 2


def _set_date(page: Any, label: str, value: str) -> None:
    """Type ``YYYY-MM-DD`` into a Streamlit date input (segmented year/month/day fields)."""
    year, month, day = value.split("-")
    for part, text in (("year", year), ("month", month), ("day", day)):
        field = page.get_by_role("spinbutton", name=f"{part}, {label}")
        field.click()
        page.keyboard.type(text)
    page.keyboard.press("Tab")


def test_search_draw_and_find_scenes(page: Any, server: dict[str, Any],
                                     s2_scene_set: SceneSet) -> None:
    from playwright.sync_api import expect

    with screenshots(page, "search"):
        page.goto(server["url"])
        # (a) The Leaflet map renders offline, with the draw toolbar.
        leaflet = _map(page).locator(".leaflet-container")
        expect(leaflet).to_be_visible()
        expect(_map(page).locator("a.leaflet-draw-draw-rectangle")).to_be_visible()

        # Jump to the centre of tile A (typed coordinates), then draw a small rectangle there.
        lat, lon = _tile_centre("A")
        page.get_by_role("tab", name="Jump to").click()
        page.get_by_label("Latitude").fill(f"{lat:.5f}")
        page.get_by_label("Latitude").press("Enter")
        page.get_by_label("Longitude").fill(f"{lon:.5f}")
        page.get_by_label("Longitude").press("Enter")
        _wait_idle(page)
        page.get_by_role("button", name="Jump to", exact=True).click()
        _wait_idle(page)
        # The map pans to the typed place (streamlit-folium's map object is ``map_div``).
        page.wait_for_function(_MAP_ZOOM_AT_LEAST, arg=12)

        # (b) Drawing a rectangle with Leaflet.draw reaches Python: the AOI area appears.
        _map(page).locator("a.leaflet-draw-draw-rectangle").click()
        box = _map(page).locator(".leaflet-container").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 30, cy - 25)
        page.mouse.down()
        page.mouse.move(cx + 30, cy + 25, steps=12)
        page.mouse.up()
        area = page.get_by_test_id("stMetricValue").first
        expect(area).to_contain_text("km²")
        km2 = float(re.sub(r"[^0-9.]", "", area.inner_text()))
        assert 0.1 < km2 < 100, km2

        # (c) Searching lists the scenes of the test catalog over that area.
        _set_date(page, "Start", "2021-01-01")
        _set_date(page, "End", "2023-12-31")
        page.get_by_role("button", name="Search", exact=True).click()
        expected = [s for s in SCENE_SPECS
                    if s.tile == "A" and s.collection == "sentinel-2-l2a"
                    and s.cloud_cover <= 30]
        caption = page.get_by_text(re.compile(r"\d+ of \d+ scenes shown"))
        expect(caption).to_contain_text(f"{len(expected)} of {len(expected)} scenes shown")
        expect(page.get_by_test_id("stDataFrame")).to_be_visible()
        # The footprints are on the map.
        expect(_map(page).locator("path.leaflet-interactive")).not_to_have_count(0)
        _update_docs(page, "screenshot-search.png")


#: JS: the largest latitude span (degrees) of a shape drawn with Leaflet.draw on the st_folium
#: map (drawn layers are polygons without a GeoJSON ``feature``), 0 for none, -1 without a map.
_DRAWN_SPAN = """() => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const win = frame && frame.contentWindow;
    if (!win || !win.map_div) return -1;
    let span = 0;
    win.map_div.eachLayer((layer) => {
        if (layer instanceof win.L.Polygon && !layer.feature) {
            const b = layer.getBounds();
            span = Math.max(span, b.getNorth() - b.getSouth());
        }
    });
    return span;
}"""


def _draw_rectangle(page: Any, width: int, height: int) -> None:
    """Drag a rectangle of ``width`` × ``height`` px with Leaflet.draw at the map's centre."""
    _map(page).locator("a.leaflet-draw-draw-rectangle").click()
    box = _map(page).locator(".leaflet-container").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - width / 2, cy - height / 2)
    page.mouse.down()
    page.mouse.move(cx + width / 2, cy + height / 2, steps=12)
    page.mouse.up()


def test_a_refused_drawn_area_does_not_stay_on_the_map(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    with screenshots(page, "search-refused-drawing"):
        page.goto(server["url"])
        expect(_map(page).locator("a.leaflet-draw-draw-rectangle")).to_be_visible()
        lat, lon = _tile_centre("A")
        page.get_by_role("tab", name="Jump to").click()
        page.get_by_label("Latitude").fill(f"{lat:.5f}")
        page.get_by_label("Latitude").press("Enter")
        page.get_by_label("Longitude").fill(f"{lon:.5f}")
        page.get_by_label("Longitude").press("Enter")
        _wait_idle(page)
        page.get_by_role("button", name="Jump to", exact=True).click()
        _wait_idle(page)
        page.wait_for_function(_MAP_ZOOM_AT_LEAST, arg=12)
        # An accepted area first.
        _draw_rectangle(page, 60, 50)
        area = page.get_by_test_id("stMetricValue").first
        expect(area).to_contain_text("km²")
        accepted = area.inner_text()
        _wait_idle(page)
        # Zoomed out to country scale, a drag covers far more than the search limit.
        page.evaluate("() => document.querySelector('iframe[title=\"streamlit_folium.st_folium"
                      "\"]').contentWindow.map_div.setZoom(7)")
        page.wait_for_function("() => document.querySelector('iframe[title=\"streamlit_folium"
                               ".st_folium\"]').contentWindow.map_div.getZoom() === 7")
        _draw_rectangle(page, 400, 300)
        refused = page.get_by_text("The drawn area was not used")
        expect(refused).to_be_visible()
        expect(refused).to_contain_text("TERRALENS_MAX_SEARCH_KM2")
        _wait_idle(page)
        # The refused shape is gone from the map; the accepted AOI stays (outline and area).
        page.wait_for_function(_MAP_ZOOM_AT_LEAST, arg=12)  # the view is the accepted AOI's
        span = page.evaluate(_DRAWN_SPAN)
        assert 0 <= span < 0.2, f"a drawn shape {span:.2f}° tall is still on the map"
        expect(area).to_have_text(accepted)
        # The accepted AOI is still outlined.
        expect(_map(page).locator("path.leaflet-interactive")).not_to_have_count(0)


def test_place_search_on_the_map_moves_there(page: Any, server: dict[str, Any],
                                             nominatim_stub: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    with screenshots(page, "place-search"):
        page.goto(server["url"])
        box = _map(page).get_by_placeholder(GEOCODER_PLACEHOLDER)
        expect(box).to_be_visible()
        assert not page.evaluate(_MAP_CENTRED_ON, [float(PLACE["lat"]), float(PLACE["lon"])])
        box.fill("Ljubljana")
        box.press("Enter")
        # The map fits the place's bounding box and marks it with its name.
        page.wait_for_function(_MAP_CENTRED_ON, arg=[float(PLACE["lat"]), float(PLACE["lon"])])
        expect(_map(page).locator(".leaflet-popup-content")).to_contain_text("Ljubljana")
    sent = nominatim_stub["queries"][-1]
    assert sent["q"] == ["Ljubljana"] and sent["format"] == ["json"]


def test_place_search_says_when_the_service_cannot_be_reached(page: Any,
                                                             server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    errors: list[Any] = []
    page.on("pageerror", lambda err: errors.append(err))
    with screenshots(page, "place-search-offline"):
        page.goto(server["url"])
        box = _map(page).get_by_placeholder(GEOCODER_PLACEHOLDER)
        message = _map(page).locator(".leaflet-control-geocoder-error")
        expect(box).to_be_visible()
        zoom = page.evaluate(
            "() => document.querySelector('iframe[title=\"streamlit_folium.st_folium\"]')"
            ".contentWindow.map_div.getZoom()"
        )
        for query, text in [("offline Ljubljana", GEOCODER_UNAVAILABLE),
                            ("Atlantis", GEOCODER_NOTHING_FOUND),
                            ("busy Ljubljana", GEOCODER_UNAVAILABLE)]:
            box.fill(query)
            box.press("Enter")
            expect(message).to_have_text(text)
            expect(box).to_have_value(query)  # the typed name stays for another try
        # Nothing moved and nothing was thrown; the map and "Jump to" still work.
        assert not page.evaluate(_MAP_ZOOM_AT_LEAST, zoom + 1)
        assert not errors, errors
        page.get_by_role("tab", name="Jump to").click()
        expect(page.get_by_text("search box on the map")).to_be_visible()
        page.get_by_role("button", name="Jump to", exact=True).click()
        page.wait_for_function(_MAP_ZOOM_AT_LEAST, arg=12)


#: JS: the Layers map's view ``[lat, lng, zoom]`` (``null`` before Leaflet made the map).
_VIEW = """() => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const map = frame && frame.contentWindow && frame.contentWindow.map_div;
    if (!map || !map.getCenter) return null;
    const c = map.getCenter();
    return [c.lat, c.lng, map.getZoom()];
}"""

#: JS: the raster layers on the map, bottom to top: ``[[tile URL template, opacity], ...]``.
_RASTERS = """() => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const win = frame && frame.contentWindow;
    if (!win || !win.terralensRasters || !win.map_div) return null;
    return Object.values(win.terralensRasters)
        .filter((layer) => win.map_div.hasLayer(layer))
        .sort((a, b) => a.options.zIndex - b.options.zIndex)
        .map((layer) => [layer._url || "", layer.options.opacity]);
}"""


#: JS: set the map's zoom to ``arg``.
_SET_ZOOM = """(zoom) => document.querySelector('iframe[title="streamlit_folium.st_folium"]')
    .contentWindow.map_div.setZoom(zoom)"""

#: JS: a loaded tile of layer ``arg[0]`` at zoom ``arg[1]`` is on the map.
_TILE_AT = """([layer, zoom]) => [...document
    .querySelector('iframe[title="streamlit_folium.st_folium"]').contentWindow.document
    .querySelectorAll('.leaflet-terralensRasters-pane img.leaflet-tile-loaded')]
    .some((img) => img.src.includes('/' + layer + '/' + zoom + '/'))"""


class _TileLog:
    """Tile requests seen by the page: ``(z, layer id, status, content type)``."""

    def __init__(self, page: Any) -> None:
        self.seen: list[tuple[int, str, int, str]] = []
        page.on("response", self._on_response)

    def _on_response(self, response: Any) -> None:
        match = re.search(r"/tiles/[^/]+/([^/]+)/(\d+)/\d+/\d+\.png", response.url)
        if match:
            self.seen.append((int(match.group(2)), match.group(1), response.status,
                              response.headers.get("content-type", "")))

    def zooms(self, layer: str) -> set[int]:
        return {z for z, name, _, _ in self.seen if name == layer}


def _same_view(a: list[float], b: list[float]) -> bool:
    return a[2] == b[2] and abs(a[0] - b[0]) < 1e-6 and abs(a[1] - b[1]) < 1e-6


def test_layers_tiles_toggle_opacity_keep_the_view(page: Any, server: dict[str, Any],
                                                   tmp_path: Path) -> None:
    from playwright.sync_api import expect

    run = server["run"]
    layers = display_layers_for(run.load_layers())
    newest = newest_output(layers)
    lulc = next(x for x in layers if x.name == "[G] LULC")
    tiles = _TileLog(page)
    with screenshots(page, "layers"):
        # A shared link opens the stored run: its newest output arrives as PNG tiles.
        page.goto(f"{server['url']}/layers?run={run.id}")
        for layer in layers:
            expect(page.get_by_test_id("stCheckbox").filter(
                has_text=layer_label(layer)).first).to_be_visible()
        loaded = _map(page).locator(".leaflet-terralensRasters-pane img.leaflet-tile-loaded")
        expect(loaded).not_to_have_count(0)
        page.wait_for_function(_VIEW)
        assert page.evaluate(_RASTERS) and len(page.evaluate(_RASTERS)) == 1
        assert tiles.seen and all(status == 200 and ctype == "image/png"
                                  for _, _, status, ctype in tiles.seen)

        # Zooming in asks for finer tiles (the server renders them from the COG): from three
        # levels above the finest the server renders down to that finest level.
        newest_id = next(u for u, _ in page.evaluate(_RASTERS)).split("/")[3]
        newest_layer = next(x for x in layers if layer_id(x) == newest_id)
        finest = layer_extent(run, newest_layer.source)[1] + NATIVE_ZOOM_EXTRA
        for zoom in (finest - 3, finest):
            page.evaluate(_SET_ZOOM, zoom)
            page.wait_for_function(f"() => ({_VIEW})()[2] === {zoom}")
            page.wait_for_function(_TILE_AT, arg=[newest_id, zoom])
        assert {finest - 3, finest} <= tiles.zooms(newest_id)
        view = page.evaluate(_VIEW)

        # Toggling a layer adds its tiles and keeps the view.
        page.get_by_test_id("stCheckbox").filter(has_text=layer_label(lulc)).click()
        page.wait_for_function(f"() => ({_RASTERS})() && ({_RASTERS})().length === 2")
        _wait_idle(page)
        expect(loaded).not_to_have_count(0)
        assert any("/g-lulc/" in u for u, _ in page.evaluate(_RASTERS))
        assert _same_view(page.evaluate(_VIEW), view), (page.evaluate(_VIEW), view)
        page.wait_for_function(_TILE_AT, arg=["g-lulc", view[2]])
        assert tiles.zooms("g-lulc") == {view[2]}
        _update_docs(page, "screenshot-layers.png")

        # Opacity (on demand, in the layer's popover): five 0.05 steps down reach the tiles.
        row = page.locator(f".st-key-{row_key('[G] LULC')}")
        row.get_by_test_id("stPopoverButton").first.click()
        thumb = page.get_by_test_id("stSlider").filter(
            has_text="Opacity of [G] LULC").get_by_role("slider")
        thumb.focus()
        for _ in range(5):
            thumb.press("ArrowLeft")
        page.keyboard.press("Escape")
        page.wait_for_function(
            f"() => ({_RASTERS})() && ({_RASTERS})().some(([u, o]) => u.includes('/g-lulc/')"
            " && Math.abs(o - 0.6) < 1e-6)")
        assert _same_view(page.evaluate(_VIEW), view)
        assert newest in [x.name for x in layers]

        # A GeoTIFF download reads back with rasterio to the stored values and grid.
        page.get_by_role("tab", name="Downloads").click()
        with page.expect_download() as info:
            page.get_by_role("button", name="GeoTIFF: Land cover (generated) · LULC",
                             exact=True).click()
        path = tmp_path / "lulc.tif"
        info.value.save_as(path)
        stored = run.load_layer("LULC")
        with rasterio.open(path) as ds:
            assert ds.crs == stored.rio.crs
            assert ds.transform == stored.rio.transform()
            np.testing.assert_array_equal(ds.read(), stored.values)


def test_layers_page_first_screen_and_offline_basemap(browser: Any,
                                                      server: dict[str, Any]) -> None:
    """At 1400 × 900, with every request but the app's own refused (no network), the first
    screen shows the map with the Natural Earth outline, a legend and the layer list."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    refused: list[str] = []

    def only_local(route: Any) -> None:
        if urlparse(route.request.url).hostname in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_local)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    run = server["run"]
    try:
        with screenshots(page, "layers-first-screen"):
            page.goto(f"{server['url']}/layers?run={run.id}")
            outline = _map(page).locator(".leaflet-terralensOffline-pane path")
            expect(outline).not_to_have_count(0)
            expect(_map(page).locator(
                ".leaflet-terralensRasters-pane img.leaflet-tile-loaded")).not_to_have_count(0)
            legend = page.locator(".terralens-legend").first
            first_row = page.get_by_test_id("stCheckbox").first
            for element in (page.locator(MAP_IFRAME), legend, first_row):
                expect(element).to_be_visible()
                box = element.bounding_box()
                assert box is not None and box["y"] >= 0 and box["y"] + 20 < 900, box
            _wait_idle(page)
            page.screenshot(path=str(ARTIFACTS / "layers-1400x900.png"), full_page=False)
        assert refused, "the basemap tiles were asked for, and refused (offline)"
    finally:
        context.close()


def _load_scene_and_go_to_run(page: Any, server: dict[str, Any]) -> None:
    """Search the test catalog, load its scene and open the Run page."""
    from playwright.sync_api import expect

    page.goto(server["url"])
    _search_and_load_scene(page)
    page.get_by_role("link", name="Continue: run TerraMind on this scene →").click()
    expect(page.get_by_text(re.compile(r"\d+ chips? of 224 px"))).to_be_visible()


#: The preview's loaded tiles on the Search map.
_PREVIEW_TILES = ".leaflet-terralensRasters-pane img.leaflet-tile-loaded"


def _search_and_load_scene(page: Any) -> None:
    """On the Search page: type a bbox, search the test catalog, load its scene."""
    from playwright.sync_api import expect

    expect(_map(page).locator(".leaflet-container")).to_be_visible()
    page.get_by_role("tab", name="Bounding box").click()
    bbox = page.get_by_label("West, South, East, North (degrees)")
    bbox.fill("15.005, 45.005, 15.03, 45.02")
    bbox.press("Enter")
    page.get_by_role("button", name="Use bounding box").click()
    expect(page.get_by_test_id("stMetricValue").first).to_contain_text("km²")
    _set_date(page, "Start", "2022-06-01")
    _set_date(page, "End", "2022-06-30")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_text("1 of 1 scenes shown", exact=False)).to_be_visible()

    # Select the row (the table is a canvas: click its row-selection cell), then load.
    grid = page.get_by_test_id("stDataFrame")
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 18)
    page.get_by_role("button", name="Load scene").click()
    expect(page.get_by_text("Loaded scene")).to_be_visible()
    # The true-colour preview of the loaded window arrives as tiles, not an inlined image.
    expect(_map(page).locator(_PREVIEW_TILES)).not_to_have_count(0)
    expect(_map(page).locator(".leaflet-image-layer")).to_have_count(0)


#: JS: the map has sent the view ``arg`` = [lat, lng, zoom] to the app (streamlit-folium's
#: last value), so the server knows it.
_VIEW_SENT = """([lat, lng, zoom]) => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const data = frame && frame.contentWindow && frame.contentWindow.__GLOBAL_DATA__;
    const sent = data && data.previous_data;
    return !!sent && !!sent.center && sent.zoom === zoom
        && Math.abs(sent.center.lat - lat) < 1e-9 && Math.abs(sent.center.lng - lng) < 1e-9;
}"""

#: JS: the map shows the view ``arg`` = [lat, lng, zoom]: that zoom, and that centre within a
#: screen pixel (a resize of the map's frame may shift it by less).
_VIEW_IS = """([lat, lng, zoom]) => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const map = frame && frame.contentWindow && frame.contentWindow.map_div;
    if (!map || !map.getCenter) return false;
    const here = map.latLngToContainerPoint(map.getCenter());
    return map.getZoom() === zoom
        && here.distanceTo(map.latLngToContainerPoint([lat, lng])) < 1.0;
}"""


def _move_map(page: Any, lat: float, lng: float, zoom: int) -> list[float]:
    """Pan/zoom the map to (lat, lng, zoom) as the analyst would, and wait until the app got
    the view; returns the view the map shows."""
    page.evaluate("""([lat, lng, zoom]) => document
        .querySelector('iframe[title="streamlit_folium.st_folium"]').contentWindow.map_div
        .setView([lat, lng], zoom, {animate: false})""", [lat, lng, zoom])
    page.wait_for_function(f"() => ({_VIEW})() && ({_VIEW})()[2] === {zoom}")
    view = page.evaluate(_VIEW)
    page.wait_for_function(_VIEW_SENT, arg=view)
    _wait_idle(page)
    return view


def _go(page: Any, title: str) -> None:
    """Another page through the sidebar (the same session)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()


def test_search_preview_tiles_and_views_kept_across_pages(page: Any,
                                                          server: dict[str, Any]) -> None:
    """The Search preview arrives as image/png tiles; the Layers and Search maps show the
    view the analyst left them at after visiting other pages and coming back."""
    from playwright.sync_api import expect

    run = server["run"]
    held: list[tuple[str, int, str]] = []
    page.on("response", lambda r: held.append(
        (r.url, r.status, r.headers.get("content-type", ""))) if "/tiles/held/" in r.url
        else None)
    with screenshots(page, "views-kept"):
        # The Layers map, moved off its AOI fit.
        page.goto(f"{server['url']}/layers?run={run.id}")
        expect(_map(page).locator(
            ".leaflet-terralensRasters-pane img.leaflet-tile-loaded")).not_to_have_count(0)
        page.wait_for_function(_VIEW)
        lat, lng, zoom = page.evaluate(_VIEW)
        layers_view = _move_map(page, lat + 0.002, lng - 0.003, int(zoom) + 1)

        # The Search page (same session): load the scene, its preview comes as tiles.
        _go(page, "Search")
        _search_and_load_scene(page)
        assert held and all(status == 200 and ctype == "image/png"
                            for _, status, ctype in held), held
        assert all(re.search(r"/tiles/held/[A-Za-z0-9_-]{24}/[a-z0-9-]+/\d+/\d+/\d+\.png",
                             url) for url, _, _ in held)
        page.wait_for_function(_VIEW)
        lat, lng, zoom = page.evaluate(_VIEW)
        search_view = _move_map(page, lat - 0.001, lng + 0.002, int(zoom) + 1)
        page.screenshot(path=str(ARTIFACTS / "views-kept-search-before.png"))

        # Away and back: each map is where it was left.
        _go(page, "Layers")
        page.wait_for_function(_VIEW_IS, arg=layers_view)
        expect(_map(page).locator(
            ".leaflet-terralensRasters-pane img.leaflet-tile-loaded")).not_to_have_count(0)
        _wait_idle(page)
        assert page.evaluate(_VIEW_IS, layers_view), (page.evaluate(_VIEW), layers_view)
        page.screenshot(path=str(ARTIFACTS / "views-kept-layers-after.png"))
        _go(page, "Runs")
        expect(page.get_by_role("heading", name="Stored runs")).to_be_visible()
        _go(page, "Search")
        page.wait_for_function(_VIEW_IS, arg=search_view)
        expect(_map(page).locator(_PREVIEW_TILES)).not_to_have_count(0)
        _wait_idle(page)
        assert page.evaluate(_VIEW_IS, search_view), (page.evaluate(_VIEW), search_view)
        # A rerun (a widget change) keeps it too.
        page.get_by_role("tab", name="Jump to").click()
        latitude = page.get_by_label("Latitude")
        latitude.fill("46")
        latitude.press("Enter")
        _wait_idle(page)
        assert page.evaluate(_VIEW_IS, search_view), (page.evaluate(_VIEW), search_view)


@pytest.mark.model
def test_load_a_scene_run_and_cancel(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    from app.runs import RunStore

    store = RunStore(server["data_dir"] / "runs")
    before = {r.id for r in store.list_runs()}
    with screenshots(page, "run-cancel"):
        _load_scene_and_go_to_run(page, server)
        page.get_by_role("button", name="Run", exact=True).click()
        cancel = page.get_by_test_id("stMain").get_by_role("button", name="Cancel")
        expect(cancel).to_be_visible()
        cancel.click()
        main = page.get_by_test_id("stMain")
        expect(main.get_by_text(re.compile("Run cancelled (after|while)"))).to_be_visible()
    assert {r.id for r in store.list_runs()} == before, "a cancelled run stores nothing"


@pytest.mark.model
def test_a_run_goes_on_across_pages_and_reloads(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    from app.runs import RunStore

    store = RunStore(server["data_dir"] / "runs")
    before = {r.id for r in store.list_runs()}
    with screenshots(page, "run-reload"):
        _load_scene_and_go_to_run(page, server)
        steps = page.get_by_role("spinbutton", name="Diffusion timesteps")
        steps.fill("1")
        steps.press("Enter")
        _wait_idle(page)
        page.get_by_role("button", name="Run", exact=True).click()
        main = page.get_by_test_id("stMain")
        expect(main.get_by_text(re.compile(r"Job #\d+"))).to_be_visible()
        # Another page, then a reload of the browser (a new session): the job goes on.
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Runs").click()
        expect(page.get_by_role("heading", name="Stored runs")).to_be_visible()
        page.reload()
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text(re.compile(r"#\d+ Generation"))).to_be_visible()
        # The panel refreshes itself: the job progresses and ends without a click.
        expect(sidebar.get_by_text(re.compile(r"loading weights|chip batch|writing|^done$"))
               .first).to_be_visible()
        expect(sidebar.get_by_text("done", exact=True)).to_be_visible(timeout=300_000)
        page.reload()
        expect(page.get_by_role("heading", name="Stored runs")).to_be_visible()
    after = {r.id for r in store.list_runs()}
    assert len(after - before) == 1, "the run arrived in the store"


#: JS: the st_folium map's Leaflet view as ``[lat, lng, zoom]`` (``null`` before it exists).
_MAP_VIEW = """() => {
    const frame = document.querySelector('iframe[title="streamlit_folium.st_folium"]');
    const map = frame && frame.contentWindow && frame.contentWindow.map_div;
    if (!map || !map.getCenter) return null;  // the div (id map_div) before Leaflet
    const c = map.getCenter();
    return [c.lat, c.lng, map.getZoom()];
}"""


def _slider(page: Any, label: str) -> Any:
    """The thumb of the Streamlit slider labelled ``label`` (exactly)."""
    return (page.get_by_test_id("stSlider")
            .filter(has=page.get_by_test_id("stWidgetLabel").get_by_text(label, exact=True))
            .get_by_role("slider"))


@pytest.mark.model
def test_geolocate_a_land_cover_prompt_with_untrained_weights(page: Any,
                                                              server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    n = 4  # one model call (batch size 16)
    errors: list[Any] = []
    page.on("pageerror", lambda err: errors.append(err))
    with screenshots(page, "geolocate"):
        page.goto(server["url"])
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Geolocate").click()
        expect(page.get_by_role("heading", name="Geolocate")).to_be_visible()
        # The untrained weights are announced before anything is sampled.
        expect(page.get_by_test_id("stAlertContentWarning").filter(
            has_text="untrained models rarely even produce valid coordinates")).to_be_visible()

        # A land-cover prompt: 60% bare ground (from the default 100%), 40% water; 5% steps.
        page.get_by_test_id("stRadio").get_by_text("From a land-cover prompt").click()
        bare = _slider(page, "Bare ground")
        expect(bare).to_have_value("100")
        bare.focus()
        for _ in range(8):
            bare.press("ArrowLeft")
        expect(bare).to_have_value("60")
        water = _slider(page, "Water")
        water.focus()
        for _ in range(8):
            water.press("ArrowRight")
        expect(water).to_have_value("40")
        expect(page.get_by_text("Total 100% · Water 40%, Bare ground 60%")).to_be_visible()

        samples = page.get_by_label("Samples", exact=True)
        samples.fill(str(n))
        samples.press("Enter")
        _wait_idle(page)
        run = page.get_by_role("button", name="Sample locations")
        expect(run).to_be_enabled()
        run.click()

        # The result: a warning that every sample of the blank untrained vocabulary is invalid,
        # the summary table with the counts and the reason, and the world map with no points.
        expect(page.get_by_role("heading", name="Where TerraMind places it")).to_be_visible()
        expect(page.get_by_text(
            f"{n} of {n} samples were not valid coordinates and are not plotted.")).to_be_visible()
        # The summary table (a canvas; its cells are mirrored in an accessible table).
        cells = page.get_by_test_id("stDataFrame").locator("table[role=grid] tbody td")
        expect(cells).to_have_text(["Samples drawn", str(n), "Valid coordinates", "0",
                                    "Invalid (not plotted)", f"{n} — unparsable: {n}"])
        # The world map is drawn (its iframe has a height), at the page's world view, with its
        # base map tiles and the layer control listing the (empty) samples layer: no points,
        # no density overlay.
        expect(page.locator(MAP_IFRAME)).to_be_visible()
        leaflet = _map(page).locator(".leaflet-container")
        expect(leaflet).to_be_visible()
        page.wait_for_function(_MAP_VIEW)
        assert page.evaluate(_MAP_VIEW) == pytest.approx([20, 0, 2], abs=0.5)  # lat, lon, zoom
        expect(leaflet.locator(".leaflet-tile-pane img.leaflet-tile")).not_to_have_count(0)
        expect(leaflet.locator(".leaflet-control-layers-overlays")).to_contain_text("Samples")
        expect(leaflet.locator("path.leaflet-interactive")).to_have_count(0)
        expect(leaflet.locator(".leaflet-image-layer")).to_have_count(0)
        for label in ("Samples (GeoJSON)", "Samples (CSV)"):
            expect(page.get_by_role("button", name=label)).to_be_visible()
        _wait_idle(page)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    assert not errors, errors


# -- Hostile strings: no script runs, the text shows literally -----------------------------------
#: Sets ``top.__pwned`` if any part of it ever runs as script (template substitution, an
#: ``onerror`` handler or a script element). No "/" (a file name cannot hold one) and no '"'
#: (the browser sends it as %22 in an uploaded file's name).
HOSTILE = "<img src=x onerror=top.__pwned='img'>${top.__pwned='template'}`<b>bold"
#: JS: every ``__pwned`` flag of the page and its frames (``[]`` when nothing ran).
_PWNED = """() => {
    const seen = [];
    const look = (w) => {
        try { if (w.__pwned !== undefined) seen.push(String(w.__pwned)); } catch (e) {}
        for (let i = 0; i < w.frames.length; i++) look(w.frames[i]);
    };
    look(window);
    return seen;
}"""


@pytest.fixture(scope="module")
def hostile_scene(pgstac_server: Any, s2_scene_set: SceneSet) -> Iterator[str]:
    """A copy of a tile-A Sentinel-2 item whose id carries :data:`HOSTILE`, dated 2020-02-05
    (outside every other test's window); removed from the catalog afterwards."""
    import copy

    import psycopg

    item = copy.deepcopy(s2_scene_set.scenes["S2A_T33TWL_20210610_A"].item)
    item["id"] = f"S2X_{HOSTILE}_20200205"
    item["properties"]["datetime"] = "2020-02-05T10:00:31Z"
    pgstac_server.load([], [item])
    try:
        yield item["id"]
    finally:
        with psycopg.connect(pgstac_server.dsn, autocommit=True) as conn:
            conn.execute("SET search_path TO pgstac, public")
            conn.execute("SELECT delete_item(%s, %s)", (item["id"], item["collection"]))


def _watch_for_scripts(page: Any) -> list[str]:
    """Record every dialog (``alert`` & co.) the page or its frames open."""
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return dialogs


def test_a_hostile_item_id_shows_literally_on_the_search_map(
    page: Any, server: dict[str, Any], hostile_scene: str,
) -> None:
    from playwright.sync_api import expect

    dialogs = _watch_for_scripts(page)
    with screenshots(page, "hostile-item-id"):
        page.goto(server["url"])
        expect(_map(page).locator(".leaflet-container")).to_be_visible()
        page.get_by_role("tab", name="Bounding box").click()
        bbox = page.get_by_label("West, South, East, North (degrees)")
        bbox.fill("15.005, 45.005, 15.03, 45.02")
        bbox.press("Enter")
        page.get_by_role("button", name="Use bounding box").click()
        expect(page.get_by_test_id("stMetricValue").first).to_contain_text("km²")
        _set_date(page, "Start", "2020-02-01")
        _set_date(page, "End", "2020-02-29")
        page.get_by_role("button", name="Search", exact=True).click()
        expect(page.get_by_text("1 of 1 scenes shown", exact=False)).to_be_visible()

        # Hovering the footprint opens its tooltip: the id as text, nothing run.
        footprint = _map(page).locator("path.leaflet-interactive").first
        expect(footprint).to_be_visible()
        box = _map(page).locator(".leaflet-container").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2 + 7, box["y"] + box["height"] / 2 + 5)
        tooltip = _map(page).locator(".leaflet-tooltip")
        expect(tooltip).to_have_text(hostile_scene)
        expect(tooltip.locator("img, b")).to_have_count(0)

        # Selecting the row: the heading and the highlighted footprint's layer-control entry.
        grid = page.get_by_test_id("stDataFrame")
        grid.scroll_into_view_if_needed()
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 18, box["y"] + 35 + 18)
        expect(page.get_by_role("heading", name=f"Scene {hostile_scene}")).to_be_visible()
        control = _map(page).locator(".leaflet-control-layers-overlays")
        expect(control).to_contain_text(f"Scene {hostile_scene}")
        expect(control.locator("img, b")).to_have_count(0)
        _wait_idle(page)
    assert page.evaluate(_PWNED) == [] and dialogs == []


def test_a_hostile_file_name_shows_literally_in_the_layer_control(
    page: Any, server: dict[str, Any],
) -> None:
    from playwright.sync_api import expect

    from app.rasters import layer_to_cog_bytes

    run = server["run"]
    name = f"{HOSTILE}.tif"
    dialogs = _watch_for_scripts(page)
    with screenshots(page, "hostile-file-name"):
        page.goto(f"{server['url']}/layers?run={run.id}")
        expect(_map(page).locator(".leaflet-container")).to_be_visible()
        page.get_by_role("tab", name="Add data").click()
        page.locator("input[type=file]").set_input_files(
            {"name": name, "mimeType": "image/tiff",
             "buffer": layer_to_cog_bytes(run.load_layer("NDVI"))})
        boxes = page.get_by_test_id("stCheckbox")
        before = boxes.count()
        page.get_by_role("button", name="Add to map").click()
        # The layers panel (the map's only layer list) shows it under its literal name.
        expect(boxes).to_have_count(before + 1)
        labels = boxes.all_inner_texts()
        assert any(label.endswith(f" · {name}") for label in labels), labels
        expect(page.get_by_test_id("stCheckbox").locator("img, b")).to_have_count(0)
        expect(_map(page).locator(".leaflet-container img[onerror], .leaflet-container b")
               ).to_have_count(0)
        _wait_idle(page)
    assert page.evaluate(_PWNED) == [] and dialogs == []


def test_a_run_link_with_markdown_shows_literally_in_the_error(
    page: Any, server: dict[str, Any],
) -> None:
    from urllib.parse import quote

    from playwright.sync_api import expect

    value = ("[click](http://127.0.0.1:9/x) ![pic](http://127.0.0.1:9/p.png) **bold** $x^2$ "
             ":red[red] <b>raw</b> www.example.org https://example.org")
    with screenshots(page, "hostile-run-link"):
        page.goto(f"{server['url']}/layers?run={quote(value)}")
        error = page.get_by_test_id("stAlertContentError")
        expect(error).to_contain_text(value)
        expect(error.locator("a, img, strong, b, .katex")).to_have_count(0)


def test_every_page_is_served_at_its_own_path(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    with screenshots(page, "page-paths"):
        for path, heading in [("search", "Search scenes"), ("runs", "Stored runs"),
                              ("", "Search scenes")]:
            page.goto(f"{server['url']}/{path}")
            expect(page.get_by_role("heading", name=heading)).to_be_visible()
            expect(page.get_by_text("Page not found")).to_have_count(0)


def test_a_broken_run_shows_a_message_and_no_traceback(page: Any, server: dict[str, Any]) -> None:
    """A run whose COGs were truncated on disk (a half-copied folder) opened by ``?run=``: the
    analyst sees a message, never a Python traceback, an exception class's module or a path."""
    from playwright.sync_api import expect

    run = server["run"]
    broken = server["data_dir"] / "runs" / "broken-copy"
    shutil.copytree(run.path, broken)
    for tif in broken.rglob("*.tif"):
        data = tif.read_bytes()
        tif.write_bytes(data[: len(data) // 3])
    with screenshots(page, "broken-run"):
        page.goto(f"{server['url']}/layers?run=broken-copy")
        error = page.get_by_test_id("stAlertContentError").first
        expect(error).to_contain_text("cannot be read")
        _wait_idle(page)
        message = error.inner_text()
        text = page.locator("body").inner_text()
    assert "broken-copy" in message and "damaged" in message
    assert "Traceback" not in text and 'File "' not in text
    assert "This app has encountered an error" not in text  # Streamlit's note for the uncaught
    for leak in (str(server["data_dir"]), str(REPO), ".py", "site-packages", "rasterio._"):
        assert leak not in message, leak


def test_the_runs_table_fits_without_horizontal_scrolling(browser: Any,
                                                          server: dict[str, Any]) -> None:
    """At 1400 × 900 the Runs table shows its key columns (task, outputs, date, AOI km²,
    status; which columns is an AppTest's job) in full: its grid does not scroll sideways."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        with screenshots(page, "runs-table"):
            page.goto(f"{server['url']}/runs")
            grid = page.get_by_test_id("stDataFrame").first
            expect(grid).to_be_visible()
            scroller = grid.locator(".dvn-scroller").first
            expect(scroller).to_be_attached()
            overflow = scroller.evaluate("(el) => el.scrollWidth - el.clientWidth")
            assert overflow <= 1, f"the table scrolls sideways by {overflow} px"
    finally:
        context.close()
