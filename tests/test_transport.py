"""Time-outs that hold and the private-address guard, against misbehaving servers on 127.0.0.1.

Each stall test uses a 1 s per-request time-out (the trickle sends a byte every 0.5 s, so no
single read ever times out), so the operation's deadline is 3 s; the
``timeout`` marks only stop a regression from hanging the suite (before the fix a silent catalog
hung a search forever).
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import numpy as np
import pytest

import app.transport
from app.aoi import AOI
from app.catalog import SearchRequest, fetch_item, search_scenes
from app.rasters import layer_to_cog_bytes, read_layer_window
from app.signing import drop_sas_tokens, ensure_sas_token
from app.transport import BLOCKED_MESSAGE, is_public_address
from inference.errors import AssetAccessError, BlockedURLError, CatalogError
from tests.fixtures.stac_api import local_http_server
from tests.fixtures.stalls import redirect_server, silent_server, trickle_server

#: A byte every 0.5 s: each read returns well within the 1 s time-out, only a deadline helps.
STALLS = [pytest.param(silent_server, id="never-answers"),
          pytest.param(functools.partial(trickle_server, interval_s=0.5), id="trickle")]
BBOX = (15.0, 45.0, 15.01, 45.01)


def _request() -> SearchRequest:
    return SearchRequest(AOI.from_bbox(*BBOX), dt.date(2022, 6, 1), dt.date(2022, 6, 30))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", STALLS)
def test_a_stalling_catalog_fails_within_the_deadline(server: Any) -> None:
    with server() as base, pytest.raises(CatalogError, match=r"within 3 s \(the overall deadline"):
        search_scenes(_request(), stac_url=f"{base}/api/stac/v1", timeout_s=1.0)


@pytest.mark.timeout(60)
def test_fetching_an_item_from_a_silent_catalog_fails_within_the_deadline() -> None:
    with silent_server() as base, pytest.raises(CatalogError, match="overall deadline"):
        fetch_item("S2A_x", stac_url=f"{base}/api/stac/v1", timeout_s=1.0)


@pytest.fixture
def pc_settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    from planetary_computer.settings import Settings

    Settings.get.cache_clear()
    drop_sas_tokens()
    yield monkeypatch
    Settings.get.cache_clear()
    drop_sas_tokens()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", STALLS)
def test_a_stalling_sas_endpoint_fails_within_the_deadline(server: Any, pc_settings: Any) -> None:
    with server() as base:
        pc_settings.setenv("PC_SDK_SAS_URL", f"{base}/api/sas/v1/token")
        with pytest.raises(AssetAccessError, match="overall deadline"):
            ensure_sas_token("acct", "container", timeout_s=1.0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("server", STALLS)
def test_a_stalling_cog_url_fails_within_the_deadline(server: Any) -> None:
    with server() as base, pytest.raises(AssetAccessError, match="overall deadline"):
        read_layer_window(f"{base}/dem.tif", BBOX, timeout_s=1.0, allow_private=True)


def test_loopback_cog_urls_are_refused_without_the_operator_switch() -> None:
    asked: list[str] = []

    def serve(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        asked.append(path)
        return 404, "text/plain", b"no"

    with local_http_server(serve) as base:
        port = base.rsplit(":", 1)[1]
        for url in (f"{base}/x.tif", f"http://localhost:{port}/x.tif"):
            with pytest.raises(BlockedURLError) as info:
                read_layer_window(url, BBOX, timeout_s=1.0)
            assert str(info.value) == BLOCKED_MESSAGE
    assert asked == []  # refused after name resolution, before connecting


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """127.0.0.1 stands in for the internet: the first hop is allowed, redirects are not."""
    real = app.transport.is_public_address
    monkeypatch.setattr(app.transport, "is_public_address",
                        lambda address: address == "127.0.0.1" or real(address))


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.1.2.3/internal.tif",
    "http://127.0.0.2:8080/admin",
    "http://[::1]/x.tif",
])
def test_a_redirect_to_a_private_address_is_refused(loopback_is_public: None, target: str) -> None:
    with redirect_server(target) as base, pytest.raises(BlockedURLError) as info:
        read_layer_window(f"{base}/dem.tif", BBOX, timeout_s=1.0)
    assert str(info.value) == BLOCKED_MESSAGE  # the same words whatever lies behind


def test_a_redirect_is_followed_when_the_operator_allows_private_urls(sample_layers: Any
                                                                      ) -> None:
    ndvi = sample_layers.layers["NDVI"]
    payload = layer_to_cog_bytes(ndvi)

    def serve(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        return 200, "image/tiff", payload

    west, south, east, north = ndvi.rio.transform_bounds("EPSG:4326")
    with local_http_server(serve) as cog_base, redirect_server(f"{cog_base}/ndvi.tif") as base:
        da = read_layer_window(f"{base}/moved.tif", (west, south, east, north), timeout_s=2.0,
                               allow_private=True)
    np.testing.assert_allclose(da.values, ndvi.values, equal_nan=True)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.8", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "224.0.0.1", "not-an-ip",
])
def test_non_public_addresses_are_recognised(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.1", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", STALLS)
def test_scene_assets_on_a_stalling_server_fail_within_bounds(server: Any,
                                                               s2_scene_set: Any) -> None:
    import json

    from app.scenes import load_scene
    from tests.fixtures.s2_scenes import utm_box_to_lonlat

    item = json.loads(json.dumps(s2_scene_set.scenes["S2A_T33TWL_20220615_A"].item))
    aoi = AOI(utm_box_to_lonlat(500_600.0, 4_983_600.0, 502_400.0, 4_985_400.0))
    with server() as base:
        for key, asset in item["assets"].items():
            asset["href"] = f"{base}/scenes/{key}.tif"
        with pytest.raises(AssetAccessError, match=r"could not read scene|overall deadline"):
            load_scene([item], aoi, stac_url="http://127.0.0.1:9/api", timeout_s=1.0)
