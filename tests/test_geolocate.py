"""Monte-Carlo geolocation: parsing, distances, prompts, exports, and real sampling runs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.errors import InvalidRequestError, RunCancelledError
from inference.geolocate import sample_locations
from inference.geolocate_conditions import lulc_prompt, prepare_condition
from inference.geolocate_samples import (
    INVALID_NOT_FINITE,
    INVALID_OUT_OF_RANGE,
    INVALID_UNPARSABLE,
    GeolocationResult,
    parse_sample,
    parse_samples,
)
from inference.geolocate_summary import (
    haversine_km,
    spherical_centroid,
    summary,
    to_csv,
    to_geojson,
)
from inference.modalities import Modality
from tests.fixtures.models import s2_window

PARIS, LONDON = (2.3522, 48.8566), (-0.1276, 51.5072)
NEW_YORK, LOS_ANGELES = (-74.0060, 40.7128), (-118.2437, 34.0522)


def test_haversine_matches_known_city_distances() -> None:
    assert float(haversine_km(*PARIS, *LONDON)) == pytest.approx(343.6, abs=1.5)
    assert float(haversine_km(*NEW_YORK, *LOS_ANGELES)) == pytest.approx(3936, abs=10)
    assert float(haversine_km(0, 0, 180, 0)) == pytest.approx(np.pi * 6371.0088)
    assert float(haversine_km(*PARIS, *PARIS)) == 0.0
    d = haversine_km(np.array([PARIS[0], LONDON[0]]), np.array([PARIS[1], LONDON[1]]), *PARIS)
    assert d.shape == (2,) and d[0] == 0.0


def test_parser_accepts_only_valid_coordinates() -> None:
    assert parse_sample("lat=48.86 lon=2.35").lon == pytest.approx(2.35)
    assert parse_sample("  lat=-33.87  lon=151.21 ").lat == pytest.approx(-33.87)
    assert parse_sample([2.35, 48.86]).valid
    cases = {
        "lon=2.35 lat=48.86": INVALID_UNPARSABLE,  # swapped order
        "lat=48.86 lat=2.35": INVALID_UNPARSABLE,
        "lat=48.86": INVALID_UNPARSABLE,
        "": INVALID_UNPARSABLE,
        "[UNK] [EOS]": INVALID_UNPARSABLE,
        "lat=nan lon=2.35": INVALID_NOT_FINITE,
        "lat=91.00 lon=2.35": INVALID_OUT_OF_RANGE,
        "lat=0.00 lon=-180.25": INVALID_OUT_OF_RANGE,
    }
    for text, reason in cases.items():
        parsed = parse_sample(text)
        assert not parsed.valid and parsed.reason == reason, text
        assert parsed.lon is None and parsed.lat is None
    for raw, reason in {(float("nan"), float("nan")): INVALID_NOT_FINITE,
                        (200.0, 10.0): INVALID_OUT_OF_RANGE, ("a", "b"): INVALID_UNPARSABLE,
                        (1.0,): INVALID_UNPARSABLE}.items():
        assert parse_sample(list(raw)).reason == reason
    assert parse_sample(None).reason == INVALID_UNPARSABLE


def test_invalid_outputs_are_counted_never_returned() -> None:
    raw = ["lat=48.86 lon=2.35", "lat=95.00 lon=2.35", "garbage", [float("nan"), 1.0],
           [-0.13, 51.51], "lat=-90.00 lon=180.00"]
    points, reasons = parse_samples(raw)
    np.testing.assert_allclose(points, [[2.35, 48.86], [-0.13, 51.51], [180.0, -90.0]])
    assert reasons == {INVALID_OUT_OF_RANGE: 1, INVALID_UNPARSABLE: 1, INVALID_NOT_FINITE: 1}
    empty, none = parse_samples([])
    assert empty.shape == (0, 2) and none == {}


def _result(points: list[tuple[float, float]], invalid: int = 0) -> GeolocationResult:
    return GeolocationResult(
        samples=np.asarray(points, dtype=np.float64).reshape(-1, 2), invalid=invalid,
        params={"n": len(points) + invalid, "temperature": 1.0, "seed": np.int64(3)},
        invalid_reasons={INVALID_UNPARSABLE: invalid} if invalid else {},
    )


def test_summary_distances_and_shares() -> None:
    result = _result([PARIS, LONDON, NEW_YORK, (2.5, 48.9)], invalid=2)
    s = summary(result, true_lonlat=PARIS)
    assert (s["n"], s["valid"], s["invalid"]) == (6, 4, 2)
    assert s["nearest_km"] == 0.0
    assert s["share_within_km"] == {"100": 0.5, "500": 0.75, "2500": 0.75}
    d_london = float(haversine_km(*PARIS, *LONDON))
    d_near = float(haversine_km(*PARIS, 2.5, 48.9))
    assert s["median_km"] == pytest.approx((d_near + d_london) / 2)
    lon, lat = s["centroid_lonlat"]
    assert -40 < lon < 5 and 45 < lat < 60
    assert summary(_result([], invalid=3), true_lonlat=PARIS)["median_km"] is None
    assert summary(_result([]))["centroid_lonlat"] is None
    with pytest.raises(InvalidRequestError, match="true_lonlat"):
        summary(result, true_lonlat=(2.0, 99.0))
    lon, lat = spherical_centroid(np.array([[179.0, 0.0], [-179.0, 0.0]]))
    assert abs(lon) == pytest.approx(180.0) and lat == pytest.approx(0.0)  # across the dateline


def test_geojson_and_csv_exports() -> None:
    result = _result([PARIS, LONDON], invalid=1)
    collection = json.loads(json.dumps(to_geojson(result)))  # plain JSON all the way down
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 2
    assert collection["features"][1]["geometry"] == {"type": "Point",
                                                     "coordinates": list(LONDON)}
    assert collection["properties"]["invalid"] == 1 and collection["properties"]["seed"] == 3
    rows = list(csv.DictReader(io.StringIO(to_csv(result))))
    assert [(float(r["lon"]), float(r["lat"])) for r in rows] == [PARIS, LONDON]


def test_lulc_prompt_has_the_asked_composition() -> None:
    prompt = lulc_prompt({4: 0.6, 1: 0.4}, seed=1)
    assert prompt.shape == (224, 224) and prompt.dtype == np.uint8
    shares = {c: float((prompt == c).mean()) for c in (1, 4)}
    assert shares[4] == pytest.approx(0.6, abs=1 / 196)  # exact to one 16 px block
    assert shares[1] == pytest.approx(0.4, abs=1 / 196)
    assert set(np.unique(prompt)) == {1, 4}
    assert (lulc_prompt({6: 1.0}) == 6).all()
    np.testing.assert_array_equal(prompt, lulc_prompt({4: 3, 1: 2}, seed=1))  # normalised
    assert not np.array_equal(prompt, lulc_prompt({4: 0.6, 1: 0.4}, seed=2))
    # Patches: far fewer class changes between neighbouring blocks than a random shuffle.
    blocks = prompt[::16, ::16]
    changes = (blocks[:, 1:] != blocks[:, :-1]).sum() + (blocks[1:] != blocks[:-1]).sum()
    assert changes < 0.25 * 2 * 14 * 13
    for bad in ({}, {10: 1.0}, {1: -0.5}, {1: 0.0}):
        with pytest.raises(InvalidRequestError):
            lulc_prompt(bad)


def test_conditions_become_one_chip() -> None:
    mod, chip, info = prepare_condition(lulc_prompt({2: 0.5, 9: 0.5}))
    assert mod is Modality.LULC and chip.shape == (1, 10, 224, 224)
    assert (chip.sum(axis=1) == 1).all()
    assert json.loads(info["condition_classes"]) == {"Trees": 0.5, "Rangeland": 0.5}
    mod, chip, info = prepare_condition(s2_window(300, 240, seed=1))
    assert mod is Modality.S2L2A and chip.shape == (1, 12, 224, 224)
    assert info["condition_window"] == "centre 224x224 of 300x240"
    lon, lat = info["condition_centre_lonlat"]
    assert 14.9 < lon < 15.2 and 44.9 < lat < 45.1
    _, small, info = prepare_condition(s2_window(100, 120, seed=1))
    assert small.shape == (1, 12, 224, 224) and "resized" in info["condition_window"]
    with pytest.raises(InvalidRequestError, match=r"0\.\.9"):
        prepare_condition(np.full((10, 10), 12))
    with pytest.raises(InvalidRequestError, match="DataArray or a LULC"):
        prepare_condition("Paris")


# --------------------------------------------------------------------------------------------
# Real sampling (tiny TerraMind, random weights)


def _coordinate_vocabulary() -> Any:
    """A tokenizer file's worth of coordinate tokens (``lat=…``, ``lon=…``), built offline.

    TerraMind's real vocabulary comes from the hub; untrained models get a blank one that
    decodes nothing. This stand-in spells coordinates as terratorch's encoder writes them and
    fills most of the 30,000 ids, so random weights yield a mix of valid and invalid samples
    and the whole decode → parse path runs.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"[PAD]": 0, "[UNK]": 1, "[SOS]": 2, "[EOS]": 3, "[S_0]": 4, "[S_1]": 5, "[S_2]": 6}
    for i in range(18001):
        vocab[f"lat={-90 + i * 0.01:.2f}"] = len(vocab)
    for i in range(9001):
        vocab[f"lon={-180 + i * 0.04:.2f}"] = len(vocab)
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    return tokenizer


@pytest.fixture(scope="module")
def geo_model() -> Iterator[Any]:
    """Tiny TerraMind (S2L2A or LULC → coords), random weights, coordinate vocabulary."""
    import torch

    from inference.geolocate import load_geolocation_model

    torch.manual_seed(7)
    model = load_geolocation_model("tiny", weights="untrained", device="cpu")
    blank = model.module.tokenizer["coords"].text_tokenizer
    model.module.tokenizer["coords"].text_tokenizer = _coordinate_vocabulary()
    model.blank_vocabulary = blank
    yield model
    model.unload()


@pytest.mark.model
def test_sampling_counts_seeds_and_temperature(geo_model: Any) -> None:
    s2 = s2_window(240, 230, seed=2)
    calls: list[tuple[int, int]] = []
    first = sample_locations(geo_model, s2, n=16, seed=5, batch_size=8,
                             progress=lambda d, t: calls.append((d, t)))
    assert calls == [(8, 16), (16, 16)]
    assert first.n == 16 and len(first.samples) + first.invalid == 16 and len(first.raw) == 16
    assert sum(first.invalid_reasons.values()) == first.invalid
    assert 0 < len(first.samples) < 16  # random weights: some valid, some not
    assert first.params["condition"] == "S2L2A" and first.params["untrained"] is True
    again = sample_locations(geo_model, s2, n=16, seed=5, batch_size=8)
    assert again.raw == first.raw
    np.testing.assert_array_equal(again.samples, first.samples)
    colder = sample_locations(geo_model, s2, n=16, seed=5, batch_size=8, temperature=0.1)
    assert colder.raw != first.raw and colder.params["temperature"] == 0.1
    other_seed = sample_locations(geo_model, s2, n=16, seed=6, batch_size=8)
    assert other_seed.raw != first.raw
    collection = to_geojson(first)
    assert len(collection["features"]) == len(first.samples)
    for feature in collection["features"]:
        assert feature["geometry"]["type"] == "Point"
        lon, lat = feature["geometry"]["coordinates"]
        assert -180 <= lon <= 180 and -90 <= lat <= 90
    s = summary(first, true_lonlat=first.params["condition_centre_lonlat"])
    assert s["valid"] == len(first.samples) and s["median_km"] > 0


@pytest.mark.model
def test_land_cover_prompt_condition_and_cancel(geo_model: Any) -> None:
    result = sample_locations(geo_model, lulc_prompt({6: 1.0}), n=4, batch_size=4, seed=1)
    assert result.n == 4 and result.params["condition"] == "LULC"
    assert json.loads(result.params["condition_classes"]) == {"Bare ground": 1.0}
    with pytest.raises(RunCancelledError, match="0 of 4"):
        sample_locations(geo_model, lulc_prompt({6: 1.0}), n=4, cancel=lambda: True)
    with pytest.raises(InvalidRequestError, match="temperature"):
        sample_locations(geo_model, lulc_prompt({6: 1.0}), temperature=0)
    with pytest.raises(InvalidRequestError, match="n must"):
        sample_locations(geo_model, lulc_prompt({6: 1.0}), n=0)


@pytest.mark.model
def test_untrained_vocabulary_gives_only_invalid_samples(geo_model: Any) -> None:
    tok = geo_model.module.tokenizer["coords"]
    real, tok.text_tokenizer = tok.text_tokenizer, geo_model.blank_vocabulary
    try:
        result = sample_locations(geo_model, s2_window(224, 224, seed=4), n=4, batch_size=4)
    finally:
        tok.text_tokenizer = real
    assert result.samples.shape == (0, 2) and result.invalid == 4
    assert result.invalid_reasons == {INVALID_UNPARSABLE: 4}
    assert to_geojson(result)["features"] == [] and to_csv(result) == "sample,lon,lat\n"


def test_cli_geolocate_from_a_land_cover_prompt_writes_its_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    monkeypatch.setenv("TERRALENS_WEIGHTS", "untrained")
    monkeypatch.setenv("TERRALENS_DEVICE", "cpu")
    code = main(["geolocate", "--lulc", "bare ground=1", "--samples", "4", "--model", "tiny",
                 "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    geojson = json.loads((tmp_path / "geolocation.geojson").read_text())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert geojson["type"] == "FeatureCollection"
    # Untrained weights decode no coordinates: every sample is counted as invalid, none plotted.
    assert len(geojson["features"]) + summary["invalid"] == 4
    assert (tmp_path / "geolocation.csv").read_text().startswith("sample,lon,lat")


def test_cli_geolocate_bad_prompt_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    assert main(["geolocate", "--lulc", "lava=1", "--out", "x"]) == 2
    assert "'lava=1'" in capsys.readouterr().err
