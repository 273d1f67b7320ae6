"""``terralens weights``: list or pre-download the TerraMind files a model needs.

The Docker image runs ``terralens weights download --spec base:S1GRD,LULC,NDVI,DEM`` at build
time so that the image works offline (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import argparse
from typing import Any

from inference.errors import InvalidRequestError
from inference.modalities import Modality


def parse_spec(text: str) -> tuple[str, tuple[Modality, ...]]:
    """``"base:S1GRD,LULC"`` → ``("base", (S1GRD, LULC))``.

    Raises:
        InvalidRequestError: not ``SIZE:OUTPUT[,OUTPUT...]`` or unknown size/outputs.
    """
    from inference.models import ModelSize, normalise_outputs

    size, sep, outputs = text.partition(":")
    if not sep or not outputs.strip():
        raise InvalidRequestError(
            f"--spec must look like SIZE:OUTPUT,OUTPUT (e.g. base:S1GRD,LULC), got {text!r}"
        )
    try:
        model_size = ModelSize(size.strip().lower())
    except ValueError as err:
        raise InvalidRequestError(
            f"unknown model size {size!r} in --spec: choose from {[s.value for s in ModelSize]}"
        ) from err
    return model_size.value, normalise_outputs(outputs.split(","))


def cmd_weights(args: argparse.Namespace) -> int:
    """Print (``list``) or fetch (``download``) the weight files of a generation model."""
    from inference.weights import required_weight_files, resolve_weight_files

    size, outputs = parse_spec(args.spec)
    files = required_weight_files(
        f"terramind_v1_{size}_generate",
        modalities=[Modality.S2L2A.value],
        output_modalities=[m.value for m in outputs],
    )
    if args.action == "list":
        for f in files:
            print(f"{f.repo_id}/{f.filename}")
        return 0
    paths = resolve_weight_files(files, args.weights)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def add_weights(subparsers: Any) -> None:
    """Register ``terralens weights``."""
    parser = subparsers.add_parser(
        "weights",
        help="list or download the TerraMind weight files of a model",
        description="List or download (into the Hugging Face cache, HF_HOME) the TerraMind "
                    "model and tokenizer files needed to generate the given outputs.",
    )
    parser.add_argument("action", choices=["list", "download"])
    parser.add_argument("--spec", required=True, metavar="SIZE:OUTPUTS",
                        help="model size and outputs, e.g. base:S1GRD,LULC,NDVI,DEM")
    parser.add_argument("--weights", default="hub", metavar="SOURCE",
                        help="'hub' (default) or a local folder to check")
    parser.set_defaults(func=cmd_weights)
