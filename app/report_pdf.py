"""A one-page PDF report of a run: map, legend, statistics and provenance (matplotlib PdfPages).

The page (A4 portrait) holds the map of one layer over its basemap with its legend, scale bar,
north arrow and overview (drawn by :mod:`app.map_drawing`); a table of every layer's
min / mean / max in physical units; the class areas of every class map; and the run's
provenance — scene, model, weights with their SHA-256, seed, timesteps, software versions. A
synthetic run carries its mark (synthetic / untrained) at the top of the page. External strings
are plain text (:func:`app.map_drawing.plain_text`, ``parse_math=False``).

No Streamlit here: the Layers page offers the bytes as a download, ``terralens report RUN_DIR``
writes them to a file.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from app.colors import StyleKind
from app.layers import DisplayLayer, display_layers_for, layer_statistics, render_png
from app.map_drawing import (
    draw_legend,
    draw_map,
    draw_mark,
    draw_north_arrow,
    draw_overview,
    draw_scale_bar,
    fit_extent,
    layer_extent,
    plain_text,
    put_text,
    wrapped,
)
from app.map_export import mark_for, sheet_info, terralens_version
from app.rasters import tag_text
from inference.errors import InvalidRequestError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from app.layers import RenderedLayer
    from app.stored_run import Run

#: A4 portrait, inches.
PAGE_INCHES = (8.27, 11.69)
#: Regions of the page as figure fractions ``(left, bottom, right, top)``.
HEADER_BOX = (0.05, 0.935, 0.95, 0.985)
MARK_BOX = (0.05, 0.905, 0.95, 0.93)
MAP_BOX = (0.05, 0.53, 0.64, 0.895)
SCALE_BAR_BOX = (0.06, 0.54, 0.27, 0.585)
NORTH_ARROW_BOX = (0.585, 0.82, 0.632, 0.888)
LEGEND_BOX = (0.67, 0.70, 0.96, 0.895)
OVERVIEW_BOX = (0.67, 0.53, 0.96, 0.675)
STATS_BOX = (0.05, 0.25, 0.56, 0.505)
CLASSES_BOX = (0.61, 0.25, 0.96, 0.505)
PROVENANCE_BOX = (0.05, 0.03, 0.96, 0.235)
#: Weight files listed one per line with their SHA-256 (the rest are counted).
MAX_WEIGHT_FILES = 6
_LINE = 0.0125  # one 7.5 pt line in page fractions


def default_map_layer(layers: Sequence[DisplayLayer]) -> DisplayLayer:
    """The layer a report maps when none is chosen: the first generated class map, else the
    first output, else the first layer.

    Raises:
        InvalidRequestError: there is no layer at all.
    """
    if not layers:
        raise InvalidRequestError("the run has no layer to put in a report")
    outputs = [d for d in layers if d.kind != "input"]
    classes = [d for d in outputs if d.style.kind is StyleKind.CLASSES and d.synthetic]
    return (classes or outputs or list(layers))[0]


def _number(value: Any) -> str:
    if not isinstance(value, int | float):
        return "n/a"
    return f"{value:.4g}"


def _box_axes(fig: Figure, box: tuple[float, float, float, float]) -> Axes:
    left, bottom, right, top = box
    ax = fig.add_axes((left, bottom, right - left, top - bottom))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return ax


def _rows(ax: Axes, box: tuple[float, float, float, float], y: float,
          rows: Sequence[Sequence[str]], columns: Sequence[tuple[float, str]], *,
          bold: bool = False, fontsize: float = 7.5) -> float:
    """Table rows as text in ``ax``; returns the next ``y`` (axes fraction)."""
    step = _LINE / (box[3] - box[1])
    for row in rows:
        if y < step * 0.5:
            break
        for (x, align), cell in zip(columns, row, strict=False):
            put_text(ax, x, y, cell, ha=align, va="top", fontsize=fontsize,
                     fontweight="bold" if bold else "normal", max_chars=48)
        y -= step
    return y


def statistics_rows(layers: Mapping[str, xr.DataArray], shown: Sequence[DisplayLayer]
                    ) -> tuple[list[list[str]], dict[str, list[list[str]]]]:
    """The report's tables: per continuous layer ``[name, units, min, mean, max, valid %]``
    and per class map its ``[class, km², %]`` rows (classes with pixels only)."""
    continuous: list[list[str]] = []
    classes: dict[str, list[list[str]]] = {}
    for layer in shown:
        if layer.style.kind is StyleKind.RGB or layer.source not in layers:
            continue
        stats = layer_statistics(layers[layer.source], layer)
        if stats["kind"] == "classes":
            classes[layer.name] = [
                [str(c["name"]), f"{c['area_km2']:.4f}", f"{c['percent']:.1f}"]
                for c in stats["classes"] if c["pixels"]
            ] + [["total", f"{stats['total_km2']:.4f}", "100.0" if stats["valid_pixels"]
                  else "0.0"]]
        else:
            continuous.append([layer.name, layer.units or "unitless", _number(stats["min"]),
                               _number(stats["mean"]), _number(stats["max"]),
                               f"{100 * stats['valid_share']:.0f}"])
    return continuous, classes


def provenance_lines(run: Run) -> list[tuple[str, str]]:
    """(label, value) lines of a run's provenance: run, scene, model, weights and their
    SHA-256, seed, timesteps, offset, software."""
    props = run.item.properties
    prov = run.provenance
    params = run.request.params_dict
    software = props.get("processing:software") or {}
    try:
        area = f"{run.aoi.area_km2:.3f} km²"
    except (InvalidRequestError, ValueError, TypeError):
        area = ""
    lines = [
        ("Run", f"{run.id} · created {run.created:%Y-%m-%d %H:%M} UTC · task {run.request.task}"),
        ("Scene", f"{run.request.scene_id} · {prov.get('collection', '')} · acquired "
                  f"{props.get('datetime', '')}"),
        ("Area of interest", area),
        ("Model", str(prov.get("model") or run.request.model or "")),
        ("Weights", str(prov.get("weights") or run.request.weights or "")),
    ]
    files = prov.get("weights_files")
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except ValueError:
            files = None
    if isinstance(files, list) and files:
        for entry in files[:MAX_WEIGHT_FILES]:
            if isinstance(entry, dict):
                lines.append((f"  {entry.get('key', '')}",
                              f"{entry.get('file', '')} sha256 {entry.get('sha256', '')}"))
        if len(files) > MAX_WEIGHT_FILES:
            lines.append(("", f"… {len(files) - MAX_WEIGHT_FILES} more weight files "
                              "(see item.json)"))
    elif str(prov.get("weights", "")) == "untrained" or run.untrained:
        lines.append(("  sha256", "none: untrained (seeded random) weights"))
    else:
        lines.append(("  sha256", "not recorded"))
    seed = prov.get("seed", params.get("seed", ""))
    timesteps = prov.get("timesteps", params.get("timesteps", ""))
    lines += [
        ("Seed · timesteps", f"seed {tag_text(seed)} · timesteps {tag_text(timesteps)}"
                             f" · offset {tag_text(prov.get('offset_applied', 'n/a'))}"),
        ("Parameters", json.dumps(params, sort_keys=True, default=str)),
        ("Software", " · ".join(f"{k} {v}" for k, v in sorted(software.items()))
                     + f" · report by TerraLens {terralens_version()}"),
    ]
    return lines


def report_figure(run: Run, layers: Mapping[str, xr.DataArray], *,
                  map_layer: DisplayLayer | None = None,
                  rendered: RenderedLayer | None = None, basemap_url: str | None = None,
                  now: dt.datetime | None = None) -> Figure:
    """The report page of ``run`` as a matplotlib figure (A4 portrait).

    Args:
        run: The stored run (provenance, scene, request).
        layers: Its rasters by name (:meth:`app.runs.Run.load_layers`).
        map_layer: The layer to map (default: :func:`default_map_layer`), with the analyst's
            stretch and ramp when it comes from the Layers page.
        rendered: That layer rendered in Web Mercator (rendered here when not given).
        basemap_url: A site's XYZ tile server, tried with a short time-out.
        now: Report time (default: now, UTC).
    """
    now = now or dt.datetime.now(dt.UTC)
    shown = display_layers_for(layers)
    layer = map_layer or default_map_layer(shown)
    if rendered is None:
        if layer.source not in layers:
            raise InvalidRequestError(
                f"layer {layer.name!r} is not a layer of run {run.id!r}; pick one of "
                f"{[d.name for d in shown]!r}")
        rendered = render_png(layers[layer.source], layer, max_size=1600)
    info = sheet_info(run)
    fig = Figure(figsize=PAGE_INCHES, facecolor="#ffffff")

    header = _box_axes(fig, HEADER_BOX)
    put_text(header, 0.0, 1.0, "TerraLens run report", va="top", fontsize=8, color="#555555")
    put_text(header, 0.0, 0.62, f"{run.request.task} · {run.request.scene_id}", va="top",
             fontsize=14, fontweight="bold", max_chars=70)
    put_text(header, 0.0, 0.0, f"Map: {layer.name} · scene acquired {info.acquired} · "
             f"report {now.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC", va="bottom", fontsize=8,
             color="#333333", max_chars=130)
    draw_mark(fig, MARK_BOX, mark_for(synthetic=run.synthetic, untrained=run.untrained),
              fontsize=9.5)

    fig_w, fig_h = PAGE_INCHES
    aspect = ((MAP_BOX[2] - MAP_BOX[0]) * fig_w) / ((MAP_BOX[3] - MAP_BOX[1]) * fig_h)
    extent = fit_extent(layer_extent(rendered), aspect)
    basemap, credit = None, "Basemap: Natural Earth 1:50m (offline)"
    if basemap_url:
        from app.export_tiles import fetch_mosaic

        mosaic = fetch_mosaic(basemap_url, extent, width_px=1000)
        if mosaic is not None:
            basemap, credit = (mosaic.image, mosaic.extent), "Basemap: site tile server"
    left, bottom, right, top = MAP_BOX
    map_ax = fig.add_axes((left, bottom, right - left, top - bottom))
    draw_map(map_ax, rendered, extent, aoi=info.aoi, basemap=basemap)
    put_text(map_ax, 0.99, 0.01, f"{credit} · EPSG:3857", transform=map_ax.transAxes,
             ha="right", va="bottom", fontsize=6, color="#333333",
             bbox={"facecolor": "#ffffff", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    draw_scale_bar(fig, SCALE_BAR_BOX, extent, MAP_BOX, fontsize=7)
    draw_north_arrow(fig, NORTH_ARROW_BOX)
    draw_legend(fig, LEGEND_BOX, layer, fontsize=7.5, width_chars=40)
    draw_overview(fig, OVERVIEW_BOX, extent, fontsize=6.5)

    continuous, class_tables = statistics_rows(layers, shown)
    stats_ax = _box_axes(fig, STATS_BOX)
    put_text(stats_ax, 0.0, 1.0, "Statistics (valid pixels, physical units)", va="top",
             fontsize=9.5, fontweight="bold")
    columns = [(0.0, "left"), (0.38, "left"), (0.62, "right"), (0.76, "right"),
               (0.89, "right"), (1.0, "right")]
    y = 1.0 - 1.8 * _LINE / (STATS_BOX[3] - STATS_BOX[1])
    y = _rows(stats_ax, STATS_BOX, y, [["layer", "units", "min", "mean", "max", "valid %"]],
              columns, bold=True)
    _rows(stats_ax, STATS_BOX, y, continuous, columns)

    classes_ax = _box_axes(fig, CLASSES_BOX)
    put_text(classes_ax, 0.0, 1.0, "Class areas", va="top", fontsize=9.5, fontweight="bold")
    y = 1.0 - 1.8 * _LINE / (CLASSES_BOX[3] - CLASSES_BOX[1])
    columns = [(0.0, "left"), (0.78, "right"), (1.0, "right")]
    for name, rows in class_tables.items():
        y = _rows(classes_ax, CLASSES_BOX, y, [[name, "km²", "%"]], columns, bold=True)
        y = _rows(classes_ax, CLASSES_BOX, y, rows, columns)
        y -= 0.4 * _LINE / (CLASSES_BOX[3] - CLASSES_BOX[1])
    if not class_tables:
        put_text(classes_ax, 0.0, y, "No class map in this run.", va="top", fontsize=7.5)

    prov_ax = _box_axes(fig, PROVENANCE_BOX)
    put_text(prov_ax, 0.0, 1.0, "Provenance", va="top", fontsize=9.5, fontweight="bold")
    step = _LINE / (PROVENANCE_BOX[3] - PROVENANCE_BOX[1])
    y = 1.0 - 1.8 * step
    for label, value in provenance_lines(run):
        for n, part in enumerate(wrapped(value, 110)):
            if y < step:
                break
            put_text(prov_ax, 0.0, y, label if n == 0 else "", va="top", fontsize=7.5,
                     fontweight="bold")
            put_text(prov_ax, 0.19, y, part, va="top", fontsize=7.5, max_chars=120)
            y -= step
    put_text(fig, 0.5, 0.012, "Generated layers are synthetic: plausible images, not "
             "measurements of the ground." if run.synthetic else "TerraLens",
             ha="center", va="bottom", fontsize=7, color="#555555")
    return fig


def report_pdf(run: Run, layers: Mapping[str, xr.DataArray], *,
               map_layer: DisplayLayer | None = None, rendered: RenderedLayer | None = None,
               basemap_url: str | None = None, now: dt.datetime | None = None) -> bytes:
    """The one-page PDF report of ``run`` (see :func:`report_figure` for the arguments).

    The PDF's metadata carry the title (task and scene), the run id and the mark.
    """
    now = now or dt.datetime.now(dt.UTC)
    fig = report_figure(run, layers, map_layer=map_layer, rendered=rendered,
                        basemap_url=basemap_url, now=now)
    mark = mark_for(synthetic=run.synthetic, untrained=run.untrained)
    metadata = {
        "Title": plain_text(f"TerraLens run report: {run.request.task} {run.request.scene_id}"),
        "Author": "TerraLens",
        "Subject": plain_text(mark[0] if mark else "TerraLens run report"),
        "Keywords": plain_text(f"run {run.id}; scene {run.request.scene_id}"),
        "Creator": f"TerraLens {terralens_version()}",
        "CreationDate": now,
    }
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata=metadata) as pdf:
        pdf.savefig(fig)
    return buffer.getvalue()

