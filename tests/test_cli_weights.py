"""``terralens weights``: the file list the Docker build downloads, and offline failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main
from inference.errors import InvalidRequestError
from inference.weights import hub_limits
from tests.fixtures.stalls import trickle_hub_server

REPO = Path(__file__).resolve().parents[1]


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


def _hub_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TERRALENS_"))}
    return env | {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"),
                  "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(REPO)} | extra


def _terralens(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = f"from app.cli import main; raise SystemExit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_hub_that_trickles_bytes_fails_at_the_deadline_with_one_line(tmp_path: Path) -> None:
    with trickle_hub_server(size=4096, interval_s=0.5) as hub:
        env = _hub_env(tmp_path, hub, TERRALENS_HUB_DEADLINE="3", TERRALENS_HUB_TIMEOUT="5")
        started = time.monotonic()
        done = _terralens(["weights", "download", "--spec", "tiny:LULC"], env)
        elapsed = time.monotonic() - started
    # Each read gets a byte every 0.5 s, so no per-request time-out ever fires: only the
    # overall deadline stops the download (the file alone would take 34 minutes).
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "did not finish within 3 s (TERRALENS_HUB_DEADLINE)" in done.stderr
    assert elapsed < 60


def test_a_hub_download_reports_its_bytes_and_lands_in_the_cache(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "from inference.weights import required_weight_files, resolve_weight_files\n"
        "seen = []\n"
        "files = required_weight_files('terramind_v1_tiny_generate', modalities=['S2L2A'],"
        " output_modalities=['LULC'])\n"
        "paths = resolve_weight_files(files, 'hub', on_bytes=lambda *a: seen.append(a))\n"
        "print(json.dumps({'paths': {k: str(p) for k, p in paths.items()}, 'seen': seen}))\n"
    )
    with trickle_hub_server(size=3000, interval_s=0.0) as hub:
        done = subprocess.run([sys.executable, "-c", code], env=_hub_env(tmp_path, hub),
                              cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["paths"]) == 2  # the model and the LULC tokenizer
    for path in out["paths"].values():
        assert Path(path).read_bytes() == b"\0" * 3000
        assert str(tmp_path / "hf") in path
    finals = {name: (n, total) for name, n, total in out["seen"]}
    assert set(finals) == {Path(p).name for p in out["paths"].values()}
    assert all(v == (3000, 3000) for v in finals.values())


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-5", "soon"])
def test_hub_limits_must_be_finite_positive_seconds(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("TERRALENS_HUB_DEADLINE", value)
    with pytest.raises(InvalidRequestError, match="TERRALENS_HUB_DEADLINE must be a finite"):
        hub_limits()
