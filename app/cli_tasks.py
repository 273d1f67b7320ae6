"""``terralens generate | segment | geolocate``: the app's tasks from the command line.

``generate`` and ``segment`` write a run folder (one COG per layer + ``item.json``) into the
run store at ``--out`` — the same layout the app uses — and print the run folder. ``geolocate``
writes ``geolocation.geojson``, ``geolocation.csv`` and ``summary.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from app.aoi import AOI
from app.catalog import fetch_item
from app.cli_args import aoi_from_args
from app.jobs import run_sync
from app.settings import Settings, load_settings
from app.tasks import Condition, JobSpec, Task
from inference.errors import InvalidRequestError
from inference.modalities import GENERATABLE, LULC_CLASSES, Modality
from inference.models import ModelSize
from inference.progress import Progress, Unit


def _progress(event: Progress) -> None:
    print(progress_line(event), file=sys.stderr, flush=True)


def progress_line(event: Progress) -> str:
    """``[phase] message (counts)`` for stderr: bytes are in the message, chip steps as a
    percentage, other counts as done/total."""
    if event.unit is Unit.CHIP_STEPS and event.total:
        counts = f" ({100 * event.fraction:.0f}%)"
    elif event.unit in (Unit.BYTES, Unit.NONE) or not event.total:
        counts = ""
    else:
        counts = f" ({event.done}/{event.total} {event.unit.value})"
    return f"[{event.phase.value}] {event.message}{counts}"


def _aoi(args: argparse.Namespace, settings: Settings) -> AOI:
    aoi = aoi_from_args(args.aoi, args.bbox)
    return aoi.validate(settings.max_aoi_km2, settings.max_window_km2)


def _settings(args: argparse.Namespace, runs_dir: str | None = None) -> Settings:
    settings = load_settings()
    changes: dict[str, Any] = {}
    if getattr(args, "stac_url", None):
        changes["stac_url"] = args.stac_url
    if runs_dir is not None:
        changes["runs_path"] = Path(runs_dir)
    return dataclasses.replace(settings, **changes) if changes else settings


def _run_task(args: argparse.Namespace, task: Task, outputs: tuple[Modality, ...]) -> int:
    settings = _settings(args, runs_dir=args.out)
    aoi = _aoi(args, settings)
    item = fetch_item(args.item, stac_url=settings.stac_url, timeout_s=settings.stac_timeout_s)
    spec = JobSpec(task=task, scene_items=(item,), aoi=aoi, outputs=outputs, size=args.model,
                   timesteps=args.timesteps, seed=args.seed,
                   seeds=getattr(args, "seeds", 1),
                   checkpoint=getattr(args, "checkpoint", None))
    outcome = run_sync(spec, settings=settings, progress=_progress)
    assert outcome.run is not None  # run tasks always store a run
    print(outcome.run.path)
    return 0


def _parse_outputs(text: str) -> tuple[Modality, ...]:
    from inference.models import normalise_outputs

    return normalise_outputs([p for p in text.split(",") if p.strip()])


def cmd_generate(args: argparse.Namespace) -> int:
    """``terralens generate``: S2L2A → the chosen outputs, stored as a run."""
    return _run_task(args, Task.GENERATE, _parse_outputs(args.outputs))


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
    from inference.geolocate_summary import to_csv, to_geojson

    settings = _settings(args)
    if args.lulc:
        spec = JobSpec(task=Task.GEOLOCATE, condition=Condition.PROMPT,
                       prompt=tuple(parse_lulc_composition(args.lulc).items()), size=args.model,
                       samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                       seed=args.seed)
    else:
        if not (args.item and (args.bbox or args.aoi)):
            raise InvalidRequestError("geolocate needs --lulc, or --item with --bbox/--aoi")
        aoi = _aoi(args, settings)
        item = fetch_item(args.item, stac_url=settings.stac_url,
                          timeout_s=settings.stac_timeout_s)
        spec = JobSpec(task=Task.GEOLOCATE, condition=Condition.SCENE, scene_items=(item,),
                       aoi=aoi, size=args.model, samples=args.samples,
                       temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    outcome = run_sync(spec, settings=settings, progress=_progress).geolocation
    assert outcome is not None  # a geolocation job always yields samples
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "geolocation.geojson").write_text(json.dumps(to_geojson(outcome.result), indent=2))
    (out / "geolocation.csv").write_text(to_csv(outcome.result))
    (out / "summary.json").write_text(json.dumps(outcome.summary, indent=2, default=str))
    print(out)
    return 0


def _common_scene_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--item", required=True, metavar="ID", help="STAC Item id of the scene")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", metavar="W,S,E,N", help="AOI as lon/lat degrees")
    where.add_argument("--aoi", metavar="FILE", help="AOI as a GeoJSON or KML file")
    parser.add_argument("--model", default="base", choices=[s.value for s in ModelSize],
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
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="seed ensemble of N members in one batched job (2-16; default 1 = "
                             "off): writes the ensemble mean/mode and [U] uncertainty layers, "
                             "and costs N times the chips")
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
    parser.add_argument("--model", default="base", choices=[s.value for s in ModelSize])
    parser.add_argument("--stac-url", default=None, metavar="URL")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.set_defaults(func=cmd_geolocate)
