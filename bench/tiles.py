"""Bytes to the browser and server time per Layers-page interaction (tiles vs inlined PNGs),
and whether a tile at the finest zoom shows the data's own 10 m pixels.

    python bench/tiles.py [--km2 100,400] [--width 950 --height 560]

For each size it writes a seeded 4-output run (S1GRD, LULC, NDVI, DEM over a Sentinel-2 input,
the landscape of ``tests.fixtures.runs`` on a square grid of that many km² at 10 m) to a temp
store, opens the Layers page in AppTest and prints, per interaction (toggle each layer on, then
off; an opacity change; a pan/zoom):

* **args** — the map component's arguments as sent to the browser (script + changing layer
  group, JSON); the fixed script only goes again when it changes, so this is an upper bound;
* **tiles** — the PNG tiles the browser then fetches for the toggled layer at the map's fitted
  view (``--width`` × ``--height`` px, Leaflet's ``fitBounds`` zoom), rendered by the app's
  tile service (cold cache), their number and the mean render time;
* **whole page s** — the AppTest rerun of the whole page (what a rerun of the page costs);
* **fragment s** — of that, the map-and-layer-list fragment (``pages/3_Layers.py``): in the
  browser a widget inside it reruns only the fragment, so this is the server's time per
  interaction there.

Then the old way for comparison (every visible layer inlined as a base64 PNG, capped at 1536 px,
in the map script), and the finest tile zoom: the metres per tile pixel there, and whether a
tile equals the COG's full-resolution pixels read by rasterio (no overview) over its bounds.
Prints, never asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: Layers of a 4-output generation (the predictions WATER* left out).
SOURCES = ("S1GRD", "LULC", "LULC_PROB", "NDVI", "DEM")


def write_run(root: Path, km2: float) -> Any:
    """A seeded 4-output run on a square 10 m grid of ``km2``."""
    import tests.fixtures.runs as fixture
    from app.runs import RunStore

    side = round(math.sqrt(km2 * 1e6) / fixture.RES)
    fixture.WIDTH = fixture.HEIGHT = side
    sample = fixture.make_sample_layers(0)
    layers = {k: v for k, v in sample.layers.items() if k in SOURCES}
    return RunStore(root).save(sample.request, layers, provenance=sample.provenance,
                               input_layer=sample.input_layer)


def fit_zoom(bbox: tuple[float, float, float, float], width: int, height: int) -> int:
    """Leaflet's ``fitBounds`` zoom of ``bbox`` (lon/lat) in a ``width`` × ``height`` map."""
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    west, south, east, north = bbox
    x0, y0 = tms.xy(west, south)
    x1, y1 = tms.xy(east, north)
    for z in range(22, -1, -1):
        res = 2 * 20037508.342789244 / (256 * 2**z)
        if (x1 - x0) / res <= width and (y1 - y0) / res <= height:
            return z
    return 0


def map_bytes(at: Any) -> int:
    """Bytes of the map component's JSON arguments on the page."""
    from tests.fixtures.app_server import map_args

    return sum(len(json.dumps(a)) for a in map_args(at))


def timed(element: Any) -> tuple[Any, float]:
    """Run the page after a widget change; (AppTest, seconds)."""
    t0 = time.perf_counter()
    at = element.run()
    return at, time.perf_counter() - t0


def fragment_s(at: Any) -> float:
    """Seconds the page's map-and-layer-list fragment took in the last run: what a widget
    inside it costs the server in the browser, where only the fragment reruns (AppTest runs
    the whole page)."""
    from app.ui import state

    return float(at.session_state[state.LAYERS_FRAGMENT_S.name])


def native_pixels_check(run: Any, layer: Any, service: Any, zoom: int) -> tuple[int, float]:
    """(pixels compared, largest difference) of a tile at ``zoom`` in the AOI's centre against
    the COG's full-resolution band read by rasterio over the same bounds (nearest)."""
    import io

    import morecantile
    import numpy as np
    import rasterio
    from PIL import Image
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import Resampling

    from app.aoi import AOI
    from app.colors import colourise
    from app.tiles import layer_id

    tms = morecantile.tms.get("WebMercatorQuad")
    w, s, e, n = AOI(run.request.aoi).bbox
    tile = tms.tile((w + e) / 2, (s + n) / 2, zoom)
    png = service.render(run.id, layer_id(layer), tile.z, tile.x, tile.y)
    got = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    transform = rasterio.transform.from_bounds(*tms.xy_bounds(tile), 256, 256)
    # Finer than the data, GDAL reads the full-resolution band (never an overview).
    with rasterio.open(run.layer_path(layer.source)) as ds:
        index = list(ds.descriptions).index(layer.bands[0]) + 1
        with WarpedVRT(ds, crs="EPSG:3857", transform=transform, width=256, height=256,
                       resampling=Resampling.nearest) as vrt:
            data = vrt.read(index).astype(np.float64)
            valid = vrt.read_masks(index) > 0
    want = colourise(np.where(valid, data, np.nan), layer.style)
    return int(valid.sum()), float(np.abs(got.astype(int) - want.astype(int)).max())


def bench(km2: float, width: int, height: int) -> None:
    """Print the tables of one run size."""
    import morecantile
    from streamlit.testing.v1 import AppTest

    from app.aoi import AOI
    from app.layers import display_layers_for, render_png
    from app.tiles import NATIVE_ZOOM_EXTRA, TileService, layer_extent, layer_id
    from app.ui.state import W

    runs_dir = Path(tempfile.mkdtemp(prefix="terralens-bench-")) / "runs"
    t0 = time.perf_counter()
    run = write_run(runs_dir, km2)
    written = time.perf_counter() - t0
    os.environ["TERRALENS_DATA_DIR"] = str(runs_dir.parent)
    rasters = run.load_layers()
    layers = display_layers_for(rasters)
    bbox = AOI(run.request.aoi).bbox
    zoom = fit_zoom(bbox, width, height)
    tms = morecantile.tms.get("WebMercatorQuad")
    view_tiles = list(tms.tiles(*bbox, zooms=[zoom]))
    service = TileService(runs_dir)
    side = int(rasters["DEM"].sizes["x"])
    print(f"\n### {km2:g} km² ({side} × {side} px at 10 m), run written in {written:.1f} s; "
          f"{len(layers)} display layers; fitted view z{zoom}, {len(view_tiles)} tiles per "
          f"layer ({width} × {height} px map)\n")

    page = Path(__file__).resolve().parent.parent / "pages" / "3_Layers.py"
    at = AppTest.from_file(str(page), default_timeout=600)
    at.session_state["run_id"] = run.id
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    at, again = timed(at)
    print(f"first open {first:.2f} s (reads the run), a plain rerun {again:.2f} s, "
          f"map args {map_bytes(at) / 1000:.1f} kB\n")
    print("| interaction | args to browser | tiles fetched | tile render ms (cold) | "
          "whole page s | fragment s |")
    print("|---|---:|---:|---:|---:|---:|")
    for layer in layers:
        for turn_on in (True, False):
            box = at.checkbox(key=W.layer("visible", layer.name))
            if bool(box.value) == turn_on:
                box = (box.uncheck() if turn_on else box.check())
                at, _ = timed(box)
                box = at.checkbox(key=W.layer("visible", layer.name))
            at, seconds = timed(box.check() if turn_on else box.uncheck())
            tile_bytes, render_ms = 0, 0.0
            if turn_on:
                t1 = time.perf_counter()
                tile_bytes = sum(len(service.render(run.id, layer_id(layer), t.z, t.x, t.y))
                                 for t in view_tiles)
                render_ms = 1000 * (time.perf_counter() - t1) / max(1, len(view_tiles))
            tiles_col = (f"{tile_bytes / 1000:.1f} kB ({len(view_tiles)})" if turn_on else "0")
            ms_col = f"{render_ms:.0f}" if turn_on else "–"
            print(f"| {'show' if turn_on else 'hide'} {layer.name} | "
                  f"{map_bytes(at) / 1000:.1f} kB | {tiles_col} | {ms_col} | {seconds:.2f} | "
                  f"{fragment_s(at):.2f} |")
    name = layers[-1].name
    at.checkbox(key=W.layer("visible", name)).check().run()
    slider = at.slider(key=W.layer("opacity", name))
    at, seconds = timed(slider.set_value(0.5))
    print(f"| opacity of {name} | {map_bytes(at) / 1000:.1f} kB | 0 (browser cache) | – | "
          f"{seconds:.2f} | {fragment_s(at):.2f} |")
    w, s, e, n = bbox
    at.session_state[W.LAYERS_MAP] = {"center": {"lat": (s + n) / 2, "lng": (w + e) / 2},
                                      "zoom": zoom + 1, "last_clicked": None}
    at, seconds = timed(at)
    print(f"| pan/zoom (the view is kept in session state) | {map_bytes(at) / 1000:.1f} kB | "
          f"new view's tiles | – | {seconds:.2f} | {fragment_s(at):.2f} |")
    t1 = time.perf_counter()
    for t in view_tiles:
        service.render(run.id, layer_id(layers[-1]), t.z, t.x, t.y)
    cached_ms = 1000 * (time.perf_counter() - t1) / max(1, len(view_tiles))
    print(f"\ntile from the server's cache: {cached_ms:.2f} ms")

    outputs = [x for x in layers if x.kind != "input"]
    t1 = time.perf_counter()
    inlined = sum(len(render_png(rasters[x.source], x, max_size=1536).data_url) for x in outputs)
    print(f"before (inlined PNGs of the {len(outputs)} output layers, 1536 px cap): "
          f"{inlined / 1e6:.2f} MB in the map script per interaction; rendering them "
          f"{time.perf_counter() - t1:.2f} s")

    layer = next(x for x in layers if x.name == "[G] DEM")
    bounds, native = layer_extent(run, layer.source)
    finest = native + NATIVE_ZOOM_EXTRA
    lat = (bounds[0][0] + bounds[1][0]) / 2
    metres = 156543.03392 * math.cos(math.radians(lat)) / 2**finest
    compared, diff = native_pixels_check(run, layer, service, finest)
    capped = 10.0 * side / min(side, 1536)
    print(f"finest tile zoom z{finest} (native z{native} + {NATIVE_ZOOM_EXTRA}): "
          f"{metres:.2f} m per tile pixel; a z{finest} tile of {layer.name} against the "
          f"COG's full-resolution pixels (rasterio, no overview): {compared} pixels, largest "
          f"difference {diff:g} (RGBA levels); the inlined PNG showed {capped:.1f} m per pixel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--km2", default="100,400", help="run sizes, comma-separated")
    parser.add_argument("--width", type=int, default=950, help="map width in px")
    parser.add_argument("--height", type=int, default=560, help="map height in px")
    args = parser.parse_args()
    for km2 in (float(k) for k in args.km2.split(",")):
        bench(km2, args.width, args.height)


if __name__ == "__main__":
    main()
