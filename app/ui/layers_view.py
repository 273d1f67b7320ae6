"""What the Layers page needs besides widgets: cached layers and renderings, the layer panel's
preferences (visibility, opacity, order), inspector and statistics tables, added layers.

Loaded rasters and rendered PNGs are cached per process (``st.cache_resource``) by the run's
folder and creation time, so reruns (a toggle, a click) do not re-read or re-render anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import xarray as xr

from app.layers import DisplayLayer, RenderedLayer, display_layers_for, render_png
from app.ui import state

#: Opacity of a layer the first time a run is shown (inputs opaque, outputs see-through).
DEFAULT_OPACITY = {"input": 1.0, "generated": 0.85, "prediction": 0.7}
#: Layers hidden the first time a run is shown.
HIDDEN_BY_DEFAULT = ("Input false colour",)
#: Longest side of the map PNGs.
MAP_MAX_SIZE = 1536
#: The empty entry of a select box.
NO_CHOICE = "—"
#: Prefix of the source names of layers the analyst added.
ADDED_PREFIX = "added_"


# -- Cached data -----------------------------------------------------------------------------------
def run_cache_key(run: Any) -> str:
    """Identity of a stored run's content (a re-saved run gets a new key)."""
    return f"{run.path}|{run.created.isoformat()}|{run.item.properties.get('updated', '')}"


@st.cache_resource(max_entries=4, show_spinner="Reading the run's layers …")
def _run_layers(cache_key: str, _run: Any) -> dict[str, xr.DataArray]:
    return _run.load_layers()


def run_layers(run: Any) -> dict[str, xr.DataArray]:
    """Every raster of a run (the input under ``"input"``), read once per process."""
    return _run_layers(run_cache_key(run), run)


@st.cache_resource(max_entries=256, show_spinner=False)
def _rendered(cache_key: str, layer_name: str, _da: xr.DataArray,
              _layer: DisplayLayer) -> RenderedLayer:
    return render_png(_da, _layer, max_size=MAP_MAX_SIZE)


def rendered(cache_key: str, layer: DisplayLayer, da: xr.DataArray) -> RenderedLayer:
    """The map PNG of ``layer`` (rendered once per ``cache_key`` and layer name)."""
    return _rendered(cache_key, layer.name, da, layer)


# -- Layer panel preferences -----------------------------------------------------------------------
def init_prefs(run_id: str, layers: Sequence[DisplayLayer]) -> None:
    """Set visibility/opacity/order for a newly opened run; append layers added since."""
    if state.LAYERS_RUN_ID.get() != run_id:
        state.LAYERS_RUN_ID.set(run_id)
        state.LAYER_VISIBLE.set({})
        state.LAYER_OPACITY.set({})
        state.LAYER_ORDER.set([])
    visible = dict(state.LAYER_VISIBLE.get())
    opacity = dict(state.LAYER_OPACITY.get())
    names = [layer.name for layer in layers]
    order = [n for n in state.LAYER_ORDER.get() if n in names]
    for layer in layers:
        if layer.name not in visible:
            visible[layer.name] = layer.name not in HIDDEN_BY_DEFAULT
            opacity[layer.name] = DEFAULT_OPACITY.get(layer.kind, 0.85)
        if layer.name not in order:
            order.append(layer.name)
    state.LAYER_VISIBLE.set(visible)
    state.LAYER_OPACITY.set(opacity)
    state.LAYER_ORDER.set(order)


def row_key(name: str) -> str:
    """Key of a layer's row in the panel (also its CSS class ``st-key-<key>``)."""
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return f"layer-row-{slug}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def move(name: str, delta: int) -> None:
    """Move a layer up (``+1``, towards the top) or down (``-1``) in the drawing order."""
    order = list(state.LAYER_ORDER.get())
    if name not in order:
        return
    i = order.index(name)
    j = max(0, min(len(order) - 1, i + delta))
    order.insert(j, order.pop(i))
    state.LAYER_ORDER.set(order)


def bring_to_top(name: str) -> None:
    """Draw ``name`` above every other layer."""
    order = [n for n in state.LAYER_ORDER.get() if n != name]
    state.LAYER_ORDER.set([*order, name])


def bring_chosen_to_top() -> None:
    """``on_change`` of the 'Bring to top' select box: move the chosen layer, reset the box."""
    chosen = st.session_state.get(state.W.BRING_TO_TOP, NO_CHOICE)
    if chosen and chosen != NO_CHOICE:
        bring_to_top(chosen)
    st.session_state[state.W.BRING_TO_TOP] = NO_CHOICE


def overlay_names(compare: tuple[str, str] | None = None) -> list[str]:
    """Layers to draw, bottom to top: the visible ones, plus both sides of a comparison."""
    visible = state.LAYER_VISIBLE.get()
    wanted = set(compare or ())
    return [n for n in state.LAYER_ORDER.get() if visible.get(n) or n in wanted]


# -- Tables ----------------------------------------------------------------------------------------
def _format_value(value: float | str | None) -> str:
    if value is None:
        return "no data"
    if isinstance(value, str):
        return value
    magnitude = abs(value)
    if magnitude >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3f}" if magnitude < 10 else f"{value:.2f}"


def inspector_frame(values: Mapping[str, tuple[float | str | None, str]]) -> pd.DataFrame:
    """The pixel inspector's table: layer, value, units."""
    return pd.DataFrame({
        "Layer": list(values),
        "Value": [_format_value(v) for v, _ in values.values()],
        "Units": [u for _, u in values.values()],
    })


def inspect(run_layers_: Mapping[str, xr.DataArray], added: Mapping[str, xr.DataArray],
            lon: float, lat: float) -> dict[str, tuple[float | str | None, str]]:
    """Values of every layer at (lon, lat): the run's, then the added ones (labelled with their
    file or scene name, as in the layers panel)."""
    from app.layers import sample_point

    values = dict(sample_point(run_layers_, lon, lat))
    for source, da in added.items():
        label = Path(str(da.attrs.get("source_file", source))).name
        for name, value in sample_point({source: da}, lon, lat).items():
            values[f"{name} · {label}"] = value
    return values


def class_table(stats: Mapping[str, Any]) -> pd.DataFrame:
    """LULC / prediction class areas: class, km², % of valid pixels (classes present only)."""
    rows = [c for c in stats.get("classes", []) if c["pixels"] > 0]
    return pd.DataFrame({
        "Class": [c["name"] for c in rows],
        "Area km²": [round(c["area_km2"], 4) for c in rows],
        "% of AOI": [round(c["percent"], 2) for c in rows],
    })


def histogram_frame(stats: Mapping[str, Any]) -> pd.DataFrame:
    """A continuous layer's histogram as (bin centre, pixel count), for ``st.bar_chart``."""
    edges = np.asarray(stats.get("bin_edges", []), dtype=float)
    counts = stats.get("counts", [])
    if edges.size < 2:
        return pd.DataFrame({"value": [], "pixels": []})
    centres = (edges[:-1] + edges[1:]) / 2
    span = float(edges[-1] - edges[0])
    digits = 0 if span >= 100 else (1 if span >= 10 else 3)
    return pd.DataFrame({"value": [f"{c:.{digits}f}" for c in centres], "pixels": counts})


def summary_line(stats: Mapping[str, Any]) -> str:
    """min / mean / max / std of a continuous layer, with units."""
    if stats.get("min") is None:
        return "No valid pixels."
    units = stats.get("units") or ""
    return (f"min {stats['min']:.3g} · p2 {stats['p2']:.3g} · median {stats['p50']:.3g} · "
            f"p98 {stats['p98']:.3g} · max {stats['max']:.3g} {units} · mean "
            f"{stats['mean']:.3g} ± {stats['std']:.3g} · {100 * stats['valid_share']:.1f}% valid "
            f"({stats['area_km2']:.3f} km²)")


def all_display_layers(run_layers_: Mapping[str, xr.DataArray],
                       added: Mapping[str, xr.DataArray]) -> list[DisplayLayer]:
    """Display layers of the run followed by those of the added rasters (whose names carry
    their file name, so they never collide with the run's)."""
    out = list(display_layers_for(run_layers_))
    for source, da in added.items():
        label = Path(str(da.attrs.get("source_file", source))).name
        out.extend(replace(layer, name=f"{layer.name} · {label}")
                   for layer in display_layers_for({source: da}))
    return out
