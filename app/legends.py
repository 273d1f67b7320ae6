"""Legends: what a layer's colours mean, in physical units, drawn by Streamlit beside the map.

Legends are never put on the folium map (a branca colour map injects d3 from a CDN and breaks
offline maps); :func:`legend_html` gives self-contained HTML for ``st.html``/``st.markdown``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.colors import StyleKind, ramp_css

if TYPE_CHECKING:
    from app.layers import DisplayLayer

#: Note shown with every synthetic layer.
UNTRAINED_NOTE = "Untrained weights: this output is noise, for testing only."
PREDICTION_NOTE = "Model prediction, not a measurement."


@dataclass(frozen=True)
class Legend:
    """What a layer's colours mean, for Streamlit to draw beside the map.

    Attributes:
        title: Title with units, e.g. ``"S1GRD VV (dB)"``.
        kind: Gradient (continuous), class swatches or an RGB composite.
        units: Physical units of the values.
        gradient_css: CSS ``linear-gradient`` of the ramp (continuous layers).
        ticks: (position 0..1 along the gradient, label in physical units).
        classes: (class name, ``"#rrggbb"``) swatches (class maps, transparent classes left out).
        notes: Warnings to show with the legend (synthetic, untrained, prediction).
    """

    title: str
    kind: StyleKind
    units: str
    gradient_css: str | None = None
    ticks: tuple[tuple[float, str], ...] = ()
    classes: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()



def _format_tick(value: float, span: float) -> str:
    if span >= 100:
        text = f"{value:.0f}"
    elif span >= 10:
        text = f"{value:.1f}".rstrip("0").rstrip(".")
    else:
        text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in {"-0", ""} else text


def legend(layer: DisplayLayer) -> Legend:
    """The legend of a display layer, in physical units.

    Continuous layers get a gradient with five ticks between the display range's ends; class
    maps get one swatch per coloured class; synthetic and untrained layers carry a warning.
    """
    notes: list[str] = []
    if layer.synthetic:
        notes.append(SYNTHETIC_NOTE)
    elif layer.kind == "prediction":
        notes.append(PREDICTION_NOTE)
    if layer.untrained:
        notes.append(UNTRAINED_NOTE)
    style = layer.style
    if style.kind is StyleKind.CLASSES:
        swatches = tuple((c.name, c.colour) for c in style.classes if c.colour is not None)
        return Legend(title=layer.title, kind=style.kind, units=layer.units, classes=swatches,
                      notes=tuple(notes))
    if style.kind is StyleKind.RGB:
        stretch = f"stretch {style.vmin:g}–{style.vmax:g}"
        units = f"{stretch} {layer.units}".strip()
        return Legend(title=f"{layer.title} ({units})", kind=style.kind, units=layer.units,
                      notes=tuple(notes))
    units = layer.units or "unitless"
    span = style.vmax - style.vmin
    ticks = tuple(
        (pos, _format_tick(style.vmin + pos * span, span)) for pos in np.linspace(0, 1, 5)
    )
    return Legend(
        title=f"{layer.title} ({units})", kind=style.kind, units=layer.units,
        gradient_css=ramp_css(style.ramp or "gray"),
        ticks=tuple((float(p), t) for p, t in ticks), notes=tuple(notes),
    )


def legend_html(leg: Legend) -> str:
    """HTML of a legend, self-contained (inline styles), for ``st.html``/``st.markdown``."""
    title = html.escape(leg.title)
    parts = [f'<div class="terralens-legend" style="font-size:0.85rem;margin:0.25rem 0 0.6rem">'
             f'<div style="font-weight:600;margin-bottom:0.2rem">{title}</div>']
    if leg.gradient_css:
        parts.append(
            f'<div style="height:12px;border-radius:2px;border:1px solid #888;'
            f'background:{html.escape(leg.gradient_css)}"></div>'
            '<div style="position:relative;height:1.1rem;font-size:0.75rem">'
        )
        for pos, label in leg.ticks:
            shift = "0" if pos <= 0 else ("-100%" if pos >= 1 else "-50%")
            parts.append(
                f'<span style="position:absolute;left:{pos * 100:.1f}%;'
                f'transform:translateX({shift})">{html.escape(label)}</span>'
            )
        parts.append("</div>")
    for name, colour in leg.classes:
        parts.append(
            '<div style="display:flex;align-items:center;gap:0.4rem;line-height:1.35">'
            f'<span style="display:inline-block;width:0.9rem;height:0.9rem;border:1px solid #888;'
            f'background:{html.escape(colour)}"></span>{html.escape(name)}</div>'
        )
    for note in leg.notes:
        parts.append(f'<div style="color:#f0b429;font-size:0.75rem;margin-top:0.2rem">'
                     f"⚠ {html.escape(note)}</div>")
    parts.append("</div>")
    return "".join(parts)
