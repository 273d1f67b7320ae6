"""Map layers: colour tables, rendering in Web Mercator, legends, inspector, statistics, maps."""

from __future__ import annotations

import io
import json
import re

import folium
import folium.elements
import numpy as np
import pytest
import xarray as xr
from PIL import Image
from pyproj import Transformer
from rasterio.transform import array_bounds, from_origin
from rasterio.warp import transform_bounds

from app.colors import RAMPS, Style, StyleKind, colourise, hex_to_rgb
from app.layers import display_layers_for, layer_statistics, render_png, sample_point
from app.legends import SYNTHETIC_NOTE, legend, legend_html
from app.maps import (
    ASSETS_DIR,
    COMPARE_PANES,
    FOOTPRINT_HIGHLIGHT,
    GEOCODER_NOTHING_FOUND,
    GEOCODER_UNAVAILABLE,
    build_map,
    vendored_urls,
)
from inference.errors import InvalidRequestError
from inference.modalities import LULC_CLASSES, MODALITY_INFO, Modality
from tests.fixtures.runs import ORIGIN, RES

CDN_MARKERS = ("cdn.jsdelivr", "cdnjs", "unpkg", "code.jquery", "netdna", "bootstrapcdn",
               "d3js.org", "googleapis", "rawcdn", "rawgit", "fontawesome", "cloudflare")
TO_MERCATOR = Transformer.from_crs(4326, 3857, always_xy=True)
TO_WGS84 = Transformer.from_crs(32633, 4326, always_xy=True)


def _by_name(layers: dict[str, xr.DataArray]) -> dict:
    return {d.name: d for d in display_layers_for(layers)}


def _grid_array(values: np.ndarray, attrs: dict, *, x0: float = 300_000.0,
                y0: float = 5_000_000.0, res: float = 20.0, bands=None) -> xr.DataArray:
    """A layer on a UTM 33N grid west of the central meridian (rotated against Mercator)."""
    n, h, w = values.shape
    da = xr.DataArray(values, dims=("band", "y", "x"), attrs=attrs, coords={
        "band": bands or [attrs.get("modality", "X")] * n,
        "y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)})
    return da.rio.write_crs("EPSG:32633").rio.write_transform(from_origin(x0, y0, res, res))


def _png_rgba(rendered) -> np.ndarray:
    with Image.open(io.BytesIO(rendered.png)) as image:
        assert image.mode == "RGBA"
        return np.asarray(image)


def _png_pixel(rendered, lon: float, lat: float) -> np.ndarray:
    """The rendered PNG pixel under a lon/lat (the overlay is linear in Web Mercator)."""
    (south, west), (north, east) = rendered.bounds
    x_w, y_s = TO_MERCATOR.transform(west, south)
    x_e, y_n = TO_MERCATOR.transform(east, north)
    x, y = TO_MERCATOR.transform(lon, lat)
    col = int((x - x_w) / (x_e - x_w) * rendered.width)
    row = int((y_n - y) / (y_n - y_s) * rendered.height)
    return _png_rgba(rendered)[row, col]


def _utm_to_lonlat(x: float, y: float) -> tuple[float, float]:
    return TO_WGS84.transform(x, y)


@pytest.fixture(scope="module")
def ndvi_halves() -> xr.DataArray:
    """NDVI −1 on the west half, +1 on the east half, NaN in a north-west block."""
    values = np.full((1, 50, 60), -1.0, dtype=np.float32)
    values[:, :, 30:] = 1.0
    values[:, :10, :10] = np.nan
    return _grid_array(values, {"modality": "NDVI", "units": "", "kind": "generated",
                                "synthetic": True}, bands=["NDVI"])


# -- Colour tables --------------------------------------------------------------------------------
def test_lulc_colours_come_from_the_one_table(sample_layers):
    lulc = _by_name(sample_layers.layers)["[G] LULC"]
    rgba = colourise(np.array([[c.index for c in LULC_CLASSES]]), lulc.style)[0]
    for cls, pixel in zip(LULC_CLASSES, rgba, strict=True):
        assert tuple(pixel[:3]) == hex_to_rgb(cls.colour), cls.name
        assert pixel[3] == 255
    assert legend(lulc).classes == tuple((c.name, c.colour) for c in LULC_CLASSES)
    nodata = colourise(np.array([[255]]), lulc.style)[0, 0]
    assert nodata[3] == 0


def test_ndvi_runs_from_brown_at_minus_one_to_green_at_plus_one(sample_layers):
    ndvi = _by_name(sample_layers.layers)["[G] NDVI"]
    assert (ndvi.style.vmin, ndvi.style.vmax) == MODALITY_INFO[Modality.NDVI].display_range
    rgba = colourise(np.array([[-1.0, 0.0, 1.0, -3.0, 3.0]]), ndvi.style)[0]
    low, high = hex_to_rgb(RAMPS["ndvi"][0][1]), hex_to_rgb(RAMPS["ndvi"][-1][1])
    assert tuple(rgba[0, :3]) == low and tuple(rgba[2, :3]) == high
    assert rgba[0, 0] > rgba[0, 1] > rgba[0, 2]  # brown: red > green > blue
    assert rgba[2, 1] > rgba[2, 0] and rgba[2, 1] > rgba[2, 2]  # green dominates
    assert min(rgba[1, :3]) > 230  # 0 is near white
    assert tuple(rgba[3, :3]) == low and tuple(rgba[4, :3]) == high  # clipped, not wrapped


def test_s1_is_grey_in_db_and_s2_is_true_and_false_colour(sample_layers):
    layers = _by_name(sample_layers.layers | {"input": sample_layers.input_layer})
    vv = layers["[G] S1GRD-VV"]
    assert vv.style.ramp == "gray" and vv.units == "dB"
    assert (vv.style.vmin, vv.style.vmax) == MODALITY_INFO[Modality.S1GRD].display_range
    assert layers["Input true colour"].bands == ("B04", "B03", "B02")
    assert layers["Input false colour"].bands == ("B08", "B04", "B03")
    assert layers["Input true colour"].style.vmax == 3000
    assert layers["[G] DEM"].style.ramp == "terrain"
    assert layers["[P] Water"].style.kind is StyleKind.CLASSES


def test_display_layers_expand_bands_hide_probabilities_and_order_by_kind(sample_layers):
    names = [d.name for d in display_layers_for(
        sample_layers.layers | {"input": sample_layers.input_layer})]
    assert names == [
        "Input true colour", "Input false colour", "[G] S1GRD-VV", "[G] S1GRD-VH", "[G] LULC",
        "[G] NDVI", "[G] DEM", "[P] Water", "[P] Water confidence",
    ]
    by_name = _by_name(sample_layers.layers)
    assert all(by_name[n].synthetic for n in names if n.startswith("[G]"))
    assert by_name["[G] S1GRD-VH"].band == "VH" and by_name["[G] S1GRD-VH"].source == "S1GRD"


def test_a_style_with_an_unknown_ramp_is_refused():
    with pytest.raises(InvalidRequestError, match="ramp"):
        Style(StyleKind.CONTINUOUS, ramp="rainbow")


# -- Rendering ------------------------------------------------------------------------------------
def test_rendered_bounds_equal_the_data_extent_in_wgs84(ndvi_halves):
    layer = display_layers_for({"NDVI": ndvi_halves})[0]
    rendered = render_png(ndvi_halves, layer)
    left, bottom, right, top = array_bounds(50, 60, ndvi_halves.rio.transform())
    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", left, bottom, right,
                                                top, densify_pts=101)
    half_px_lon = (east - west) / rendered.width / 2
    half_px_lat = (north - south) / rendered.height / 2
    (r_south, r_west), (r_north, r_east) = rendered.bounds
    assert r_west == pytest.approx(west, abs=half_px_lon)
    assert r_east == pytest.approx(east, abs=half_px_lon)
    assert r_south == pytest.approx(south, abs=half_px_lat)
    assert r_north == pytest.approx(north, abs=half_px_lat)


def test_pixels_land_where_they_belong_and_nodata_is_transparent(ndvi_halves):
    layer = display_layers_for({"NDVI": ndvi_halves})[0]
    rendered = render_png(ndvi_halves, layer)
    x0, y0 = 300_000.0, 5_000_000.0
    west_half = _png_pixel(rendered, *_utm_to_lonlat(x0 + 20 * 15, y0 - 20 * 35))
    east_half = _png_pixel(rendered, *_utm_to_lonlat(x0 + 20 * 45, y0 - 20 * 35))
    nan_block = _png_pixel(rendered, *_utm_to_lonlat(x0 + 20 * 5, y0 - 20 * 5))
    assert tuple(west_half) == (*hex_to_rgb(RAMPS["ndvi"][0][1]), 255)
    assert tuple(east_half) == (*hex_to_rgb(RAMPS["ndvi"][-1][1]), 255)
    assert nan_block[3] == 0
    rgba = _png_rgba(rendered)
    # The UTM grid is rotated against Web Mercator here: envelope corners lie outside the data.
    assert rgba[0, -1, 3] == 0 or rgba[-1, 0, 3] == 0
    assert (rgba[..., 3] == 255).mean() > 0.7


def test_class_maps_keep_exact_class_colours(sample_layers):
    layer = _by_name(sample_layers.layers)["[G] LULC"]
    rgba = _png_rgba(render_png(sample_layers.layers["LULC"], layer))
    opaque = {tuple(p[:3]) for p in rgba[rgba[..., 3] == 255]}
    table = {hex_to_rgb(c.colour) for c in LULC_CLASSES}
    assert opaque and opaque <= table  # nearest resampling: no blended colours


def test_water_prediction_shows_water_only(sample_layers):
    layer = _by_name(sample_layers.layers)["[P] Water"]
    rgba = _png_rgba(render_png(sample_layers.layers["WATER"], layer))
    water_share = float(sample_layers.layers["WATER"].values.mean())
    opaque_share = float((rgba[..., 3] == 255).mean())
    assert opaque_share == pytest.approx(water_share, abs=0.03)
    assert {tuple(p[:3]) for p in rgba[rgba[..., 3] == 255]} == {hex_to_rgb("#1565ff")}


def test_max_size_caps_the_png_and_keeps_the_extent(ndvi_halves):
    layer = display_layers_for({"NDVI": ndvi_halves})[0]
    full = render_png(ndvi_halves, layer)
    small = render_png(ndvi_halves, layer, max_size=16)
    assert max(small.width, small.height) <= 16
    assert small.bounds[0] == pytest.approx(full.bounds[0], abs=1e-3)
    assert small.bounds[1] == pytest.approx(full.bounds[1], abs=2e-3)


def test_rendering_needs_the_layer_bands(sample_layers):
    vv = _by_name(sample_layers.layers)["[G] S1GRD-VV"]
    with pytest.raises(InvalidRequestError, match="S1GRD"):
        render_png(sample_layers.layers["DEM"], vv)


# -- Legends --------------------------------------------------------------------------------------
def test_legends_carry_units_ticks_and_the_synthetic_warning(sample_layers):
    layers = _by_name(sample_layers.layers | {"input": sample_layers.input_layer})
    vv = legend(layers["[G] S1GRD-VV"])
    assert vv.title == "S1GRD VV (dB)"
    labels = [t for _, t in vv.ticks]
    assert labels[0] == "-25" and labels[-1] == "5"
    assert SYNTHETIC_NOTE in vv.notes
    assert legend(layers["[G] DEM"]).title == "DEM (m)"
    assert [t for _, t in legend(layers["[G] NDVI"]).ticks] == ["-1", "-0.5", "0", "0.5", "1"]
    rgb = legend(layers["Input true colour"])
    assert "DN" in rgb.title and rgb.notes == ()
    html = legend_html(vv)
    assert "S1GRD VV (dB)" in html and "not a measurement" in html and "linear-gradient" in html
    lulc_html = legend_html(legend(layers["[G] LULC"]))
    assert all(c.name.replace("/", "/") in lulc_html for c in LULC_CLASSES)


def test_untrained_layers_say_so():
    from tests.fixtures.runs import make_sample_layers

    untrained = make_sample_layers(0, untrained=True)
    notes = legend(_by_name(untrained.layers)["[G] NDVI"]).notes
    assert any("Untrained" in n for n in notes)


def test_legend_html_escapes_names():
    values = np.zeros((1, 4, 4), dtype=np.uint8)
    values[0, :2] = 1
    da = _grid_array(values, {"modality": "FLOOD", "units": "class", "kind": "prediction",
                              "class_names": '["dry", "<script>x</script>"]'}, bands=["FLOOD"])
    html = legend_html(legend(display_layers_for({"FLOOD": da})[0]))
    assert "<script>" not in html and "&lt;script&gt;" in html


# -- Pixel inspector and statistics ---------------------------------------------------------------
def test_sample_point_reads_the_pixel_under_a_lon_lat(sample_layers):
    layers = sample_layers.layers | {"input": sample_layers.input_layer}
    row, col = 42, 77
    lon, lat = _utm_to_lonlat(ORIGIN[0] + RES * (col + 0.5), ORIGIN[1] - RES * (row + 0.5))
    values = sample_point(layers, lon, lat)
    lulc_index = int(layers["LULC"].values[0, row, col])
    assert values["[G] LULC"] == (LULC_CLASSES[lulc_index].name, "class")
    assert values["[G] S1GRD-VV"][0] == pytest.approx(float(layers["S1GRD"].values[0, row, col]))
    assert values["[G] S1GRD-VV"][1] == "dB"
    assert values["[G] DEM"][0] == pytest.approx(float(layers["DEM"].values[0, row, col]))
    assert values["Input B08"][0] == pytest.approx(float(layers["input"].values[7, row, col]))
    prob = values["[G] LULC probability"][0]
    assert prob == pytest.approx(float(layers["LULC_PROB"].values[:, row, col].max()))
    # West nodata strip of the input: no value; far away: no value anywhere.
    lon_nd, lat_nd = _utm_to_lonlat(ORIGIN[0] + RES * 1.5, ORIGIN[1] - RES * 50)
    assert sample_point(layers, lon_nd, lat_nd)["Input B04"] == (None, layers["input"].attrs[
        "units"])
    assert all(v is None for v, _ in sample_point(layers, 2.0, 48.0).values())
    with pytest.raises(InvalidRequestError, match="lon"):
        sample_point(layers, 200.0, 45.0)


def test_class_statistics_give_areas_and_percentages(sample_layers):
    lulc = sample_layers.layers["LULC"]
    stats = layer_statistics(lulc, _by_name(sample_layers.layers)["[G] LULC"])
    by_name = {c["name"]: c for c in stats["classes"]}
    water_pixels = int((lulc.values == 1).sum())
    assert by_name["Water"]["pixels"] == water_pixels
    assert by_name["Water"]["area_km2"] == pytest.approx(water_pixels * RES * RES / 1e6)
    assert sum(c["percent"] for c in stats["classes"]) == pytest.approx(100.0)
    assert stats["total_km2"] == pytest.approx(120 * 100 * RES * RES / 1e6)


def test_continuous_statistics_describe_valid_pixels(ndvi_halves):
    stats = layer_statistics(ndvi_halves, display_layers_for({"NDVI": ndvi_halves})[0], bins=4)
    assert stats["valid_pixels"] == 50 * 60 - 100
    assert stats["valid_share"] == pytest.approx(1 - 100 / 3000)
    assert (stats["min"], stats["max"]) == (-1.0, 1.0)
    assert stats["counts"][0] == 50 * 30 - 100 and stats["counts"][-1] == 50 * 30
    assert stats["area_km2"] == pytest.approx(2900 * 20 * 20 / 1e6)


# -- Maps -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def overlays(sample_layers):
    layers = sample_layers.layers | {"input": sample_layers.input_layer}
    return [(d, render_png(layers[d.source], d, max_size=128), 0.7)
            for d in display_layers_for(layers)]


def _links(m: folium.Map) -> list[str]:
    """Script/stylesheet URLs as streamlit-folium collects them (each element's defaults)."""
    urls: list[str] = []

    def walk(element):
        if isinstance(element, folium.elements.JSCSSMixin):
            urls.extend(u for _, u in getattr(element, "default_js", []))
            urls.extend(u for _, u in getattr(element, "default_css", []))
        for child in getattr(element, "_children", {}).values():
            walk(child)

    walk(m)
    return urls


def test_map_has_one_image_overlay_per_layer_and_a_layer_control(sample_run, overlays):
    _, run = sample_run
    m = build_map(aoi=run.request.aoi, overlays=overlays)
    html = m.get_root().render()
    assert html.count("L.imageOverlay(") == len(overlays)
    assert html.count("data:image/png;base64,") == len(overlays)
    assert "L.control.layers(" in html
    for layer, _, _ in overlays:
        assert f'"{layer.name}"' in html
    assert "Area of interest" in html
    assert "synthetic, generated by TerraMind" in html
    assert "L.Control.Draw" not in html and "leaflet.draw.js" not in html


def test_map_html_loads_only_vendored_files(sample_run, overlays):
    _, run = sample_run
    maps = [
        build_map(aoi=run.request.aoi, overlays=overlays, draw=True,
                  compare=(overlays[0][0].name, overlays[2][0].name)),
        build_map(draw=True),
        build_map(footprints=[("S2A_1", run.request.aoi, True)], basemap=None),
        build_map(draw=True, geocoder_url="https://nominatim.openstreetmap.org/"),
    ]
    for m in maps:
        html = m.get_root().render()
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html).lower()
        for marker in CDN_MARKERS:
            assert marker not in text, marker
        refs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        assert refs and all(r.startswith("/app/static/") for r in refs), refs
        collected = _links(m)
        assert collected and all(u.startswith("/app/static/") for u in collected), collected
        for url in {*refs, *collected}:
            assert (ASSETS_DIR / url.removeprefix("/app/static/")).is_file(), url
        assert "/app/static/vendor/leaflet/leaflet.js" in refs


def test_every_vendored_file_exists_with_its_licence():
    for relative in vendored_urls():
        assert (ASSETS_DIR / relative).is_file(), relative
    for package in ("leaflet", "leaflet-draw", "leaflet-side-by-side",
                    "leaflet-control-geocoder"):
        assert (ASSETS_DIR / "vendor" / package / "LICENSE").is_file()
    assert (ASSETS_DIR / "vendor" / "leaflet" / "images" / "layers.png").is_file()
    assert (ASSETS_DIR / "vendor" / "leaflet-draw" / "images" / "spritesheet.svg").is_file()


def test_draw_control_offers_rectangle_and_polygon_only():
    html = build_map(draw=True).get_root().render()
    assert "L.Control.Draw" in html
    assert "/app/static/vendor/leaflet-draw/leaflet.draw.js" in html
    options = re.search(r"draw: (\{.*?\}),\s*edit", html, re.S).group(1)
    for shape in ("polyline", "circle", "marker", "circlemarker"):
        assert f'"{shape}": false' in options
    assert '"rectangle": {' in options and '"polygon": {' in options
    assert "id='export'" not in html


def test_geocoder_box_loads_the_vendored_plugin_and_asks_the_configured_service():
    service = "http://127.0.0.1:8088/nominatim"
    m = build_map(draw=True, geocoder_url=service)
    html = m.get_root().render()
    refs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    assert "/app/static/vendor/leaflet-control-geocoder/Control.Geocoder.js" in refs
    assert "/app/static/vendor/leaflet-control-geocoder/Control.Geocoder.css" in refs
    assert "/app/static/vendor/leaflet-control-geocoder/Control.Geocoder.js" in _links(m)
    assert f'L.Control.Geocoder.nominatim({{serviceUrl: "{service}/"}})' in html
    assert "L.Control.geocoder({" in html
    # Offline and "nothing found" are told apart in the box.
    assert json.dumps(GEOCODER_UNAVAILABLE) in html and json.dumps(GEOCODER_NOTHING_FOUND) in html
    with pytest.raises(InvalidRequestError, match="geocoder_url"):
        build_map(geocoder_url="nominatim.local")


def test_search_map_has_a_geocoder_unless_the_setting_is_off(monkeypatch):
    from app.settings import load_settings
    from app.ui.search_view import search_map

    for value, present in (("http://127.0.0.1:8088/", True), ("off", False)):
        monkeypatch.setenv("TERRALENS_GEOCODER_URL", value)
        html = search_map(None, None, None, None,
                          geocoder_url=load_settings().geocoder_url).get_root().render()
        assert ("Control.Geocoder" in html) is present, value
        assert ("http://127.0.0.1:8088/" in html) is present, value
        assert "L.Control.Draw" in html


def test_footprints_have_tooltips_and_the_chosen_one_stands_out(sample_run):
    _, run = sample_run
    m = build_map(footprints=[("S2A_one", run.request.aoi, False),
                              ("S2B_two", run.request.aoi, True)])
    html = m.get_root().render()
    assert "S2A_one" in html and "S2B_two" in html
    assert html.count(FOOTPRINT_HIGHLIGHT["color"]) >= 1
    assert html.count("terralens-tooltip") >= 2


def test_compare_puts_two_overlays_on_either_side(overlays):
    left, right = overlays[0][0].name, overlays[4][0].name
    html = build_map(overlays=overlays, compare=(left, right)).get_root().render()
    assert "L.control.sideBySide(" in html
    for pane in COMPARE_PANES:
        assert f'createPane("{pane}")' in html
        assert f'"pane": "{pane}"' in html
    # The other overlays start hidden: only the compared two are added to the map at first.
    added = re.findall(r"(image_overlay_\w+)\.addTo\(map_\w+\)", html)
    assert len(added) == 2
    with pytest.raises(InvalidRequestError, match="compare"):
        build_map(overlays=overlays, compare=(left, "nope"))


def test_view_fits_the_aoi_or_falls_back_to_center_and_zoom(sample_run):
    _, run = sample_run
    m = build_map(aoi=run.request.aoi)
    (_, west), (north, _) = m.get_bounds()
    ring = np.array(run.request.aoi["coordinates"][0])
    assert west == pytest.approx(ring[:, 0].min()) and north == pytest.approx(ring[:, 1].max())
    assert "fitBounds" in m.get_root().render()
    empty = build_map(center=(10.0, 20.0), zoom=5)
    assert empty.location == [10.0, 20.0]
    assert "fitBounds" not in empty.get_root().render()


def test_bad_map_arguments_are_refused(overlays):
    layer, rendered, _ = overlays[0]
    with pytest.raises(InvalidRequestError, match="opacity"):
        build_map(overlays=[(layer, rendered, 1.5)])
    with pytest.raises(InvalidRequestError, match="basemap"):
        build_map(basemap="Google")
    with pytest.raises(InvalidRequestError, match="unique"):
        build_map(overlays=[(layer, rendered, 0.5), (layer, rendered, 0.5)])



def test_layer_names_without_a_modality_read_well() -> None:
    grid = {"dims": ("band", "y", "x"), "coords": {"y": [1.5, 0.5], "x": [0.5, 1.5]}}
    tim_lulc = xr.DataArray(np.ones((1, 2, 2), np.uint8), **grid)
    tim_lulc = tim_lulc.assign_coords(band=["LULC"]).assign_attrs(
        kind="generated", synthetic=True, units="class",
        class_names=json.dumps(["No data", "Water"]))
    confidence = xr.DataArray(np.full((1, 2, 2), 0.5, np.float32), **grid).assign_coords(
        band=["WATER_CONFIDENCE"]).assign_attrs(kind="prediction", units="probability")
    names = {d.name for d in display_layers_for({"TIM_LULC": tim_lulc,
                                                 "WATER_CONFIDENCE": confidence})}
    assert names == {"[G] TiM LULC", "[P] Water confidence"}
