"""``terralens generate | segment``: the app's tasks from the command line.

Both write a run folder (one COG per layer + ``item.json``) into the run store at ``--out`` —
the same layout the app uses — and print the run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.aoi import AOI
from app.catalog import fetch_item
from app.pipeline import GenerationJob, Task, execute_generation
from app.runs import RunStore
from app.settings import Settings, load_settings
from inference.modalities import GENERATABLE, Modality


def _progress(done: int, total: int, message: str) -> None:
    print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)


def _aoi(args: argparse.Namespace, settings: Settings) -> AOI:
    from app.cli import _parse_bbox, _read_aoi_file

    aoi = _read_aoi_file(args.aoi) if args.aoi else _parse_bbox(args.bbox)
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
