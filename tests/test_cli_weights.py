"""``terralens weights``: the file list the Docker build downloads, and offline failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main


def test_list_names_the_model_and_only_the_requested_tokenizers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["weights", "list", "--spec", "tiny:LULC,S1GRD"]) == 0
    lines = capsys.readouterr().out.split()
    assert "ibm-esa-geospatial/TerraMind-1.0-tiny/TerraMind_v1_tiny.pt" in lines
    assert any("Tokenizer-LULC" in line for line in lines)
    assert any("Tokenizer-S1GRD" in line for line in lines)
    assert not any("Tokenizer-DEM" in line or "Tokenizer-NDVI" in line for line in lines)


def test_download_offline_says_how_to_provide_weights(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["weights", "download", "--spec", "tiny:LULC"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("terralens: error: TerraMind weights not found")
    assert "TERRALENS_WEIGHTS" in err and "Traceback" not in err


def test_download_from_a_local_folder_lacking_files_lists_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["weights", "download", "--spec", "tiny:NDVI", "--weights", str(tmp_path)]) == 1
    assert "TerraMind_v1_tiny.pt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "named"),
    [("base", "'base'"), ("huge:LULC", "'huge'"), ("base:CLOUDS", "'CLOUDS'"),
     ("tiny:", "'tiny:'")],
)
def test_bad_spec_is_a_usage_error_naming_the_bad_value(
    capsys: pytest.CaptureFixture[str], spec: str, named: str
) -> None:
    assert main(["weights", "list", "--spec", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith("terralens: error:") and named in err
