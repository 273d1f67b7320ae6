"""AppTest of the Layers page with the sample run in the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from app import added_layers
from app.aoi import AOI
from app.escaping import markdown_text
from app.exports import polygons_bytes
from app.held_tiles import held_rasters
from app.layer_names import layer_label, source_label
from app.layers import display_layers_for
from app.map_export import EXPORT_WIDTHS
from app.rasters import layer_to_cog_bytes
from app.tiles import TileService, tile_routes
from app.ui.layers_view import newest_output
from app.ui.state import W
from tests.fixtures.app_server import (
    image_overlay_count,
    map_args,
    map_groups,
    map_scripts,
    page_test,
    tile_layer_urls,
)

PAGE = "3_Layers.py"


def _open(run_id: str | None, *, via_url: bool = False):
    at = page_test(PAGE)
    if run_id and via_url:
        at.query_params["run"] = run_id
    elif run_id:
        at.session_state["run_id"] = run_id
    return at.run()


def test_no_run_open_points_to_run_and_runs(app_env: Path) -> None:
    at = _open(None)
    assert not at.exception
    assert any("No run is open" in i.value for i in at.info)


def test_unknown_run_is_a_clear_error(app_env: Path) -> None:
    at = _open("0123456789abcdef")
    assert not at.exception
    assert any("0123456789abcdef" in e.value for e in at.error)


def _labels(run: Any) -> dict[str, str]:
    """Layer name → its line in the layer list."""
    return {layer.name: layer_label(layer) for layer in display_layers_for(run.load_layers())}


def _group(at: Any) -> str:
    [group] = map_groups(at)
    return group


def _script(at: Any) -> str:
    [script] = map_scripts(at)
    return script


def test_run_layers_panel_map_and_legends(app_run: Any) -> None:
    at = _open(app_run.id, via_url=True)
    assert not at.exception and not at.error
    labels = _labels(app_run)
    # Labels are markdown: each is the escaped label (shown literally, see test_browser).
    assert {c.label for c in at.checkbox} == {markdown_text(v) for v in labels.values()}
    assert labels["[G] LULC"] == "Land cover (generated) · [G] LULC"
    assert labels["Input true colour"] == "Sentinel-2 true colour (input) · Input true colour"
    assert "[P] Water" in labels
    # Only the newest output is on the map, as a tile layer of this run; no image is inlined
    # and Leaflet's own layer control does not duplicate the panel.
    newest = newest_output(display_layers_for(app_run.load_layers()))
    [url] = tile_layer_urls(_group(at))
    assert url.startswith(f"/tiles/{app_run.id}/")
    assert [n for n, c in zip(labels, [at.checkbox(key=W.layer("visible", n)) for n in labels],
                              strict=True) if c.value] == [newest]
    assert "data:image/png" not in _script(at) + _group(at)
    assert "L.control.layers" not in _script(at)
    # Synthetic layers are marked on the page and in the legend of the visible layer.
    assert any("synthetic" in m.value for m in at.markdown)
    legends = "".join(h.proto.body for h in at.get("html"))
    assert legends.count("terralens-legend") == 1
    # The shareable URL carries the run.
    assert at.query_params["run"] == [app_run.id] or at.query_params["run"] == app_run.id


def test_toggling_a_layer_adds_its_tiles_and_keeps_the_map(app_run: Any) -> None:
    at = _open(app_run.id)
    script = _script(at)
    before = tile_layer_urls(_group(at))
    at.checkbox(key=W.layer("visible", "[G] LULC")).check().run()
    assert not at.exception
    after = tile_layer_urls(_group(at))
    assert len(after) == len(before) + 1 and any("/g-lulc/" in u for u in after)
    # The fixed part of the map is the same script: streamlit-folium keeps the component (and
    # the analyst's view) and swaps only the layer group.
    assert _script(at) == script
    legends = "".join(h.proto.body for h in at.get("html"))
    assert "Water" in legends and legends.count("terralens-legend") == 2
    at.checkbox(key=W.layer("visible", "[G] LULC")).uncheck().run()
    assert tile_layer_urls(_group(at)) == before and _script(at) == script


def test_opacity_and_order_reach_the_map(app_run: Any) -> None:
    at = _open(app_run.id)
    script = _script(at)
    at.checkbox(key=W.layer("visible", "[G] NDVI")).check().run()
    at.slider(key=W.layer("opacity", "[G] NDVI")).set_value(0.3).run()
    assert not at.exception
    assert at.session_state["layer_opacity"]["[G] NDVI"] == pytest.approx(0.3)
    assert '"opacity": 0.3' in _group(at)
    assert _script(at) == script
    # The top of the list is the top of the map (highest zIndex in the raster pane).
    at.checkbox(key=W.layer("visible", "Input true colour")).check().run()
    while at.session_state["layer_order"][-1] != "Input true colour":
        at.button(key=W.layer("up", "Input true colour")).click().run()
    assert at.session_state["layer_order"][-1] == "Input true colour"
    assert at.checkbox[0].label == layer_label(
        next(x for x in display_layers_for(app_run.load_layers()) if x.name == "Input true colour"))
    urls = tile_layer_urls(_group(at))
    assert "/input-true-colour/" in urls[-1]
    at.button(key=W.layer("down", "Input true colour")).click().run()
    assert at.session_state["layer_order"][-2] == "Input true colour"
    assert "/input-true-colour/" in tile_layer_urls(_group(at))[-2]


def test_a_stretch_and_ramp_change_tiles_and_legend(app_run: Any) -> None:
    at = _open(app_run.id)
    at.checkbox(key=W.layer("visible", "[G] DEM")).check().run()
    at.selectbox(key=W.layer("stretch", "[G] DEM")).select("Custom").run()
    at.number_input(key=W.layer("low", "[G] DEM")).set_value(100.0).run()
    at.number_input(key=W.layer("high", "[G] DEM")).set_value(300.0).run()
    at.selectbox(key=W.layer("ramp", "[G] DEM")).select("cividis").run()
    assert not at.exception and not at.error
    [dem] = [u for u in tile_layer_urls(_group(at)) if "/g-dem/" in u]
    assert "vmin=100.0" in dem and "vmax=300.0" in dem and "ramp=cividis" in dem
    legends = "".join(h.proto.body for h in at.get("html"))
    assert ">100<" in legends and ">300<" in legends
    # Percentiles come from the layer's own statistics.
    at.selectbox(key=W.layer("stretch", "[G] DEM")).select("2–98 %").run()
    finite = app_run.load_layer("DEM").values.astype(np.float64)
    p2, p98 = np.percentile(finite[np.isfinite(finite)], [2, 98])
    [dem] = [u for u in tile_layer_urls(_group(at)) if "/g-dem/" in u]
    query = dict(part.split("=") for part in dem.split("?")[1].split("\\u0026"))
    assert float(query["vmin"]) == pytest.approx(p2) and float(query["vmax"]) == pytest.approx(p98)


def test_the_basemap_choice_changes_only_the_layer_group(app_run: Any) -> None:
    at = _open(app_run.id)
    script = _script(at)
    assert "arcgisonline" in _group(at)
    at.selectbox(key=W.BASEMAP).select("Dark").run()
    assert "dark_all" in _group(at) and "arcgisonline" not in _group(at)
    at.selectbox(key=W.BASEMAP).select("Offline (Natural Earth)").run()
    assert "cartocdn" not in _group(at) and "arcgisonline" not in _group(at)
    assert _script(at) == script
    assert "world-atlas/countries-50m.json" in script  # the outline that is always there


def test_pixel_inspector_shows_values_in_units(app_run: Any, sample_layers: Any) -> None:
    at = _open(app_run.id)
    da = sample_layers.layers["DEM"]
    lon, lat = _lonlat_of_pixel(da, row=50, col=60)
    at.session_state["inspect_point"] = (lat, lon)
    at.checkbox(key=W.layer("visible", "[G] DEM")).check()
    at.checkbox(key=W.layer("visible", "[G] LULC")).check().run()
    assert not at.exception
    table = at.dataframe[0].value
    dem = table[table["Layer"] == "Elevation (generated) · [G] DEM"].iloc[0]
    assert dem["Units"] == "m"
    assert float(dem["Value"].replace(",", "")) == pytest.approx(
        float(da.values[0, 50, 60]), abs=0.01)
    lulc = table[table["Layer"] == "Land cover (generated) · [G] LULC"].iloc[0]
    assert lulc["Value"] not in ("", "no data")
    assert "[G] LULC probability" in set(table["Layer"])
    # Only visible layers are listed, and the point is marked on the map.
    assert not any("NDVI" in name for name in table["Layer"])
    assert "L.circleMarker([" in _group(at) and f"{lat}" in _group(at)


def _lonlat_of_pixel(da: Any, row: int, col: int) -> tuple[float, float]:
    from pyproj import Transformer

    x, y = float(da.x.values[col]), float(da.y.values[row])
    lon, lat = Transformer.from_crs(da.rio.crs, 4326, always_xy=True).transform(x, y)
    return lon, lat


def test_statistics_lulc_class_areas_and_histogram(app_run: Any, sample_layers: Any) -> None:
    at = _open(app_run.id)
    at.selectbox(key=W.STATS_LAYER).select("[G] LULC").run()
    assert not at.exception
    table = at.dataframe[0].value
    lulc = sample_layers.layers["LULC"].values[0]
    water_px = int((lulc == 1).sum())
    water = table[table["Class"] == "Water"].iloc[0]
    assert water["Area km²"] == pytest.approx(water_px * 1e-4, abs=1e-4)  # 10 m pixels
    assert table["% of AOI"].sum() == pytest.approx(100.0, abs=0.1)
    charts = at.get("vega_lite_chart")
    assert charts, "class areas get a bar chart"
    at.selectbox(key=W.STATS_LAYER).select("[G] S1GRD-VV").run()
    assert not at.exception
    [chart] = at.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["encoding"]["x"]["type"] == "quantitative"  # bins at their dB values


def test_downloads_are_offered_per_layer_and_for_the_run(app_run: Any) -> None:
    at = _open(app_run.id)
    labels = {b.proto.label for b in at.get("download_button")}
    for name in app_run.item.assets:
        assert f"GeoTIFF: {source_label(name, app_run.load_layer(name))}" in labels
    assert "GeoTIFF: Land cover (generated) · LULC" in labels
    assert "GeoTIFF: Sentinel-2 surface reflectance (input) · input" in labels
    assert any(label.startswith("Whole run") for label in labels)
    assert "PNG snapshot" in labels
    assert "PDF report of the run" in labels


def test_map_png_and_pdf_report_are_offered_side_by_side(app_run: Any) -> None:
    at = _open(app_run.id)
    [width] = [s for s in at.selectbox if s.key == W.SNAPSHOT_WIDTH]
    assert list(width.options) == [str(w) for w in EXPORT_WIDTHS] and width.value == 1200
    [layer] = [s for s in at.selectbox if s.key == W.SNAPSHOT_LAYER]
    # Every layer can be exported (a toggle reruns only the map, so the list cannot follow
    # what is visible); it starts at the top visible one.
    assert layer.label == "Map (PNG) and report of"
    assert len(layer.options) == len(at.session_state["layer_order"])
    visible = at.session_state["layer_visible"]
    top_visible = [n for n in at.session_state["layer_order"] if visible.get(n)][-1]
    assert layer.value == top_visible
    width.set_value(2400).run()
    assert not at.exception
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"PNG snapshot", "PDF report of the run"} <= labels


def test_compare_two_layers(app_run: Any) -> None:
    at = _open(app_run.id)
    at.checkbox(key=W.layer("visible", "[G] NDVI")).check().run()
    at.toggle(key=W.COMPARE).set_value(True).run()
    # The comparison starts with the two visible layers (the upper one on the right).
    order = at.session_state["layer_order"]
    upper, lower = sorted([newest_output(display_layers_for(app_run.load_layers())), "[G] NDVI"],
                          key=order.index, reverse=True)
    assert at.selectbox(key=W.COMPARE_LEFT).value == lower
    assert at.selectbox(key=W.COMPARE_RIGHT).value == upper
    at.selectbox(key=W.COMPARE_LEFT).select("Input true colour")
    at.selectbox(key=W.COMPARE_RIGHT).select("[G] S1GRD-VV").run()
    assert not at.exception and not at.error
    group = _group(at)
    assert 'L.control.sideBySide(rasters["Input true colour"],' in group
    assert 'rasters["[G] S1GRD-VV"])' in group
    assert "leaflet-side-by-side.js" in json.dumps(map_args(at)[0]["js_links"])


def test_added_geotiff_is_styled_like_run_layers(app_run: Any, sample_layers: Any) -> None:
    dem = sample_layers.layers["DEM"].copy()
    dem.attrs = {"units": "m"}  # a foreign file: no TerraLens attrs
    data = layer_to_cog_bytes(dem)
    from app.rasters import read_layer

    prepared = added_layers.prepare_added(read_layer(data), "my_dem.tif")
    assert prepared.attrs["modality"] == "DEM"
    source = added_layers.added_source_name("my_dem.tif", data)
    at = page_test(PAGE)
    at.session_state["run_id"] = app_run.id
    at.session_state["added_layers"] = {source: prepared}
    at.run()
    assert not at.exception and not at.error
    added = [c.label for c in at.checkbox if "my_dem.tif" in c.label]
    assert added == ["Elevation · my_dem.tif (input) · Input DEM · my_dem.tif"]
    legends = "".join(h.proto.body for h in at.get("html"))
    assert "DEM (m)" in legends
    # An added layer is not in the run store: the app holds a copy and serves it as tiles too,
    # on top, under a token (no file path, no inlined image in the map).
    assert image_overlay_count(_group(at)) == 0
    urls = tile_layer_urls(_group(at))
    assert len(urls) == 2 and "/tiles/held/" in urls[-1] and "/tiles/held/" not in urls[0]
    assert ".tif" not in urls[-1] and "data:image" not in _group(at)
    assert np.isfinite(prepared.values).any()
    service = TileService(app_run.path.parent, held=held_rasters())
    client = TestClient(Starlette(routes=tile_routes(lambda: service)))
    w, s, e, n = AOI(app_run.request.aoi).bbox
    tile = next(iter(morecantile.tms.get("WebMercatorQuad").tiles(w, s, e, n, zooms=[16])))
    url = urls[-1].replace("\\u0026", "&")  # as the browser reads the JSON string
    response = client.get(url.format(z=tile.z, x=tile.x, y=tile.y))
    assert response.status_code == 200, (urls[-1], response.text)
    assert response.headers["content-type"] == "image/png"


def test_the_view_is_kept_across_reruns_and_on_coming_back(app_run: Any) -> None:
    """The map reports its view; a mounted map is not pulled back to it on a rerun, a map
    mounted anew (the page left and entered again) is given it."""
    at = _open(app_run.id)
    [args] = map_args(at)
    assert args["center"] is None and args["zoom"] is None  # first visit: fitted to the AOI
    assert {"center", "zoom"} <= set(args["returned_objects"])
    at.session_state[W.LAYERS_MAP] = {"center": {"lat": 45.011, "lng": 15.021}, "zoom": 17,
                                      "last_clicked": None}
    at.run()
    assert map_args(at)[0]["center"] is None  # the mounted map already shows it
    assert at.session_state["map_views"]["layers"] == (app_run.id, 45.011, 15.021, 17)
    at.session_state["page_before"], at.session_state["page_now"] = "runs", "layers"
    at.run()  # as the entry point records a page entered from the Runs page
    [args] = map_args(at)
    assert args["center"] == [45.011, 15.021] and args["zoom"] == 17
    at.session_state["page_before"] = "layers"
    at.session_state[W.LAYERS_MAP] = {"center": {"lat": 45.012, "lng": 15.022}, "zoom": 18,
                                      "last_clicked": None}
    at.run()
    assert map_args(at)[0]["center"] == [45.011, 15.021]  # unchanged: no pull back


def test_water_polygons_download_matches_the_mask(app_run: Any, sample_layers: Any,
                                                  tmp_path: Path) -> None:
    import io

    import geopandas as gpd

    at = _open(app_run.id)
    labels = {b.proto.label for b in at.get("download_button")}
    water_label = source_label("WATER", app_run.load_layer("WATER"))
    assert f"Polygons (GeoJSON): {water_label}" in labels
    assert f"Polygons (GeoPackage): {water_label}" in labels
    assert not any(label.endswith(": LULC") and "Polygons" in label for label in labels)
    water = sample_layers.layers["WATER"]
    frame = gpd.read_file(io.BytesIO(polygons_bytes(water, "geojson")))
    assert frame.crs.to_epsg() == 4326
    mask_km2 = int((water.values == 1).sum()) * 1e-4  # 10 m pixels
    assert frame["area_km2"].sum() == pytest.approx(mask_km2, rel=1e-6)
    (tmp_path / "water.gpkg").write_bytes(polygons_bytes(water, "gpkg"))
    gpkg = gpd.read_file(tmp_path / "water.gpkg")
    assert len(gpkg) == len(frame)


def test_a_cog_url_is_added_for_the_run_area(app_run: Any, sample_layers: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.stac_api import local_http_server

    monkeypatch.setenv("TERRALENS_ALLOW_PRIVATE_URLS", "1")  # the server is on 127.0.0.1

    ndvi = sample_layers.layers["NDVI"].copy()
    ndvi.attrs = {"units": ""}  # a foreign file: no TerraLens attrs
    payload = layer_to_cog_bytes(ndvi)

    def serve(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        if path == "/data/ndvi_2022.tif":
            return 200, "image/tiff", payload
        return 404, "text/plain", b"not found"

    with local_http_server(serve) as base:
        at = _open(app_run.id)
        at.text_input(key=W.ADD_URL).input(f"{base}/data/ndvi_2022.tif").run()
        at.button(key=W.ADD_URL_BUTTON).click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any(c.label.endswith(markdown_text("Input NDVI · ndvi_2022.tif"))
                   for c in at.checkbox)
        [added] = at.session_state["added_layers"].values()
        np.testing.assert_allclose(added.values, ndvi.values, equal_nan=True)
        assert added.rio.crs == ndvi.rio.crs

        at.text_input(key=W.ADD_URL).input(f"{base}/missing.tif").run()
        at.button(key=W.ADD_URL_BUTTON).click().run()
        assert any("missing.tif" in e.value and "check the URL" in e.value for e in at.error)


def test_a_loopback_cog_url_is_refused_by_default(app_run: Any, sample_layers: Any) -> None:
    from tests.fixtures.stac_api import local_http_server

    payload = layer_to_cog_bytes(sample_layers.layers["NDVI"])
    served: list[str] = []

    def serve(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        served.append(path)
        return 200, "image/tiff", payload

    with local_http_server(serve) as base:
        at = _open(app_run.id)
        at.text_input(key=W.ADD_URL).input(f"{base}/data/ndvi.tif").run()
        at.button(key=W.ADD_URL_BUTTON).click().run()
        assert not at.exception
        assert any("private, loopback" in e.value and "TERRALENS_ALLOW_PRIVATE_URLS" in e.value
                   for e in at.error)
        assert served == []  # nothing was even asked of the internal server
        assert "added_layers" not in at.session_state or not at.session_state["added_layers"]


@pytest.mark.integration
def test_a_catalog_scene_is_added_over_the_run(
    app_run: Any, stac_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    at = _open(app_run.id)
    at.selectbox(key=W.ADD_COLLECTION).select("sentinel-1-rtc")
    at.button(key=W.ADD_FIND).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    s1_id = "S1A_IW_GRDH_20220616_A_rtc"
    assert at.selectbox(key=W.ADD_SCENE).options == [s1_id]
    at.button(key=W.ADD_SCENE_BUTTON).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    labels = [c.label for c in at.checkbox]
    assert any(label.endswith(markdown_text(f"Input S1RTC-VV · {s1_id}")) for label in labels)
    assert any(label.endswith(markdown_text(f"Input S1RTC-VH · {s1_id}")) for label in labels)
    [added] = at.session_state["added_layers"].values()
    assert added.attrs["units"] == "dB" and added.attrs["synthetic"] is False
    assert -40 < float(np.nanmedian(added.values)) < 10
    # It is in the pixel inspector with the run's layers.
    lon, lat = _lonlat_of_pixel(app_run.load_layer("DEM"), row=50, col=60)
    at.session_state["inspect_point"] = (lat, lon)
    at.run()
    table = at.dataframe[0].value
    row = table[table["Layer"].str.endswith(f"Input S1RTC-VV · {s1_id}")]
    assert len(row) == 1 and row.iloc[0]["Units"] == "dB" and row.iloc[0]["Value"] != "no data"


def test_a_run_with_damaged_files_is_a_clear_error(app_run: Any, app_env: Path) -> None:
    """A half-copied run folder (its COGs truncated) gives a TerraLens message naming the run,
    not an uncaught exception."""
    import shutil

    broken = app_env / "runs" / "damaged-copy"
    shutil.copytree(app_run.path, broken)
    for tif in broken.rglob("*.tif"):
        data = tif.read_bytes()
        tif.write_bytes(data[: len(data) // 3])
    at = _open("damaged-copy", via_url=True)
    assert not at.exception, at.exception
    errors = " ".join(e.value for e in at.error)
    assert "damaged-copy" in errors and "damaged" in errors.lower()


def test_an_ensemble_runs_u_layers_are_listed_with_legends_in_units(app_env: Path) -> None:
    from app.aoi import AOI
    from app.run_request import RunRequest
    from app.runs import RunStore
    from inference.generate import GenerationTask, generate
    from inference.modalities import Modality
    from tests.fixtures.ensembles import deterministic_model
    from tests.fixtures.models import s2_window

    s2 = s2_window(80, 70, seed=6)
    outputs = ("S1GRD", "LULC", "DEM")
    model, _ = deterministic_model(tuple(Modality(o) for o in outputs))
    layers = generate(model, s2, GenerationTask(outputs=outputs, chip=64, ensemble=3))
    request = RunRequest(scene_id="S2_X", aoi=AOI.from_bbox(15.0, 45.0, 15.01, 45.01),
                         task="generation", params={"seed": 0, "seeds": 3},
                         model="terramind_v1_tiny_generate", weights="untrained")
    run = RunStore(app_env / "runs").save(request, layers, provenance={"seeds": 3})
    at = _open(run.id)
    assert not at.exception and not at.error
    labels = _labels(run)
    assert labels["[U] LULC agreement"] == (
        "Land cover seed agreement (ensemble spread) · [U] LULC agreement")
    assert labels["[U] DEM std"] == "Elevation standard deviation (ensemble spread) · [U] DEM std"
    assert {c.label for c in at.checkbox} >= {markdown_text(labels[n]) for n in labels
                                              if n.startswith("[U] ")}
    # The ensemble's [G] layer is what shows first, not its spread.
    assert newest_output(display_layers_for(run.load_layers())).startswith("[G] ")
    at.checkbox(key=W.layer("visible", "[U] DEM std")).check().run()
    assert not at.exception
    assert any("/u-dem-std/" in u for u in tile_layer_urls(_group(at)))
    legends = "".join(h.proto.body for h in at.get("html"))
    assert "DEM std (m)" in legends
    at.checkbox(key=W.layer("visible", "[U] LULC entropy")).check().run()
    legends = "".join(h.proto.body for h in at.get("html"))
    assert "LULC entropy (bit)" in legends
