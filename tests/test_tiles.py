"""Map tiles from a stored run's COGs: the right pixels in the right colours, only for stored
runs and layers, with cache headers (:mod:`app.tiles`, served through its Starlette route)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling
from starlette.applications import Starlette
from starlette.testclient import TestClient

from app.aoi import AOI
from app.colors import CLASS_NODATA, StyleKind, colourise
from app.held_tiles import HeldRasters
from app.layers import display_layers_for
from app.tiles import (
    CACHE_CONTROL,
    NATIVE_ZOOM_EXTRA,
    TileNotFoundError,
    TileService,
    TileStyle,
    layer_id,
    tile_routes,
    tile_url_template,
)
from inference.errors import InvalidRequestError

TMS = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def service(sample_run: tuple[Any, Any]) -> TileService:
    store, _ = sample_run
    return TileService(store.root)


@pytest.fixture(scope="module")
def client(service: TileService) -> TestClient:
    return TestClient(Starlette(routes=tile_routes(lambda: service)))


def _layers(run: Any) -> dict[str, Any]:
    return {layer.name: layer for layer in display_layers_for(run.load_layers())}


def _tiles_over(run: Any, zoom: int) -> list[morecantile.Tile]:
    return list(TMS.tiles(*AOI(run.request.aoi).bbox, zooms=[zoom]))


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def _expected(run: Any, layer: Any, tile: morecantile.Tile, style: Any = None) -> np.ndarray:
    """The tile as rasterio reads the COG over the same Web Mercator bounds (nearest
    neighbour), coloured with the layer's colour table."""
    style = style or layer.style
    bounds = TMS.xy_bounds(tile)
    transform = rasterio.transform.from_bounds(*bounds, 256, 256)
    with rasterio.open(run.layer_path(layer.source)) as ds:
        names = list(ds.descriptions)
        indexes = [names.index(b) + 1 for b in layer.bands]
        with WarpedVRT(ds, crs="EPSG:3857", transform=transform, width=256, height=256,
                       resampling=Resampling.nearest) as vrt:
            data = vrt.read(indexes)
            valid = vrt.read_masks(indexes[0]) > 0
    if style.kind is StyleKind.CLASSES:
        values = np.where(valid, data[0], CLASS_NODATA)
    else:
        values = np.where(valid, data.astype(np.float64), np.nan)
        values = values if style.kind is StyleKind.RGB else values[0]
    return colourise(values, style)


@pytest.mark.parametrize("name", ["[G] LULC", "[G] NDVI", "[G] S1GRD-VH", "Input true colour",
                                  "[P] Water"])
def test_a_tile_has_the_cog_pixels_in_the_layer_colours(client: TestClient,
                                                        sample_run: tuple[Any, Any],
                                                        name: str) -> None:
    _, run = sample_run
    layer = _layers(run)[name]
    template = tile_url_template(run, layer)
    checked = 0
    for tile in _tiles_over(run, 16):
        url = template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace(
            "{y}", str(tile.y))
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        got = _decode(response.content)
        want = _expected(run, layer, tile)
        assert got.shape == (256, 256, 4)
        np.testing.assert_array_equal(got, want, err_msg=f"{name} {tile}")
        checked += int((want[..., 3] > 0).sum())
    assert checked > 1000, "the tiles over the run's AOI hold its pixels"


@pytest.mark.parametrize("name", ["[G] LULC", "[G] NDVI", "[G] DEM"])
def test_class_and_ramp_tiles_go_as_smaller_palette_pngs(service: TileService,
                                                         sample_run: tuple[Any, Any],
                                                         name: str) -> None:
    """A class layer or a continuous one through a 256-step ramp has at most 256 colours per
    tile: it is sent as a palette PNG (the pixels checked above are the same), fewer bytes than
    the same pixels as RGBA."""
    _, run = sample_run
    layer = _layers(run)[name]
    for tile in _tiles_over(run, 16):
        png = service.render(run.id, layer_id(layer), tile.z, tile.x, tile.y)
        with Image.open(io.BytesIO(png)) as image:
            assert image.mode == "P", f"{name} {tile}"
        rgba = io.BytesIO()
        Image.fromarray(_decode(png), mode="RGBA").save(rgba, format="PNG", compress_level=6)
        assert len(png) < len(rgba.getvalue())


def test_class_tiles_use_exactly_the_class_colours(service: TileService,
                                                   sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    layer = _layers(run)["[G] LULC"]
    colours = {tuple(int(c) for c in bytes.fromhex(e.colour[1:])) for e in layer.style.classes
               if e.colour is not None}
    seen: set[tuple[int, int, int]] = set()
    for tile in _tiles_over(run, 17):
        rgba = _decode(service.render(run.id, layer_id(layer), tile.z, tile.x, tile.y))
        opaque = rgba[rgba[..., 3] > 0]
        assert set(np.unique(rgba[..., 3])) <= {0, 255}
        seen |= {tuple(int(v) for v in px[:3]) for px in opaque}
    assert seen and seen <= colours


def test_a_stretch_in_the_url_changes_the_colours(client: TestClient,
                                                  sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    layer = _layers(run)["[G] DEM"]
    tile = _tiles_over(run, 16)[0]
    from dataclasses import replace

    narrow = replace(layer.style, vmin=100.0, vmax=120.0, ramp="viridis")
    url = tile_url_template(run, layer, style=narrow).format(z=tile.z, x=tile.x, y=tile.y)
    assert "ramp=viridis" in url and "vmin=100.0" in url
    got = _decode(client.get(url).content)
    np.testing.assert_array_equal(got, _expected(run, layer, tile, narrow))
    default = _decode(client.get(tile_url_template(run, layer).format(
        z=tile.z, x=tile.x, y=tile.y)).content)
    assert (got != default).any()


def test_low_zooms_read_the_whole_layer_into_one_tile(service: TileService,
                                                      sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    layer = _layers(run)["[G] NDVI"]
    (tile,) = _tiles_over(run, 10)
    rgba = _decode(service.render(run.id, layer_id(layer), tile.z, tile.x, tile.y))
    assert 0 < (rgba[..., 3] > 0).sum() < 256 * 256 / 10  # the run is a small patch at z10


def test_unknown_runs_layers_and_zooms_are_404(client: TestClient,
                                               sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    tile = _tiles_over(run, 16)[0]
    good = f"/tiles/{run.id}/g-lulc/{tile.z}/{tile.x}/{tile.y}.png"
    assert client.get(good).status_code == 200
    for url in [
        f"/tiles/0000000000000000/g-lulc/{tile.z}/{tile.x}/{tile.y}.png",  # no such run
        f"/tiles/{run.id}/g-nothing/{tile.z}/{tile.x}/{tile.y}.png",  # no such layer
        f"/tiles/{run.id}/g-lulc/23/{tile.x}/{tile.y}.png",  # beyond any zoom
        f"/tiles/{run.id}/g-lulc/{16 + 8}/{tile.x}/{tile.y}.png",  # far finer than the data
        f"/tiles/{run.id}/g-lulc/3/8/1.png",  # column out of range at that zoom
    ]:
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"].startswith("text/plain")


def test_no_path_traversal(client: TestClient, sample_run: tuple[Any, Any],
                           service: TileService) -> None:
    store, run = sample_run
    (store.root / "secret.tif").write_bytes((store.root / run.id / "LULC.tif").read_bytes())
    tile = _tiles_over(run, 16)[0]
    zxy = f"{tile.z}/{tile.x}/{tile.y}.png"
    for url in [f"/tiles/..%2F{run.id}/g-lulc/{zxy}", f"/tiles/{run.id}/..%2Fsecret/{zxy}",
                f"/tiles/{run.id}/..%2F..%2Fsecret.tif/{zxy}", f"/tiles/%2E%2E/g-lulc/{zxy}",
                f"/tiles/{run.id}/LULC.tif/{zxy}", f"/tiles/{run.id}/input/{zxy}"]:
        assert client.get(url).status_code in (400, 404), url
    for run_id, layer in [("..", "g-lulc"), (f"../{run.id}", "g-lulc"),
                          (run.id, "../secret"), (run.id, "LULC")]:
        with pytest.raises(TileNotFoundError):
            service.render(run_id, layer, tile.z, tile.x, tile.y)


def test_tiles_carry_cache_headers_and_repeat_from_the_cache(client: TestClient,
                                                            service: TileService,
                                                            sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    layer = _layers(run)["[G] S1GRD-VV"]
    tile = _tiles_over(run, 15)[0]
    url = tile_url_template(run, layer).format(z=tile.z, x=tile.x, y=tile.y)
    first = client.get(url)
    before = len(service.cache)
    second = client.get(url)
    assert first.headers["cache-control"] == CACHE_CONTROL
    assert second.content == first.content and len(service.cache) == before


def test_the_cache_stays_within_its_bytes(sample_run: tuple[Any, Any]) -> None:
    store, run = sample_run
    small = TileService(store.root, cache_bytes=4000)
    layer = _layers(run)["[G] NDVI"]
    for tile in _tiles_over(run, 17):
        small.render(run.id, layer_id(layer), tile.z, tile.x, tile.y)
    assert small.cache.bytes <= 4000


def test_bad_stretches_are_refused(client: TestClient, sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    tile = _tiles_over(run, 16)[0]
    base = f"/tiles/{run.id}/g-ndvi/{tile.z}/{tile.x}/{tile.y}.png"
    for query in ["vmin=1&vmax=0", "vmin=abc", "ramp=rainbow", "vmax=nan"]:
        response = client.get(f"{base}?{query}")
        assert response.status_code == 400, query
    with pytest.raises(InvalidRequestError, match="low to high"):
        TileStyle(vmin=2.0, vmax=1.0)


# -- Rasters the app holds (app/held_tiles.py): the Search preview, added layers -------------------
def _source_expected(source: Path, bands: list[str], layer: Any, tile: morecantile.Tile
                     ) -> np.ndarray:
    """The tile as rasterio reads the *source* GeoTIFF (not the held copy) over the same Web
    Mercator bounds, coloured with the layer's colour table."""
    transform = rasterio.transform.from_bounds(*TMS.xy_bounds(tile), 256, 256)
    indexes = [bands.index(b) + 1 for b in layer.bands]
    with rasterio.open(source) as ds, WarpedVRT(
        ds, crs="EPSG:3857", transform=transform, width=256, height=256,
        resampling=Resampling.nearest, nodata=np.nan,
    ) as vrt:
        data = vrt.read(indexes).astype(np.float64)
    valid = np.isfinite(data).all(axis=0)
    values = np.where(valid, data, np.nan)
    return colourise(values if layer.style.kind is StyleKind.RGB else values[0], layer.style)


@pytest.fixture
def held_client(tmp_path: Path, sample_run: tuple[Any, Any]) -> tuple[TestClient, HeldRasters]:
    store, _ = sample_run
    held = HeldRasters(tmp_path / "held")
    service = TileService(store.root, held=held)
    return TestClient(Starlette(routes=tile_routes(lambda: service))), held


def _plain_geotiff(da: Any, path: Path) -> list[str]:
    """``da`` as a plain (not cloud-optimised) float GeoTIFF; returns its band order."""
    plain = da.astype("float32").copy()
    plain.attrs = {}
    plain.rio.write_nodata(np.nan, encoded=False, inplace=True)
    plain.rio.to_raster(path)
    return [str(b) for b in np.atleast_1d(da["band"].values)]


@pytest.mark.parametrize("source, name", [("input", "Input true colour"), ("DEM", "[G] DEM")])
def test_a_held_raster_tile_has_the_source_pixels(held_client: tuple[TestClient, HeldRasters],
                                                  sample_layers: Any, sample_run: Any,
                                                  tmp_path: Path, source: str,
                                                  name: str) -> None:
    """A scene preview (true colour) and an added single-band layer come back as PNG tiles
    with the pixels rasterio reads from the source file over the same bounds."""
    client, held = held_client
    _, run = sample_run
    da = sample_layers.input_layer if source == "input" else sample_layers.layers[source]
    layers = display_layers_for({source: da})
    layer = next(x for x in layers if x.name == name)
    entry = held.hold(f"test|{source}", da, layers)
    bands = _plain_geotiff(da, tmp_path / "source.tif")
    template = entry.url_template(layer)
    assert template.startswith(f"/tiles/held/{entry.token}/{layer_id(layer)}/")
    assert str(tmp_path) not in template and ".tif" not in template
    checked = 0
    for tile in _tiles_over(run, 16):
        response = client.get(template.format(z=tile.z, x=tile.x, y=tile.y))
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == CACHE_CONTROL
        want = _source_expected(tmp_path / "source.tif", bands, layer, tile)
        np.testing.assert_array_equal(_decode(response.content), want, err_msg=str(tile))
        checked += int((want[..., 3] > 0).sum())
    assert checked > 1000
    # Holding the same raster again writes nothing and keeps its token.
    assert held.hold(f"test|{source}", da, layers).token == entry.token and len(held) == 1


def test_the_finest_held_tile_reads_native_pixels(held_client: tuple[TestClient, HeldRasters],
                                                  sample_layers: Any) -> None:
    """At the zoom the map asks last (native + NATIVE_ZOOM_EXTRA) a tile pixel is finer than
    the 10 m data, so every data pixel shows as its own block."""
    _, held = held_client
    da = sample_layers.layers["DEM"]
    layers = display_layers_for({"DEM": da})
    entry = held.hold("dem", da, layers)
    lat = (entry.bounds[0][0] + entry.bounds[1][0]) / 2
    finest = entry.native_zoom + NATIVE_ZOOM_EXTRA
    metres = 156543.03392 * math.cos(math.radians(lat)) / 2**finest
    assert metres < 10.0 / 2


def test_unknown_tokens_and_traversal_are_404(held_client: tuple[TestClient, HeldRasters],
                                              sample_layers: Any, sample_run: Any,
                                              tmp_path: Path) -> None:
    client, held = held_client
    _, run = sample_run
    da = sample_layers.layers["DEM"]
    entry = held.hold("dem", da, display_layers_for({"DEM": da}))
    tile = _tiles_over(run, 16)[0]
    zxy = f"{tile.z}/{tile.x}/{tile.y}.png"
    good = f"/tiles/held/{entry.token}/g-dem/{zxy}"
    assert client.get(good).status_code == 200
    (tmp_path / "secret.tif").write_bytes(entry.path.read_bytes())
    for url in [
        f"/tiles/held/{'A' * 24}/g-dem/{zxy}",  # a well-formed token nobody holds
        f"/tiles/held/{entry.token[:-1]}{'B' if entry.token[-1] == 'A' else 'A'}/g-dem/{zxy}",
        f"/tiles/held/{entry.token}/g-nothing/{zxy}",  # no such layer
        f"/tiles/held/..%2Fsecret/g-dem/{zxy}", f"/tiles/held/%2E%2E/g-dem/{zxy}",
        f"/tiles/held/{entry.token}/..%2F..%2Fsecret.tif/{zxy}",
        f"/tiles/held/{entry.path.name}/g-dem/{zxy}", f"/tiles/held/{entry.path}/g-dem/{zxy}",
        f"/tiles/held/{entry.token}/g-dem/23/0/0.png",
    ]:
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert response.headers["content-type"].startswith("text/plain"), url
    for token in ["..", "../secret", str(tmp_path / "secret.tif"), entry.path.name]:
        with pytest.raises(TileNotFoundError):
            held.get(token)


def test_held_rasters_stay_within_their_bounds(tmp_path: Path, sample_layers: Any) -> None:
    """The table keeps at most its entries; a dropped raster's file is deleted and its
    token answers 404; holding it again gives a new token."""
    held = HeldRasters(tmp_path / "held", max_entries=2)
    da = sample_layers.layers["DEM"]
    layers = display_layers_for({"DEM": da})
    first = held.hold("a", da, layers)
    held.hold("b", da, layers)
    held.hold("c", da, layers)
    assert len(held) == 2 and len(list((tmp_path / "held").iterdir())) == 2
    assert not first.path.exists()
    with pytest.raises(TileNotFoundError):
        held.get(first.token)
    assert held.hold("a", da, layers).token != first.token
    small = HeldRasters(tmp_path / "small", max_bytes=1)
    small.hold("a", da, layers)
    small.hold("b", da, layers)
    assert len(small) == 1  # the newest is kept even when larger than the bound
