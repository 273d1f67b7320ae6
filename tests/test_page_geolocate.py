"""AppTest of the Geolocate page (real untrained tiny model) and its offline results map."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.testclient import TestClient

from app.aoi import AOI
from app.geolocation import GeolocationOutcome, centre_lonlat
from app.held_tiles import HeldRasters, held_image_url, held_rasters
from app.job_store import JobState
from app.tiles import TileService, tile_routes
from app.ui import geolocate_view as view
from app.ui.state import W
from tests.fixtures.app_server import map_args, page_test
from tests.fixtures.jobs import wait_for_job
from tests.fixtures.models import s2_window

PAGE = "5_Geolocate.py"


def _lonlat_bounds(da: object) -> tuple[float, float, float, float]:
    from pyproj import Transformer

    w, s, e, n = da.rio.bounds()  # type: ignore[attr-defined]
    to_ll = Transformer.from_crs(da.rio.crs, 4326, always_xy=True)  # type: ignore[attr-defined]
    (lon0, lat0), (lon1, lat1) = to_ll.transform(w, s), to_ll.transform(e, n)
    return lon0, lat0, lon1, lat1


def test_scene_mode_without_a_scene_says_what_to_do(app_env: Path) -> None:
    at = page_test(PAGE).run()
    assert not at.exception
    assert any("No Sentinel-2 scene loaded" in e.value for e in at.error)
    assert at.button(key=W.GEO_RUN).disabled


def test_prompt_shares_must_add_up_to_100(app_env: Path) -> None:
    at = page_test(PAGE).run()
    at.radio(key=W.GEO_MODE).set_value("prompt").run()
    assert not at.error and not at.button(key=W.GEO_RUN).disabled  # 100% bare ground
    at.slider(key=W.lulc_fraction("Water")).set_value(40).run()
    assert any("add up to 140%" in e.value for e in at.error)
    assert at.button(key=W.GEO_RUN).disabled
    at.slider(key=W.lulc_fraction("Bare ground")).set_value(60).run()
    assert not at.error
    assert any("Total 100% · Water 40%, Bare ground 60%" in c.value for c in at.caption)


@pytest.mark.model
def test_sampling_from_the_scene_reports_counts_distances_and_downloads(app_env: Path) -> None:
    scene = s2_window(64, 64, seed=5)
    scene.attrs.update({"modality": "S2L2A", "scene_id": "S2A_GEO"})
    at = page_test(PAGE, timeout=300)
    at.session_state["scene"] = scene
    at.session_state["scene_items"] = ({"id": "S2A_GEO", "collection": "sentinel-2-l2a",
                                        "properties": {}},)
    at.session_state["scene_aoi"] = AOI.from_bbox(*_lonlat_bounds(scene)).to_json()
    at.run()
    at.number_input(key=W.GEO_SAMPLES).set_value(8).run()
    at.button(key=W.GEO_RUN).click().run()
    job = wait_for_job(at, app_env, key="geolocate_job_id")
    assert job.state is JobState.DONE, job.error
    assert not at.exception and not at.error, [e.value for e in at.error]
    outcome = GeolocationOutcome.from_json(job.result or "")
    result, stats, truth = outcome.result, outcome.summary, outcome.true_lonlat
    assert result.n == 8 and stats["valid"] + stats["invalid"] == 8
    assert result.params["model"] == "terramind_v1_tiny_generate"
    assert truth == pytest.approx(centre_lonlat(scene))
    table = at.dataframe[0].value
    assert table.iloc[0]["Value"] == "8"
    assert "True scene centre (lat, lon)" in list(table[""])
    if stats["invalid"]:  # untrained weights: most samples are not coordinates
        assert any("not plotted" in w.value for w in at.warning)
    labels = {b.proto.label for b in at.get("download_button")}
    assert labels == {"Samples (GeoJSON)", "Samples (CSV)"}
    # The density grid is loaded from the app's server (held under a token), not inlined.
    [args] = map_args(at)
    assert "data:image" not in args["script"]
    assert {"center", "zoom"} <= set(args["returned_objects"])
    if stats["valid"]:
        [url] = re.findall(r'"(/tiles/held/[A-Za-z0-9_-]{24}\.png)"', args["script"])
        service = TileService(app_env / "runs", held=held_rasters())
        client = TestClient(Starlette(routes=tile_routes(lambda: service)))
        response = client.get(url)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (180, 180)
        assert client.get(f"/tiles/held/{'A' * 24}.png").status_code == 404


def test_density_grid_lines_up_with_web_mercator() -> None:
    samples = np.array([[15.0, 45.0]] * 5 + [[-100.0, -30.0]])
    png, bounds = view.density_png(samples, columns=180)
    assert bounds == ((-view.MERCATOR_LAT, -180.0), (view.MERCATOR_LAT, 180.0))
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (180, 180, 4)

    def cell(lon: float, lat: float) -> tuple[int, int]:
        merc = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) / np.pi  # -1..1
        return int((1 - merc) / 2 * 180), int((lon + 180) / 360 * 180)

    r, c = cell(15.0, 45.0)
    assert image[r, c, 3] == 255  # the densest cell is opaque
    r2, c2 = cell(-100.0, -30.0)
    assert 0 < image[r2, c2, 3] < 255
    assert image[cell(100.0, 60.0)][3] == 0  # nothing there
    assert view.density_png(np.empty((0, 2))) is None


def test_results_map_loads_no_cdn_script() -> None:
    samples = np.array([[15.0, 45.0], [16.0, 44.0]])
    fmap = view.results_map(samples, (15.5, 44.5), static_url="/app/static")
    html = fmap.get_root().render()
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert scripts and all(src.startswith("/app/static/") for src in scripts), scripts
    assert "heat" not in html.lower()
    assert html.count("L.circleMarker(") == 2
    assert "L.imageOverlay(" in html
    # The layer control is written after every layer it lists (else the map script throws
    # in the browser and the map never shows).
    control = html.index("L.control.layers(")
    assert control > html.rindex("L.circleMarker(")
    assert control > html.index("L.imageOverlay(") and control > html.index("L.marker(")


def test_the_density_grid_is_served_not_inlined(tmp_path: Path) -> None:
    """With a holder, the map loads the density PNG from the app's server by token."""
    holder = HeldRasters(tmp_path / "held")
    samples = np.array([[15.0, 45.0], [16.0, 44.0]])
    fmap = view.results_map(samples, None, static_url="/app/static",
                            image_url=lambda png: held_image_url(png, holder=holder))
    html = fmap.get_root().render()
    assert "data:image" not in html
    [url] = re.findall(r'"(/tiles/held/[A-Za-z0-9_-]{24}\.png)"', html)
    client = TestClient(Starlette(routes=tile_routes(
        lambda: TileService(tmp_path / "runs", held=holder))))
    response = client.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    png, _ = view.density_png(samples)  # type: ignore[misc]
    assert response.content == png
    for bad in [f"/tiles/held/{'A' * 24}.png", "/tiles/held/..%2Fsecret.png",
                url[:-5] + ("B" if url[-5] == "A" else "A") + ".png"]:
        assert client.get(bad).status_code == 404, bad


def test_composition_and_geojson_carry_the_prompt() -> None:
    shares = {c.name: 0.0 for c in view.PROMPT_CLASSES} | {"Crops": 60.0, "Water": 40.0}
    assert view.composition(shares) == {4: 0.6, 1: 0.4}
    with pytest.raises(ValueError, match="add up to 90%"):
        view.composition(shares | {"Water": 30.0})
    json.dumps(view.composition(shares))
