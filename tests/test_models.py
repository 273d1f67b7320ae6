"""What a model is: sizes, output sets, requests refused before anything is built."""

from __future__ import annotations

import sys

import pytest

from inference.build import load_generation_model
from inference.errors import InvalidRequestError
from inference.modalities import Modality
from inference.models import ModelSize, normalise_outputs, parse_model_size


def test_package_import_is_light() -> None:
    import subprocess

    code = (
        "import sys, inference, inference.models, inference.build, inference.devices, "
        "inference.tiling, inference.generate, inference.executors; "
        "print('torch' in sys.modules, 'terratorch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False"]


def test_sizes() -> None:
    assert [s.value for s in ModelSize] == ["tiny", "small", "base", "large"]
    assert parse_model_size(" Base ") is ModelSize.BASE


def test_outputs_are_normalised_in_order_without_duplicates() -> None:
    assert normalise_outputs(["lulc", "S1GRD", "LULC"]) == (Modality.LULC, Modality.S1GRD)
    assert normalise_outputs("ndvi") == (Modality.NDVI,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": "huge"}, "'huge'"),
        ({"outputs": []}, "at least one"),
        ({"outputs": ["S2L2A"]}, "cannot generate"),
        ({"outputs": ["RADAR"]}, "'RADAR'"),
        ({"timesteps": 0}, "timesteps"),
        ({"weights": ""}, "TERRALENS_WEIGHTS"),
    ],
)
def test_bad_requests_are_refused_before_building(kwargs: dict, match: str) -> None:
    args = {"size": "tiny", "outputs": ["LULC"], "weights": "untrained", "timesteps": 1} | kwargs
    with pytest.raises(InvalidRequestError, match=match):
        load_generation_model(
            args["size"], args["outputs"], weights=args["weights"], device="cpu",
            timesteps=args["timesteps"],
        )
