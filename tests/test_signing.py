"""Planetary Computer signing: tokens from a local SAS endpoint, expiry, refusal, offline.

The SAS endpoint is a small HTTP server on 127.0.0.1 speaking Planetary Computer's token API
(``GET /{account}/{container}`` → ``{"msft:expiry": ..., "token": ...}``), selected with
``PC_SDK_SAS_URL`` exactly as a deployment would. Reads of ``*.blob.core.windows.net`` hrefs go
through ``GDAL_HTTP_PROXY`` to a local "blob store" that serves the generated COGs only to a
signature it accepts, so the 403 → re-sign path runs through GDAL and odc-stac for real.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from app.aoi import AOI
from app.scenes import load_scene
from app.settings import PLANETARY_COMPUTER_STAC_URL
from app.signing import HrefSigner, drop_sas_tokens, sign_item
from inference.errors import AssetAccessError
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat
from tests.fixtures.stac_api import closed_port_url, local_http_server

pytestmark = [
    # odc-geo 0.5 + shapely 2.2 / affine 3 (rasterio/affine#146) deprecations, upstream.
    pytest.mark.filterwarnings("ignore:The 'shapely.ops.transform:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
    # planetary-computer 1.0 uses a class-based pydantic Config
    # (microsoft/planetary-computer-sdk-for-python#68, fixed upstream by #67, unreleased).
    pytest.mark.filterwarnings("ignore:Support for class-based `config`:DeprecationWarning"),
]

PC = PLANETARY_COMPUTER_STAC_URL
ACCOUNT = "tlacct"
CONTAINER = "scenes"
BLOB = f"http://{ACCOUNT}.blob.core.windows.net/{CONTAINER}"


@dataclass
class SasStub:
    """Hands out tokens from ``signatures`` in turn (the last one repeats)."""

    signatures: list[str]
    expires_in_s: list[float] = field(default_factory=lambda: [3600.0])
    status: int = 200
    requests: list[str] = field(default_factory=list)

    def handler(self, method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        self.requests.append(path)
        if self.status != 200:
            return self.status, "application/json", b'{"message": "unavailable"}'
        n = len(self.requests) - 1
        sig = self.signatures[min(n, len(self.signatures) - 1)]
        ttl = self.expires_in_s[min(n, len(self.expires_in_s) - 1)]
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
        token = f"st=2024-01-01T00%3A00%3A00Z&se=x&sp=rl&sv=2021-06-08&sr=c&sig={sig}"
        answer = {"msft:expiry": expiry.isoformat().replace("+00:00", "Z"), "token": token}
        return 200, "application/json", json.dumps(answer).encode()


@pytest.fixture
def pc_tokens(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """planetary_computer's settings and token cache, fresh for each test."""
    from planetary_computer.settings import Settings

    Settings.get.cache_clear()
    drop_sas_tokens()
    monkeypatch.delenv("PC_SDK_SUBSCRIPTION_KEY", raising=False)
    yield
    Settings.get.cache_clear()
    drop_sas_tokens()


@pytest.fixture
def sas(pc_tokens: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[SasStub]:
    stub = SasStub(signatures=["good"])
    with local_http_server(stub.handler) as base:
        monkeypatch.setenv("PC_SDK_SAS_URL", f"{base}/api/sas/v1/token")
        yield stub


def _item() -> dict[str, Any]:
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": "x", "links": [], "properties": {},
        "geometry": None,
        "assets": {
            "B04": {"href": f"{BLOB}/S2/B04.tif"},
            "B03": {"href": f"{BLOB}/S2/B03.tif"},
            "other": {"href": "https://example.org/files/x.tif"},
            "local": {"href": "/data/x.tif"},
        },
    }


def test_blob_hrefs_get_the_token_and_others_do_not(sas: SasStub) -> None:
    item = _item()
    original = copy.deepcopy(item)
    signed = sign_item(item, PC)
    assert item == original  # not mutated
    for key in ("B04", "B03"):
        href = signed["assets"][key]["href"]
        assert href.startswith(original["assets"][key]["href"] + "?")
        assert parse_qs(urlparse(href).query)["sig"] == ["good"]
    assert signed["assets"]["other"]["href"] == "https://example.org/files/x.tif"
    assert signed["assets"]["local"]["href"] == "/data/x.tif"
    assert sas.requests == [f"/api/sas/v1/token/{ACCOUNT}/{CONTAINER}"]  # one token, cached


def test_other_catalogs_are_never_signed(sas: SasStub) -> None:
    signed = sign_item(_item(), "http://127.0.0.1:8081/api/stac/v1")
    assert signed == _item()
    assert HrefSigner("https://earth-search.aws.element84.com/v1")(f"{BLOB}/a.tif") == (
        f"{BLOB}/a.tif"
    )
    assert sas.requests == []


def test_a_token_that_arrives_expired_is_fetched_again(sas: SasStub) -> None:
    sas.signatures = ["old", "new"]
    sas.expires_in_s = [-60.0, 3600.0]
    signed = sign_item(_item(), PC)
    assert "sig=new" in signed["assets"]["B04"]["href"]
    assert len(sas.requests) == 2


def test_tokens_that_stay_expired_raise_asset_access_error(sas: SasStub) -> None:
    sas.expires_in_s = [-60.0]
    with pytest.raises(AssetAccessError, match="expired") as info:
        sign_item(_item(), PC)
    assert f"{ACCOUNT}/{CONTAINER}" in str(info.value)
    assert len(sas.requests) == 2  # re-signed once, not forever


def test_the_key_from_the_secret_file_reaches_the_token_request(
    pc_tokens: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.settings import load_settings

    secret = tmp_path / "pc_subscription_key"
    secret.write_text("key-from-the-file\n", encoding="utf-8")
    monkeypatch.setenv("PC_SDK_SUBSCRIPTION_KEY_FILE", str(secret))
    settings = load_settings()
    stub = SasStub(signatures=["keyed"])
    seen: list[dict[str, str]] = []

    def handler(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        if seen[-1].get("Ocp-Apim-Subscription-Key") != "key-from-the-file":
            return 401, "application/json", b'{"message": "subscription key required"}'
        return stub.handler(method, path, query, body)

    with local_http_server(handler, headers_seen=seen) as base:
        monkeypatch.setenv("PC_SDK_SAS_URL", f"{base}/api/sas/v1/token")
        signer = HrefSigner(PC, subscription_key=settings.pc_subscription_key)
        assert "sig=keyed" in signer(f"{BLOB}/S1/vv.tif")
        assert "key-from-the-file" not in repr(signer)
        drop_sas_tokens()
        signed = sign_item(_item(), PC, subscription_key=settings.pc_subscription_key)
        assert "sig=keyed" in signed["assets"]["B04"]["href"]
        drop_sas_tokens()
        with pytest.raises(AssetAccessError, match="SUBSCRIPTION_KEY") as info:
            sign_item(_item(), PC)  # no key: the endpoint refuses, the message says what to set
    assert "key-from-the-file" not in str(info.value)
    assert [h.get("Ocp-Apim-Subscription-Key") for h in seen] == [
        "key-from-the-file", "key-from-the-file", None]  # a 401 is not retried


def test_unreachable_sas_endpoint_fails_fast(pc_tokens: None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_port_url()
    monkeypatch.setenv("PC_SDK_SAS_URL", url)
    began = time.monotonic()
    with pytest.raises(AssetAccessError, match="SAS token") as info:
        sign_item(_item(), PC, timeout_s=2)
    assert time.monotonic() - began < 5
    assert url in str(info.value)


def test_failing_sas_endpoint_is_retried_a_bounded_number_of_times(sas: SasStub) -> None:
    sas.status = 503
    began = time.monotonic()
    with pytest.raises(AssetAccessError):
        sign_item(_item(), PC, retries=2)
    assert time.monotonic() - began < 5
    assert len(sas.requests) == 3  # first try + 2 retries


# -- reading: 403 on an expired signature -> re-sign once -----------------------------------------
class _BlobStore:
    """A local stand-in for Azure blob storage reached through GDAL_HTTP_PROXY."""

    def __init__(self, root: Path, accepted: set[str]):
        self.root = root
        self.accepted = accepted
        self.refused = 0
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                url = urlparse(self.path)
                sig = parse_qs(url.query).get("sig", [""])[0]
                if sig not in store.accepted:
                    store.refused += 1
                    payload = b"AuthenticationFailed: Signature not valid in the specified time"
                    self.send_response(403)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if body:
                        self.wfile.write(payload)
                    return
                path = store.root / Path(url.path).name
                data = path.read_bytes()
                rng = self.headers.get("Range")
                if rng:
                    start, end = (int(v) for v in rng.split("=", 1)[1].split("-"))
                    end = min(end, len(data) - 1)
                    chunk = data[start:end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    chunk = data
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if body:
                    self.wfile.write(chunk)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def proxy(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _BlobStore:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


AOI_A_UTM = (500_600.0, 4_983_600.0, 502_400.0, 4_985_400.0)
SCENE = "S2A_T33TWL_20220615_A"


def _blob_item(scene_set: SceneSet) -> dict[str, Any]:
    item = copy.deepcopy(scene_set.scenes[SCENE].item)
    for asset in item["assets"].values():
        asset["href"] = f"{BLOB}/{Path(asset['href']).name}"
    return item


def test_refused_read_re_signs_once_and_succeeds(
    sas: SasStub, s2_scene_set: SceneSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    sas.signatures = ["stale", "fresh"]  # the first token is no longer accepted by storage
    aoi = AOI.from_geojson(utm_box_to_lonlat(*AOI_A_UTM))
    with _BlobStore(s2_scene_set.root, accepted={"fresh"}) as store:
        monkeypatch.setenv("GDAL_HTTP_PROXY", store.proxy)
        da = load_scene([_blob_item(s2_scene_set)], aoi, stac_url=PC, timeout_s=5)
    assert store.refused >= 1
    assert len(sas.requests) == 2
    local = load_scene([s2_scene_set.scenes[SCENE].item], aoi, stac_url=PC)
    np.testing.assert_array_equal(da.values, local.values)
    assert da.attrs["offset_applied"] == 1000


def test_read_refused_after_re_signing_says_the_token_expired(
    sas: SasStub, s2_scene_set: SceneSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    sas.signatures = ["stale"]
    aoi = AOI.from_geojson(utm_box_to_lonlat(*AOI_A_UTM))
    with _BlobStore(s2_scene_set.root, accepted={"fresh"}) as store:
        monkeypatch.setenv("GDAL_HTTP_PROXY", store.proxy)
        with pytest.raises(AssetAccessError, match="even after re-signing") as info:
            load_scene([_blob_item(s2_scene_set)], aoi, stac_url=PC, timeout_s=5)
    assert "expired" in str(info.value)
    assert len(sas.requests) == 2


def test_offline_signing_during_a_read_fails_fast(
    pc_tokens: None, s2_scene_set: SceneSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PC_SDK_SAS_URL", closed_port_url())
    aoi = AOI.from_geojson(utm_box_to_lonlat(*AOI_A_UTM))
    began = time.monotonic()
    with pytest.raises(AssetAccessError, match="SAS token"):
        load_scene([_blob_item(s2_scene_set)], aoi, stac_url=PC, timeout_s=2)
    assert time.monotonic() - began < 10
