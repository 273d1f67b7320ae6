"""Map exports: the PNG map sheet of a layer, read back and checked pixel by pixel.

Runs are written with the run store's COG writer (:func:`tests.fixtures.runs.write_sample_run`)
and read back from their GeoTIFFs before they are drawn.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app import map_drawing as md
from app import map_export as mx
from app.colors import ClassEntry, Style, hex_to_rgb, ramp_lut
from app.layers import DisplayLayer, display_layers_for, render_png
from app.natural_earth import lonlat_to_mercator, mercator_to_lonlat, outlines
from inference.errors import InvalidRequestError
from tests.fixtures.runs import write_sample_run

HOSTILE = "$\\frac{1}{2}$ <script>alert(1)</script> $x^2$ \u202e🛰 %s {0}"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The sample run and its untrained twin, each written as COGs and read back."""
    out: dict[str, Any] = {}
    for label, untrained in (("trained", False), ("untrained", True)):
        _, run = write_sample_run(tmp_path_factory.mktemp(label), untrained=untrained)
        layers = run.load_layers()
        out[label] = (run, layers, {d.name: d for d in display_layers_for(layers)})
    return out


def _sheet(stored: dict[str, Any], name: str, *, which: str = "trained", width: int = 1200,
           layer: DisplayLayer | None = None, **kwargs: Any) -> tuple[np.ndarray, Image.Image]:
    run, layers, by_name = stored[which]
    shown = layer or by_name[name]
    rendered = render_png(layers[shown.source], shown)
    data = mx.map_png(rendered, shown, width_px=width, info=mx.sheet_info(run), **kwargs)
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image.convert("RGB")), image


def _region(pixels: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The pixels of a figure-fraction box (origin bottom left, as matplotlib's)."""
    height, width = pixels.shape[:2]
    left, bottom, right, top = box
    return pixels[round((1 - top) * height):round((1 - bottom) * height),
                  round(left * width):round(right * width)]


def _count(region: np.ndarray, colour: str | tuple[int, int, int], tol: int = 3) -> int:
    rgb = np.asarray(hex_to_rgb(colour) if isinstance(colour, str) else colour)
    return int((np.abs(region.astype(int) - rgb).max(axis=-1) <= tol).sum())


def _dark(region: np.ndarray) -> int:
    return int((region.max(axis=-1) < 60).sum())


@pytest.mark.parametrize("width", mx.EXPORT_WIDTHS)
def test_the_png_is_a_map_sheet_of_the_chosen_size(stored: dict[str, Any], width: int) -> None:
    pixels, image = _sheet(stored, "[G] LULC", width=width)
    assert image.size == (width, width * 5 // 8)
    area = (width / 1200) ** 2  # pixel counts grow with the square of the width
    # Legend: a swatch of every coloured LULC class, in the class's own colour.
    legend = _region(pixels, mx.LEGEND_BOX)
    lulc = stored["trained"][2]["[G] LULC"]
    colours = [c.colour for c in lulc.style.classes if c.colour]
    assert len(colours) == 10
    for colour in colours:
        assert _count(legend, colour, tol=1) >= 60 * area, colour
    assert _dark(legend) > 300 * area  # the class names
    # Scale bar: black and white segments and their labels in a white box.
    scale = _region(pixels, mx.SCALE_BAR_BOX)
    assert _dark(scale) > 400 * area
    assert _count(scale, "#ffffff", tol=8) > 0.3 * scale.shape[0] * scale.shape[1]
    # North arrow and its "N".
    assert _dark(_region(pixels, mx.NORTH_ARROW_BOX)) > 300 * area
    # The synthetic mark: an amber band with dark text.
    mark = _region(pixels, mx.MARK_BOX)
    assert _count(mark, md.SYNTHETIC_COLOUR, tol=2) > 0.7 * mark.shape[0] * mark.shape[1]
    assert _dark(mark) > 500 * area
    assert _count(mark, md.UNTRAINED_COLOUR, tol=10) == 0
    # Title, the map (the layer's water and the offline land around it), the overview.
    assert _dark(_region(pixels, mx.TITLE_BOX)) > 1000 * area
    map_region = _region(pixels, mx.MAP_BOX)
    assert _count(map_region, colours[1], tol=1) > 2000 * area  # water
    assert _count(map_region, md.LAND_COLOUR, tol=1) > 10_000 * area  # Natural Earth land
    overview = _region(pixels, mx.OVERVIEW_BOX)
    assert _count(overview, md.OCEAN_COLOUR, tol=1) > 1000 * area  # the Adriatic
    assert _count(overview, md.UNTRAINED_COLOUR, tol=10) > 20 * area  # where the run is
    assert image.text["Title"] == "[G] LULC"
    assert "SYNTHETIC" in image.text["Description"]
    south, west, north, east = (float(v) for v in image.text["Bounds"].split(","))
    assert 44.9 < south < north < 45.1 and 14.9 < west < east < 15.1


@pytest.mark.parametrize(("name", "ramp", "units"), [
    ("[G] NDVI", "ndvi", "NDVI (unitless)"),
    ("[G] DEM", "terrain", "DEM (m)"),
    ("[G] S1GRD-VV", "gray", "S1GRD VV (dB)"),
])
def test_a_continuous_legend_draws_its_ramp_in_physical_units(
        stored: dict[str, Any], name: str, ramp: str, units: str) -> None:
    pixels, image = _sheet(stored, name)
    legend = _region(pixels, mx.LEGEND_BOX)
    lut = ramp_lut(ramp)
    for index in (5, 128, 250):
        assert _count(legend, tuple(int(v) for v in lut[index]), tol=2) >= 5, index
    assert units in image.text["Description"]


def test_an_untrained_run_carries_the_untrained_mark(stored: dict[str, Any]) -> None:
    pixels, image = _sheet(stored, "[G] NDVI", which="untrained")
    mark = _region(pixels, mx.MARK_BOX)
    assert _count(mark, md.UNTRAINED_COLOUR, tol=2) > 0.7 * mark.shape[0] * mark.shape[1]
    assert _count(mark, md.SYNTHETIC_COLOUR, tol=10) == 0
    assert "UNTRAINED" in image.text["Description"]


def test_a_measurement_carries_no_mark(stored: dict[str, Any]) -> None:
    pixels, image = _sheet(stored, "Input true colour")
    mark = _region(pixels, mx.MARK_BOX)
    assert (mark == 255).all()  # nothing drawn where generated layers carry their mark
    assert "SYNTHETIC" not in image.text["Description"]
    # The legend names the composite's bands.
    assert _dark(_region(pixels, mx.LEGEND_BOX)) > 200


def test_a_hostile_layer_name_is_drawn_as_plain_text(stored: dict[str, Any]) -> None:
    _, _, by_name = stored["trained"]
    lulc = by_name["[G] LULC"]
    classes = tuple(ClassEntry(c.value, f"{HOSTILE} {c.value}" if c.value else c.name, c.colour)
                    for c in lulc.style.classes)
    hostile = dataclasses.replace(lulc, name=HOSTILE, title=HOSTILE,
                                  style=Style(lulc.style.kind, classes=classes,
                                              bands=lulc.style.bands))
    pixels, image = _sheet(stored, "", layer=hostile)
    assert image.size == (1200, 750)
    assert image.text["Title"].startswith("$\\frac{1}{2}$ <script>alert(1)</script> $x^2$")
    assert "🛰" not in image.text["Title"]  # no glyph in the font: drawn as "?"
    assert _dark(_region(pixels, mx.TITLE_BOX)) > 1000


def test_plain_text_keeps_dollars_and_drops_what_the_font_cannot_draw() -> None:
    assert md.plain_text("$\\frac{}$") == "$\\frac{}$"
    assert md.plain_text("a\u202eb\nc\x00d") == "a b c d"
    assert md.plain_text("🛰 x") == "? x"
    assert md.plain_text("x" * 500, 20) == "x" * 19 + "…"


def test_widths_outside_the_range_are_refused(stored: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="export width"):
        _sheet(stored, "[G] NDVI", width=100)


def test_natural_earth_outlines_come_from_the_vendored_file() -> None:
    shapes = outlines()
    assert len(shapes.land) > 1000 and len(shapes.borders) > 100
    # Web Mercator round trip, and a land ring around Italy's boot (lon 12.5, lat 42).
    x, y = lonlat_to_mercator(12.5, 42.0)
    lon, lat = mercator_to_lonlat(x, y)
    assert (float(lon), float(lat)) == pytest.approx((12.5, 42.0))
    from matplotlib.path import Path as MplPath

    assert any(MplPath(ring).contains_point((float(x), float(y))) for ring in shapes.land)
    sea_x, sea_y = lonlat_to_mercator(18.0, 36.0)  # Ionian Sea
    assert not any(MplPath(r).contains_point((float(sea_x), float(sea_y))) for r in shapes.land)


def test_scale_bar_lengths_are_round_numbers() -> None:
    assert md.nice_length(740.0) == 500.0
    assert md.nice_length(2300.0) == 2000.0
    assert md.nice_length(99.0) == 50.0
    assert md.distance_label(500.0) == "500 m"
    assert md.distance_label(2000.0) == "2 km"


# -- A site tile server ---------------------------------------------------------------------------
TILE_COLOUR = (255, 0, 255)


@pytest.fixture
def tile_server() -> Iterator[str]:
    """A tile server on 127.0.0.1 whose every tile is solid magenta."""
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), TILE_COLOUR).save(buffer, format="PNG")
    tile = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(tile)))
            self.end_headers()
            self.wfile.write(tile)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    finally:
        server.shutdown()
        server.server_close()


def test_a_reachable_site_tile_server_is_the_basemap(stored: dict[str, Any],
                                                     tile_server: str) -> None:
    pixels, _ = _sheet(stored, "[G] NDVI", basemap_url=tile_server)
    map_region = _region(pixels, mx.MAP_BOX)
    assert _count(map_region, TILE_COLOUR, tol=16) > 100_000  # resampled: about magenta
    assert _count(map_region, md.LAND_COLOUR, tol=1) < 500  # no Natural Earth land


def test_an_unreachable_tile_server_falls_back_to_natural_earth(stored: dict[str, Any],
                                                                tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    url = f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"
    pixels, _ = _sheet(stored, "[G] NDVI", basemap_url=url)
    assert time.monotonic() - started < 15
    map_region = _region(pixels, mx.MAP_BOX)
    assert _count(map_region, md.LAND_COLOUR, tol=1) > 10_000
    assert _count(map_region, TILE_COLOUR, tol=16) == 0


def test_the_tile_mosaic_stays_within_its_tile_budget() -> None:
    from app.export_tiles import MAX_TILES, choose_zoom, tile_range

    x0, y0 = lonlat_to_mercator(14.0, 44.0)
    x1, y1 = lonlat_to_mercator(16.0, 46.0)
    extent = (float(x0), float(x1), float(y0), float(y1))
    zoom = choose_zoom(extent, 1200)
    col0, col1, row0, row1 = tile_range(extent, zoom)
    assert (col1 - col0 + 1) * (row1 - row0 + 1) <= MAX_TILES
    assert 5 <= zoom <= 9  # about 1200 px over 2 degrees
