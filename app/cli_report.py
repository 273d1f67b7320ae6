"""``terralens report``: the one-page PDF report of a stored run (and its map as a PNG).

Example:
    terralens report ~/.terralens/runs/0f3a9c1e2b4d5a6f --out run.pdf --png map.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from app.map_export import EXPORT_WIDTHS, WIDTH_RANGE
from inference.errors import ExportError, InvalidRequestError, RunStoreError


def _open_run(target: str) -> Any:
    """A run from its folder, or from its id in the configured run store."""
    from app.runs import RunStore

    folder = Path(target).expanduser()
    if folder.is_dir():
        return RunStore(folder.resolve().parent).open(folder.resolve().name)
    if "/" in target or "\\" in target:
        raise RunStoreError(f"no run folder {target!r}: give a run's folder or its id")
    from app.settings import load_settings

    return RunStore(load_settings().runs_dir).open(target)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as err:
        raise ExportError(f"cannot write {str(path)!r} ({err}); pick a writable --out") from err


def cmd_report(args: argparse.Namespace) -> int:
    """Run ``terralens report``: write the PDF report (and optionally the map PNG)."""
    from app.layers import display_layers_for, render_png
    from app.map_export import map_png, sheet_info
    from app.report_pdf import default_map_layer, report_pdf
    from app.settings import load_settings

    run = _open_run(args.run)
    layers = run.load_layers()
    shown = display_layers_for(layers)
    if args.layer:
        by_name = {d.name: d for d in shown}
        if args.layer not in by_name:
            raise InvalidRequestError(
                f"run {run.id!r} has no layer {args.layer!r}; choose one of {list(by_name)!r}")
        layer = by_name[args.layer]
    else:
        layer = default_map_layer(shown)
    basemap_url = load_settings().basemap_url
    rendered = render_png(layers[layer.source], layer, max_size=1600)
    out = Path(args.out).expanduser()
    _write(out, report_pdf(run, layers, map_layer=layer, rendered=rendered,
                           basemap_url=basemap_url))
    print(f"report of run {run.id} ({layer.name}): {out}")
    if args.png:
        png = Path(args.png).expanduser()
        _write(png, map_png(rendered, layer, width_px=args.width, info=sheet_info(run),
                            basemap_url=basemap_url))
        print(f"map of {layer.name}, {args.width} px wide: {png}")
    return 0


def _width(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"width must be a whole number of pixels, got {text!r}"
                                         ) from err
    low, high = WIDTH_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"width must be {low}..{high} pixels, got {value}")
    return value


def add_report(subparsers: Any) -> None:
    """Register ``terralens report``."""
    parser = subparsers.add_parser(
        "report",
        help="write the one-page PDF report of a stored run",
        description="Write the one-page PDF report of a stored run (map with legend, scale bar "
                    "and north arrow, statistics, class areas, provenance); optionally the map "
                    "as a PNG too. Works offline (Natural Earth basemap).",
    )
    parser.add_argument("run", metavar="RUN_DIR",
                        help="the run's folder, or its id in the run store (TERRALENS_DATA_DIR)")
    parser.add_argument("--out", required=True, metavar="FILE.pdf", help="PDF file to write")
    parser.add_argument("--layer", metavar="NAME",
                        help="layer to map, e.g. '[G] NDVI' (default: the generated land cover, "
                             "else the first output)")
    parser.add_argument("--png", metavar="FILE.png", help="also write the map as a PNG")
    parser.add_argument("--width", type=_width, default=EXPORT_WIDTHS[0], metavar="PX",
                        help=f"width of the PNG in pixels (default {EXPORT_WIDTHS[0]})")
    parser.set_defaults(func=cmd_report)
