"""Drawing the parts of a map sheet with matplotlib: plain text, basemap, layer, scale bar,
north arrow, mark, legend and overview.

Used by the map PNG (:mod:`app.map_export`) and the PDF report (:mod:`app.report_pdf`). Maps are
drawn in Web Mercator (EPSG:3857) metres, the grid of rendered layers
(:func:`app.layers.render_png`); the basemap is Natural Earth from the vendored TopoJSON
(:mod:`app.natural_earth`) unless a tile mosaic is given. Every external string goes through
:func:`plain_text` and is drawn with ``parse_math=False`` (:func:`put_text`): a ``$`` never
starts mathtext, and characters the font lacks become ``?``. No Streamlit, no pyplot.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.patches import FancyBboxPatch, PathPatch, Polygon, Rectangle
from matplotlib.path import Path as MplPath
from PIL import Image

from app.colors import StyleKind, ramp_lut
from app.legends import legend as layer_legend
from app.natural_earth import lonlat_to_mercator, mercator_to_lonlat, outlines

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from app.layers import DisplayLayer, RenderedLayer

FONT = "DejaVu Sans"

#: Mark colours: untrained (red), synthetic (amber), model prediction (blue).
UNTRAINED_COLOUR = "#c62828"
SYNTHETIC_COLOUR = "#f0b429"
PREDICTION_COLOUR = "#1565c0"
#: Basemap colours (light, for print).
OCEAN_COLOUR = "#dde8f0"
LAND_COLOUR = "#f1eee4"
COAST_COLOUR = "#8e9ba6"
BORDER_COLOUR = "#7a6f8a"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


# -- Plain text -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _glyphs() -> frozenset[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(font_manager.FontProperties(family=FONT), fallback_to_default=True)
    return frozenset(FT2Font(path).get_charmap())


def plain_text(value: object, max_chars: int = 160) -> str:
    """``value`` as one line of plain text that matplotlib draws as is.

    Control and bidi-override characters become spaces, characters the font has no glyph for
    become ``?``, and text longer than ``max_chars`` ends with ``…``. (``$`` stays: every text
    is drawn with ``parse_math=False``.)
    """
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    glyphs = _glyphs()
    text = "".join(c if ord(c) in glyphs else "?" for c in text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def put_text(target: Any, x: float, y: float, text: object, *, max_chars: int = 160,
             **kwargs: Any) -> Text:
    """Draw plain text on an Axes or Figure: no mathtext, no TeX, the sheet's font."""
    kwargs.setdefault("fontfamily", FONT)
    out: Text = target.text(x, y, plain_text(text, max_chars), parse_math=False, usetex=False,
                            **kwargs)
    return out


def wrapped(text: object, width: int) -> list[str]:
    """``text`` as plain-text lines of at most ``width`` characters."""
    return textwrap.wrap(plain_text(text, 2000), width) or [""]


# -- Geometry -------------------------------------------------------------------------------------
Extent = tuple[float, float, float, float]  # (x0, x1, y0, y1), EPSG:3857 metres


def layer_extent(rendered: RenderedLayer) -> Extent:
    """The rendered image's extent in EPSG:3857 metres."""
    (south, west), (north, east) = rendered.bounds
    xs, ys = lonlat_to_mercator(np.array([west, east]), np.array([south, north]))
    return float(xs[0]), float(xs[1]), float(ys[0]), float(ys[1])


def fit_extent(extent: Extent, aspect: float, pad: float = 0.08) -> Extent:
    """``extent`` padded by ``pad`` of its size on each side and widened to ``aspect`` (w / h)."""
    x0, x1, y0, y1 = extent
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    w = max(x1 - x0, 1.0) * (1 + 2 * pad)
    h = max(y1 - y0, 1.0) * (1 + 2 * pad)
    if w / h < aspect:
        w = h * aspect
    else:
        h = w / aspect
    return cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2


def ground_scale(extent: Extent) -> float:
    """Ground metres per Web Mercator metre at the extent's centre (``cos(latitude)``)."""
    _, lat = _centre_lonlat(extent)
    return math.cos(math.radians(lat))


def _centre_lonlat(extent: Extent) -> tuple[float, float]:
    x0, x1, y0, y1 = extent
    lon, lat = mercator_to_lonlat((x0 + x1) / 2, (y0 + y1) / 2)
    return float(lon), float(lat)


def nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 × 10ⁿ metres not above ``metres``."""
    if metres <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(metres))
    return max(step * power for step in (1, 2, 5) if step * power <= metres)


def distance_label(metres: float) -> str:
    """``500 m``, ``2 km``, ``1.5 km``."""
    if metres < 1000:
        return f"{metres:g} m"
    return f"{metres / 1000:g} km"


def rect(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` → matplotlib's ``(left, bottom, width, height)``."""
    left, bottom, right, top = box
    return left, bottom, right - left, top - bottom


def blank_axes(fig: Figure, box: tuple[float, float, float, float]) -> Axes:
    """Axes without axis at ``box`` (figure fractions), both limits 0..1."""
    ax = fig.add_axes(rect(box))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return ax


# -- Basemap and layer ----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _ring_bounds() -> tuple[np.ndarray, np.ndarray]:
    shapes = outlines()
    def bounds(rings: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([[r[:, 0].min(), r[:, 0].max(), r[:, 1].min(), r[:, 1].max()]
                         for r in rings])
    return bounds(shapes.land), bounds(shapes.borders)


def _visible(bounds: np.ndarray, extent: Extent) -> np.ndarray:
    x0, x1, y0, y1 = extent
    return np.flatnonzero((bounds[:, 0] <= x1) & (bounds[:, 1] >= x0)
                          & (bounds[:, 2] <= y1) & (bounds[:, 3] >= y0))


def draw_natural_earth(ax: Axes, extent: Extent, *, linewidth: float = 0.8) -> None:
    """Ocean, land (with its coast) and country borders of Natural Earth over ``extent``."""
    shapes = outlines()
    land_bounds, border_bounds = _ring_bounds()
    ax.add_patch(Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2],
                           facecolor=OCEAN_COLOUR, edgecolor="none", zorder=0))
    rings = [shapes.land[i] for i in _visible(land_bounds, extent)]
    if rings:
        path = MplPath.make_compound_path(*(MplPath(r, closed=True) for r in rings))
        # add_artist, not add_patch: the limits are set by the caller, and add_patch would
        # walk every vertex of the coast to update them.
        ax.add_artist(PathPatch(path, facecolor=LAND_COLOUR, edgecolor=COAST_COLOUR,
                                linewidth=linewidth, zorder=0.5))
    borders = [shapes.borders[i] for i in _visible(border_bounds, extent)]
    if borders:
        ax.add_collection(LineCollection(borders, colors=BORDER_COLOUR, linewidths=linewidth,
                                         linestyles=[(0, (4, 2))], zorder=0.6), autolim=False)


def _aoi_rings(aoi: Mapping[str, Any] | None) -> list[np.ndarray]:
    if not aoi:
        return []
    kind, coords = aoi.get("type"), aoi.get("coordinates") or []
    polygons = [coords] if kind == "Polygon" else coords if kind == "MultiPolygon" else []
    rings = []
    for polygon in polygons:
        if polygon:
            ring = np.asarray(polygon[0], dtype=np.float64)
            x, y = lonlat_to_mercator(ring[:, 0], ring[:, 1])
            rings.append(np.column_stack([x, y]))
    return rings


def draw_map(ax: Axes, rendered: RenderedLayer, extent: Extent, *,
             aoi: Mapping[str, Any] | None = None,
             basemap: tuple[np.ndarray, Extent] | None = None) -> None:
    """The layer over its basemap in ``ax``, framed to ``extent`` (EPSG:3857).

    Args:
        ax: The map axes.
        rendered: The layer's RGBA PNG in Web Mercator and its bounds.
        extent: What the map shows, ``(x0, x1, y0, y1)`` metres.
        aoi: GeoJSON polygon outlined in white over black (the run's area of interest).
        basemap: An RGB(A) tile mosaic and its extent, drawn instead of Natural Earth.
    """
    if basemap is not None:
        tiles, tiles_extent = basemap
        ax.imshow(tiles, extent=(tiles_extent[0], tiles_extent[1], tiles_extent[2],
                                 tiles_extent[3]), interpolation="bilinear", zorder=0)
    else:
        draw_natural_earth(ax, extent)
    with Image.open(io.BytesIO(rendered.png)) as png:
        rgba = np.asarray(png.convert("RGBA"))
    x0, x1, y0, y1 = layer_extent(rendered)
    ax.imshow(rgba, extent=(x0, x1, y0, y1), interpolation="nearest", zorder=2)
    for ring in _aoi_rings(aoi):
        ax.plot(ring[:, 0], ring[:, 1], color="#000000", linewidth=2.2, zorder=3)
        ax.plot(ring[:, 0], ring[:, 1], color="#ffffff", linewidth=1.0, zorder=3.1)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor("#444444")


def draw_scale_bar(fig: Figure, box: tuple[float, float, float, float], extent: Extent,
                   map_box: tuple[float, float, float, float], *, fontsize: float = 9) -> float:
    """A scale bar in ground distance, in a white box at ``box`` (figure fractions).

    Returns:
        The bar's length in ground metres.
    """
    ax = blank_axes(fig, box)
    ax.add_patch(FancyBboxPatch((0.0, 0.0), 1.0, 1.0, boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor="#ffffff", edgecolor="#444444", linewidth=0.8,
                                alpha=0.92, transform=ax.transAxes, zorder=1))
    map_width_m = (extent[1] - extent[0]) * ground_scale(extent)
    box_share = (box[2] - box[0]) / (map_box[2] - map_box[0])  # box width / map width
    usable = 0.8 * box_share * map_width_m
    length = nice_length(usable)
    bar = 0.8 * length / usable
    left = (1.0 - bar) / 2
    segments = 4 if length / 4 >= 1 else 2
    for i in range(segments):
        ax.add_patch(Rectangle((left + i * bar / segments, 0.5), bar / segments, 0.16,
                               facecolor="#111111" if i % 2 == 0 else "#ffffff",
                               edgecolor="#111111", linewidth=0.8, zorder=2))
    put_text(ax, left, 0.42, "0", ha="center", va="top", fontsize=fontsize, zorder=3)
    put_text(ax, left + bar, 0.42, distance_label(length), ha="center", va="top",
             fontsize=fontsize, zorder=3)
    put_text(ax, 0.5, 0.92, "scale at the map's centre", ha="center", va="top",
             fontsize=fontsize * 0.75, color="#444444", zorder=3)
    return length


def draw_north_arrow(fig: Figure, box: tuple[float, float, float, float]) -> None:
    """A north arrow (Web Mercator: north is up) at ``box`` (figure fractions)."""
    ax = blank_axes(fig, box)
    ax.add_patch(FancyBboxPatch((0.0, 0.0), 1.0, 1.0, boxstyle="round,pad=0,rounding_size=0.1",
                                facecolor="#ffffff", edgecolor="#444444", linewidth=0.8,
                                alpha=0.92, transform=ax.transAxes, zorder=1))
    ax.add_patch(Polygon([(0.5, 0.62), (0.25, 0.08), (0.5, 0.22)], closed=True,
                         facecolor="#111111", edgecolor="#111111", linewidth=0.8, zorder=2))
    ax.add_patch(Polygon([(0.5, 0.62), (0.75, 0.08), (0.5, 0.22)], closed=True,
                         facecolor="#ffffff", edgecolor="#111111", linewidth=0.8, zorder=2))
    put_text(ax, 0.5, 0.8, "N", ha="center", va="center", fontsize=12, fontweight="bold",
             zorder=3)


def draw_mark(fig: Figure, box: tuple[float, float, float, float],
              mark: tuple[str, str] | None, *, fontsize: float = 11) -> bool:
    """A mark (``(text, colour)`` of :func:`app.map_export.mark_of`) as a coloured band at ``box``.

    Returns:
        Whether a mark was drawn (``None``: measurements carry none).
    """
    if mark is None:
        return False
    text, colour = mark
    ax = blank_axes(fig, box)
    ax.add_patch(Rectangle((0, 0), 1, 1, facecolor=colour, edgecolor="none",
                           transform=ax.transAxes))
    put_text(ax, 0.5, 0.5, f"⚠ {text}", ha="center", va="center", fontsize=fontsize,
             fontweight="bold", color="#ffffff" if colour != SYNTHETIC_COLOUR else "#1b1b1b")
    return True


def draw_legend(fig: Figure, box: tuple[float, float, float, float], layer: DisplayLayer,
                *, fontsize: float = 9.5, width_chars: int = 44) -> None:
    """The legend of ``layer`` in physical units at ``box`` (figure fractions).

    Continuous layers get their colour ramp with five ticks (S1 in dB, DEM in m, NDVI −1..1);
    class maps a swatch per coloured class;
    RGB composites their bands and stretch. Notes (synthetic, untrained) follow.
    """
    leg = layer_legend(layer)
    ax = blank_axes(fig, box)
    _, fig_h = fig.get_size_inches()
    box_h_in = (box[3] - box[1]) * fig_h
    line = 1.45 * fontsize / 72.0 / box_h_in  # one text line in axes fraction
    y = 1.0
    put_text(ax, 0.0, y, "Legend", va="top", fontsize=fontsize * 0.85, color="#555555")
    y -= line
    for part in wrapped(leg.title, int(width_chars * 0.75))[:3]:
        put_text(ax, 0.0, y, part, va="top", fontsize=fontsize * 1.1, fontweight="bold")
        y -= line * 1.1
    style = layer.style
    if style.kind is StyleKind.CONTINUOUS and style.ramp:
        y -= line * 0.3
        bar_h = line * 1.1
        lut = ramp_lut(style.ramp)[None, :, :]
        ax.imshow(lut, extent=(0.02, 0.98, y - bar_h, y), aspect="auto",
                  interpolation="nearest", zorder=1)
        ax.add_patch(Rectangle((0.02, y - bar_h), 0.96, bar_h, facecolor="none",
                               edgecolor="#444444", linewidth=0.8, zorder=2))
        y -= bar_h
        for pos, label in leg.ticks:
            x = 0.02 + 0.96 * pos
            ax.plot([x, x], [y, y - line * 0.25], color="#444444", linewidth=0.8)
            put_text(ax, x, y - line * 0.3, label, ha="center", va="top", fontsize=fontsize)
        y -= line * 1.5
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    elif style.kind is StyleKind.CLASSES:
        for n, (name, colour) in enumerate(leg.classes):
            if y < line * 2 and n < len(leg.classes) - 1:  # no room left in the box
                put_text(ax, 0.1, y - line * 0.5, f"… {len(leg.classes) - n} more classes",
                         va="center", fontsize=fontsize)
                y -= line
                break
            ax.add_patch(Rectangle((0.0, y - line * 0.9), 0.07, line * 0.8, facecolor=colour,
                                   edgecolor="#444444", linewidth=0.6))
            put_text(ax, 0.1, y - line * 0.5, name, va="center", fontsize=fontsize,
                     max_chars=width_chars - 6)
            y -= line
        y -= line * 0.3
    else:
        for channel, band in zip(("red", "green", "blue"), style.bands, strict=False):
            put_text(ax, 0.0, y, f"{channel}: {band}", va="top", fontsize=fontsize,
                     color={"red": "#b71c1c", "green": "#1b5e20", "blue": "#0d47a1"}[channel])
            y -= line
    for note in leg.notes:
        parts = wrapped(f"⚠ {note}", width_chars + 4)
        if y - len(parts) * line * 0.95 < 0:  # no room: the sheet's mark says it too
            break
        for part in parts:
            put_text(ax, 0.0, y, part, va="top", fontsize=fontsize * 0.85, color="#8a5a00")
            y -= line * 0.95


def draw_overview(fig: Figure, box: tuple[float, float, float, float], extent: Extent,
                  *, half_width_km: float = 700.0, fontsize: float = 8.5) -> None:
    """A locator map: Natural Earth around the map's centre, the map's place marked in red."""
    ax = fig.add_axes(rect(box))
    fig_w, fig_h = fig.get_size_inches()
    aspect = ((box[2] - box[0]) * fig_w) / ((box[3] - box[1]) * fig_h)
    cx, cy = (extent[0] + extent[1]) / 2, (extent[2] + extent[3]) / 2
    half_w = half_width_km * 1000 / ground_scale(extent)
    view = (cx - half_w, cx + half_w, cy - half_w / aspect, cy + half_w / aspect)
    draw_natural_earth(ax, view, linewidth=0.5)
    w, h = extent[1] - extent[0], extent[3] - extent[2]
    if w > (view[1] - view[0]) / 60:
        ax.add_patch(Rectangle((extent[0], extent[2]), w, h, facecolor="none",
                               edgecolor=UNTRAINED_COLOUR, linewidth=1.5, zorder=3))
    ax.plot([cx], [cy], marker="s", markersize=7, markerfacecolor=UNTRAINED_COLOUR,
            markeredgecolor="#ffffff", markeredgewidth=1.0, zorder=4)
    ax.set_xlim(view[0], view[1])
    ax.set_ylim(view[2], view[3])
    ax.set_xticks([])
    ax.set_yticks([])
    lon, lat = _centre_lonlat(extent)
    put_text(ax, 0.02, 0.03, f"{abs(lat):.4f}° {'N' if lat >= 0 else 'S'}, "
             f"{abs(lon):.4f}° {'E' if lon >= 0 else 'W'}", transform=ax.transAxes,
             fontsize=fontsize, va="bottom",
             bbox={"facecolor": "#ffffff", "edgecolor": "none", "alpha": 0.85, "pad": 1.5})
    put_text(ax, 0.0, 1.02, "Overview", transform=ax.transAxes, fontsize=fontsize,
             color="#555555", va="bottom")
