"""``terralens generate | segment | geolocate``: the app's tasks from the command line.

``generate`` and ``segment`` write a run folder (one COG per layer + ``item.json``) into the
run store at ``--out`` — the same layout the app uses — and print the run folder. ``geolocate``
writes ``geolocation.geojson``, ``geolocation.csv`` and ``summary.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.aoi import AOI
from app.catalog import fetch_item
from app.cli_args import aoi_from_args
from app.pipeline import GenerationJob, Task, execute_generation
from app.runs import RunStore
from app.settings import Settings, load_settings
from inference.errors import InvalidRequestError
from inference.modalities import GENERATABLE, LULC_CLASSES, Modality


def _progress(done: int, total: int, message: str) -> None:
    print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)


def _aoi(args: argparse.Namespace, settings: Settings) -> AOI:
    aoi = aoi_from_args(args.aoi, args.bbox)
    return aoi.validate(settings.max_aoi_km2)


def _model_provider(settings: Settings) -> Any:
    from inference.models import load_generation_model

    def provide(size: str, outputs: tuple[Modality, ...], timesteps: int) -> Any:
        return load_generation_model(size, outputs, weights=settings.weights,
                                     device=settings.device, timesteps=timesteps)

    return provide


def _run_task(args: argparse.Namespace, task: str, outputs: tuple[Modality, ...]) -> int:
    settings = load_settings()
    aoi = _aoi(args, settings)
    stac_url = args.stac_url or settings.stac_url
    item = fetch_item(args.item, stac_url=stac_url, timeout_s=settings.stac_timeout_s)
    job = GenerationJob(
        scene_items=(item,), aoi=aoi, outputs=outputs, size=args.model,
        timesteps=args.timesteps, seed=args.seed, task=task,
        checkpoint=getattr(args, "checkpoint", None),
        extra={"device": settings.device},
    )
    settings = Settings(**{**settings.__dict__, "stac_url": stac_url})
    run = execute_generation(job, settings=settings, store=RunStore(Path(args.out)),
                             model_provider=_model_provider(settings), progress=_progress)
    print(run.path)
    return 0


def _parse_outputs(text: str) -> tuple[Modality, ...]:
    from inference.models import normalise_outputs

    return normalise_outputs([p for p in text.split(",") if p.strip()])


def cmd_generate(args: argparse.Namespace) -> int:
    """``terralens generate``: S2L2A → the chosen outputs, stored as a run."""
    return _run_task(args, Task.GENERATION, _parse_outputs(args.outputs))


def cmd_segment(args: argparse.Namespace) -> int:
    """``terralens segment``: zero-shot water, or a fine-tuned TiM checkpoint."""
    task = Task.TIM if args.checkpoint else Task.WATER
    return _run_task(args, task, (Modality.LULC,))


def parse_lulc_composition(text: str) -> dict[int, float]:
    """``"6=1.0"`` or ``"crops=0.6,water=0.4"`` → ``{class index: fraction}`` summing to 1.

    Raises:
        InvalidRequestError: unknown class, bad number, or fractions not summing to 1.
    """
    by_name = {c.name.lower(): c.index for c in LULC_CLASSES}
    composition: dict[int, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        key = name.strip().lower()
        try:
            index = int(key) if key.isdigit() else by_name[key]
            fraction = float(value)
        except (KeyError, ValueError) as err:
            raise InvalidRequestError(
                f"--lulc takes CLASS=FRACTION pairs (class index 1-9 or a name such as "
                f"'water'), got {part!r}"
            ) from err
        if not sep or not 1 <= index <= 9 or not 0 < fraction <= 1:
            raise InvalidRequestError(f"--lulc pair out of range: {part!r}")
        composition[index] = composition.get(index, 0.0) + fraction
    total = sum(composition.values())
    if abs(total - 1.0) > 0.01:
        raise InvalidRequestError(f"--lulc fractions must sum to 1, got {total:g} in {text!r}")
    return composition


def cmd_geolocate(args: argparse.Namespace) -> int:
    """``terralens geolocate``: Monte-Carlo samples of where TerraMind thinks a place is."""
    from inference import geolocate
    from inference.models import resolve_device

    settings = load_settings()
    true_centre = None
    if args.lulc:
        condition: Any = geolocate.lulc_prompt(parse_lulc_composition(args.lulc), seed=args.seed)
    else:
        if not (args.item and (args.bbox or args.aoi)):
            raise InvalidRequestError("geolocate needs --lulc, or --item with --bbox/--aoi")
        from app.scenes import load_scene

        aoi = _aoi(args, settings)
        stac_url = args.stac_url or settings.stac_url
        item = fetch_item(args.item, stac_url=stac_url, timeout_s=settings.stac_timeout_s)
        condition = load_scene([item], aoi, stac_url=stac_url)
        true_centre = aoi.centroid
    model = geolocate.load_geolocation_model(
        args.model, weights=settings.weights, device=resolve_device(settings.device),
        conditions=(Modality.LULC,) if args.lulc else (Modality.S2L2A,),
    )
    result = geolocate.sample_locations(
        model, condition, n=args.samples, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, progress=lambda d, t: _progress(d, t, "sampling"),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "geolocation.geojson").write_text(json.dumps(geolocate.to_geojson(result), indent=2))
    (out / "geolocation.csv").write_text(geolocate.to_csv(result))
    summary = geolocate.summary(result, true_lonlat=true_centre)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(out)
    return 0


def _common_scene_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--item", required=True, metavar="ID", help="STAC Item id of the scene")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", metavar="W,S,E,N", help="AOI as lon/lat degrees")
    where.add_argument("--aoi", metavar="FILE", help="AOI as a GeoJSON or KML file")
    parser.add_argument("--model", default="base", choices=["tiny", "small", "base", "large"],
                        help="TerraMind size (default: %(default)s)")
    parser.add_argument("--timesteps", type=int, default=10, help="diffusion steps (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--stac-url", default=None, metavar="URL",
                        help="STAC API root (default: TERRALENS_STAC_URL)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="run store folder; the run folder inside it is printed")


def add_generate(subparsers: Any) -> None:
    """Register ``terralens generate``."""
    parser = subparsers.add_parser("generate", help="generate modalities from a S2 L2A scene")
    _common_scene_args(parser)
    parser.add_argument("--outputs", required=True, metavar="LIST",
                        help=f"comma-separated, from {','.join(m.value for m in GENERATABLE)}")
    parser.set_defaults(func=cmd_generate)


def add_segment(subparsers: Any) -> None:
    """Register ``terralens segment``."""
    parser = subparsers.add_parser(
        "segment", help="water map (zero-shot) or a fine-tuned TiM checkpoint's classes")
    _common_scene_args(parser)
    parser.add_argument("--checkpoint", default=None, metavar="PATH_OR_REPO",
                        help="terratorch TiM checkpoint (file, folder or hub repo id); "
                             "without it: zero-shot water")
    parser.set_defaults(func=cmd_segment)


def add_geolocate(subparsers: Any) -> None:
    """Register ``terralens geolocate``."""
    parser = subparsers.add_parser(
        "geolocate", help="sample where TerraMind thinks a scene or land cover is")
    parser.add_argument("--item", metavar="ID", help="STAC Item id of the scene")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bbox", metavar="W,S,E,N", help="AOI as lon/lat degrees")
    where.add_argument("--aoi", metavar="FILE", help="AOI as a GeoJSON or KML file")
    where.add_argument("--lulc", metavar="CLASS=FRACTION,...",
                       help="land-cover prompt, e.g. 'bare ground=1' or 'crops=0.6,water=0.4'")
    parser.add_argument("--samples", type=int, default=64, help="number of samples (64)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--top-p", type=float, default=0.8, help="nucleus sampling top-p")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--model", default="base", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--stac-url", default=None, metavar="URL")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.set_defaults(func=cmd_geolocate)
