"""The command line's top-level guard: one line and exit 1 (or 2) for anything, never a
traceback unless ``--debug``; ``--version`` and ``-v``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import app.cli
from app.cli import main
from tests.fixtures.stac_api import local_http_server
from tests.fixtures.stalls import silent_server
from tests.test_catalog import _landing

SEARCH = ["--start", "2022-06-01", "--end", "2022-06-30"]
BBOX = "15.0,45.0,15.01,45.01"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TERRALENS_STAC_URL", "TERRALENS_MAX_AOI_KM2", "TERRALENS_STAC_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("terralens: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("text", "fragment"), [
    ('{"type": "Polygon", "coordinates": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested"),
    ('{"type":"GeometryCollection","geometries":[' * 2_000 + "]}" * 2_000, "nested"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [' + "9" * 5000 + ", 0], [1, 1], [0, 0]]]}",
     "not a coordinate"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [' + "9" * 400 + ", 0], [1, 1], [0, 0]]]}",
     "cannot be read"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1e999, 0], [1, 1], [0, 0]]]}',
     "lon/lat range"),
])
def test_hostile_geojson_gives_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        text: str, fragment: str) -> None:
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(text, encoding="utf-8")
    code = main(["search", "--aoi", str(aoi), *SEARCH, "--stac-url", "http://127.0.0.1:9/x"])
    assert code == 2
    assert fragment in one_error_line(capsys.readouterr().err)


def _catalog(features: list[Any], state: dict[str, str]) -> Any:
    def handler(method: str, path: str, query: str, body: bytes) -> tuple[int, str, bytes]:
        if path == "/stac":
            return 200, "application/json", json.dumps(_landing(state["base"])).encode()
        if path == "/stac/search":
            answer = {"type": "FeatureCollection", "features": features, "links": []}
            return 200, "application/geo+json", json.dumps(answer).encode()
        return 404, "text/plain", b"not found"
    return handler


def test_a_catalog_feature_that_is_not_an_object_is_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    state: dict[str, str] = {}
    with local_http_server(_catalog(["not an object", 42, None], state)) as base:
        state["base"] = f"{base}/stac"
        code = main(["search", "--bbox", BBOX, *SEARCH, "--stac-url", state["base"]])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in err
    assert "skipped 3 malformed item(s)" in err and "No sentinel-2-l2a scenes" in out


def test_an_unknown_epsg_gives_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRALENS_DATA_DIR", str(tmp_path / "data"))  # the job store
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2X_bad_epsg",
        "collection": "sentinel-2-l2a", "links": [],
        "geometry": {"type": "Polygon", "coordinates": [[[14.9, 44.9], [15.1, 44.9],
                                                         [15.1, 45.1], [14.9, 45.1],
                                                         [14.9, 44.9]]]},
        "bbox": [14.9, 44.9, 15.1, 45.1],
        "properties": {"datetime": "2022-06-15T10:00:31Z", "proj:epsg": 999999},
        "assets": {"B04": {"href": "/nonexistent/B04.tif"}},
    }
    state: dict[str, str] = {}
    with local_http_server(_catalog([item], state)) as base:
        state["base"] = f"{base}/stac"
        code = main(["geolocate", "--item", "S2X_bad_epsg", "--bbox", BBOX,
                     "--stac-url", state["base"], "--out", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    progress = [line for line in err.splitlines() if line.startswith("[")]  # "[0/1] reading…"
    assert "EPSG:999999" in one_error_line("\n".join(
        line for line in err.splitlines() if line not in progress))


def test_a_silent_catalog_ends_the_command_within_the_deadline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with silent_server() as base:
        code = main(["search", "--bbox", BBOX, *SEARCH, "--stac-url", f"{base}/stac",
                     "--timeout", "1"])
    assert code == 1
    assert "overall deadline" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-2"])
def test_a_timeout_that_is_not_finite_and_positive_is_refused(
    capsys: pytest.CaptureFixture[str], value: str,
) -> None:
    code = main(["search", "--bbox", BBOX, *SEARCH, "--timeout", value])
    assert code == 2
    assert "--timeout" in one_error_line(capsys.readouterr().err)


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("something nobody expected")


def test_an_unexpected_error_is_one_line_and_debug_shows_the_trace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(app.cli, "search_scenes", _boom)
    args = ["search", "--bbox", BBOX, *SEARCH]
    assert main(args) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "RuntimeError: something nobody expected" in line and "--debug" in line
    assert main([*args, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "_boom" in err
    assert err.strip().splitlines()[-1].startswith("terralens: error: unexpected RuntimeError")


def test_version_and_verbose(capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"terralens {app.cli.version()}"
    assert app.cli.version()[0].isdigit()
    monkeypatch.setattr(app.cli, "search_scenes", _boom)
    main(["-v", "search", "--bbox", BBOX, *SEARCH])
    assert logging.getLogger().level == logging.INFO
    main(["search", "-vv", "--bbox", BBOX, *SEARCH])
    assert logging.getLogger().level == logging.DEBUG
    main(["search", "--bbox", BBOX, *SEARCH])
    assert logging.getLogger().level == logging.WARNING
