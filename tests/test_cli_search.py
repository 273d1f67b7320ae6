"""``terralens search`` as a user runs it: JSON/table output, exit codes, one-line errors."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from tests.fixtures.s2_scenes import S2_COLLECTION, SceneSet, utm_box_to_lonlat
from tests.fixtures.stac_api import closed_port_url

AOI_AB_UTM = (501_500.0, 4_983_500.0, 504_500.0, 4_985_500.0)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TERRALENS_STAC_URL", "TERRALENS_MAX_AOI_KM2", "TERRALENS_STAC_TIMEOUT",
                 "TERRALENS_MAX_SEARCH_KM2"):
        monkeypatch.delenv(name, raising=False)


def bbox_arg(bounds: tuple[float, float, float, float]) -> str:
    from shapely.geometry import shape

    w, s, e, n = shape(utm_box_to_lonlat(*bounds)).bounds
    return f"{w:.6f},{s:.6f},{e:.6f},{n:.6f}"


def truth(scene_set: SceneSet, tiles: set[str], max_cloud: float) -> list[str]:
    specs = [s.spec for s in scene_set.scenes.values()
             if s.spec.collection == S2_COLLECTION and s.spec.tile in tiles
             and s.spec.cloud_cover <= max_cloud]
    return [s.item_id for s in sorted(specs, key=lambda s: s.datetime)]


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("terralens: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.integration
def test_search_json_lists_scenes_sorted_by_date(
    stac_api_url: str, s2_scene_set: SceneSet, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["search", "--bbox", bbox_arg(AOI_AB_UTM), "--start", "2021-01-01",
                 "--end", "2023-12-31", "--max-cloud", "25", "--stac-url", stac_api_url,
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = json.loads(out)
    assert [r["id"] for r in records] == truth(s2_scene_set, {"A", "B"}, 25)
    times = [dt.datetime.fromisoformat(r["datetime"]) for r in records]
    assert times == sorted(times)
    for record in records:
        spec = s2_scene_set.scenes[record["id"]].spec
        assert record["collection"] == "sentinel-2-l2a"
        assert record["eo:cloud_cover"] == spec.cloud_cover
        assert 0 < record["aoi_coverage"] <= 100
        # the AOI straddles tiles A and B: each covers only part of it
        assert record["aoi_coverage"] < 100


@pytest.mark.integration
def test_search_table_is_readable(
    stac_api_url: str, s2_scene_set: SceneSet, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["search", "--bbox", bbox_arg(AOI_AB_UTM), "--start", "2022-06-01",
                 "--end", "2022-06-30", "--stac-url", stac_api_url])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["datetime", "(UTC)", "id"]
    assert "S2A_T33TWL_20220615_A" in out and "S2A_T33TXL_20220615_B" in out
    assert "2 scene(s)" in out


@pytest.mark.integration
def test_search_with_an_aoi_file_and_no_results(
    stac_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aoi_file = tmp_path / "aoi.geojson"
    aoi_file.write_text(json.dumps({"type": "Feature", "properties": {},
                                    "geometry": utm_box_to_lonlat(*AOI_AB_UTM)}))
    code = main(["search", "--aoi", str(aoi_file), "--start", "2019-01-01", "--end",
                 "2019-02-01", "--stac-url", stac_api_url])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.startswith("No sentinel-2-l2a scenes over the AOI between 2019-01-01")
    code = main(["search", "--aoi", str(aoi_file), "--start", "2019-01-01", "--end",
                 "2019-02-01", "--stac-url", stac_api_url, "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--bbox", "15,45,15.1"], "four numbers"),
        (["--bbox", "15,45,abc,45.1"], "'15,45,abc,45.1'"),
        (["--bbox", "179.9,-17,-179.9,-16.9"], "antimeridian"),
        (["--bbox", "10,40,12,42"], "more than the limit of 10,000.0 km²"),
        (["--bbox", "15,45,15.01,45.01", "--start", "2023-02-01", "--end", "2023-01-01"],
         "before start date"),
        (["--bbox", "15,45,15.01,45.01", "--start", "1/1/2023"], "'1/1/2023'"),
        (["--bbox", "15,45,15.01,45.01", "--max-cloud", "150"], "0..100, got 150"),
        (["--bbox", "15,45,15.01,45.01", "--limit", "0"], "got 0"),
        (["--bbox", "15,45,15.01,45.01", "--collection", "landsat"], "invalid choice"),
        (["--bbox", "15,45,15.01,45.01", "--max-cloud", "lots"], "invalid float value"),
        (["--aoi", "/nonexistent/aoi.geojson"], "cannot read the AOI file"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--start": "2023-01-01", "--end": "2023-01-31"}
    argv = ["search", *args]
    for option, value in base.items():
        if option not in args:
            argv += [option, value]
    argv += ["--stac-url", closed_port_url()]  # never reached for bad input
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert fragment in one_error_line(err)


def test_missing_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--start", "2023-01-01", "--end", "2023-01-31"]) == 2
    assert "--bbox" in one_error_line(capsys.readouterr().err)
    assert main([]) == 2
    one_error_line(capsys.readouterr().err)


def test_size_limit_comes_from_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TERRALENS_MAX_AOI_KM2", "1")
    monkeypatch.setenv("TERRALENS_MAX_SEARCH_KM2", "2")
    code = main(["search", "--bbox", "15,45,15.05,45.05", "--start", "2023-01-01",
                 "--end", "2023-01-31", "--stac-url", closed_port_url()])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "limit of 2.0 km²" in line and "TERRALENS_MAX_SEARCH_KM2" in line


def test_unreachable_catalog_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = closed_port_url()
    # Negative coordinates as a separate argument still parse as the bbox.
    code = main(["search", "--bbox", "-3.71,40.41,-3.70,40.42", "--start", "2023-01-01",
                 "--end", "2023-01-31", "--stac-url", url, "--timeout", "3"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert url in one_error_line(err)


def test_installed_command_prints_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "search", "--bbox", "15,45,15.01", "--start",
         "2023-01-01", "--end", "2023-01-31"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert "four numbers" in one_error_line(proc.stderr)
