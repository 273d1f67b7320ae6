"""What the Layers page needs besides widgets: cached layers, the layer panel's preferences
(visibility, opacity, order, stretch, ramp), the map's changing layers (tile URLs of
:mod:`app.tiles`), inspector and statistics tables, added layers (bounded per session by
``TERRALENS_SESSION_LAYERS_MB``).

Run layers reach the map as tiles served on the app's own port; layers the analyst added (not in
the run store) too, from the copy the app holds of them (:mod:`app.held_tiles`). Loaded rasters,
statistics and the snapshot PNGs are cached per process in one :class:`app.memory.BytesLRU`
bounded by ``TERRALENS_LAYER_CACHE_MB``, by the run's folder and creation time, so reruns (a
toggle, a click) re-read and re-render nothing while the least recently used runs make room.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pandas as pd
import streamlit as st
import xarray as xr

from app.added_layers import added_cache_key
from app.colors import CVD_SAFE_RAMPS, Style, StyleKind
from app.escaping import markdown_code
from app.layers import DisplayLayer, RenderedLayer, display_layers_for, layer_statistics, render_png
from app.map_rasters import TileOverlay
from app.memory import BytesLRU, keep_newest
from app.settings import load_settings
from app.tiles import NATIVE_ZOOM_EXTRA, layer_extent, tile_url_template
from app.ui import state

#: Opacity of a layer the first time a run is shown (inputs opaque, outputs see-through).
DEFAULT_OPACITY = {"input": 1.0, "generated": 0.85, "prediction": 0.7}
#: Stretches a continuous layer can be drawn with (the first is its colour table's range).
STRETCHES = ("Colour table range", "2–98 %", "Min–max", "Custom")
#: Ramps offered for continuous layers: the layer's own, then colour-blind-safe ones.
LAYER_RAMP = "Layer default"
RAMP_CHOICES = (LAYER_RAMP, *CVD_SAFE_RAMPS, "gray")
#: Longest side of the map PNGs.
MAP_MAX_SIZE = 1536
#: The empty entry of a select box.
NO_CHOICE = "—"
#: Most entries (runs, PNGs, statistics) in the layer cache, whatever their size.
LAYER_CACHE_ENTRIES = 512
#: Prefix of the source names of layers the analyst added.
ADDED_PREFIX = "added_"


# -- Cached data -----------------------------------------------------------------------------------
def run_cache_key(run: Any) -> str:
    """Identity of a stored run's content (a re-saved run gets a new key)."""
    return f"{run.path}|{run.created.isoformat()}|{run.item.properties.get('updated', '')}"


@st.cache_resource(show_spinner=False)
def _layer_cache(max_bytes: int) -> BytesLRU[Any]:
    return BytesLRU(max_bytes, max_entries=LAYER_CACHE_ENTRIES)


def layer_cache() -> BytesLRU[Any]:
    """The process's cache of run rasters, map PNGs and statistics, bounded by
    ``TERRALENS_LAYER_CACHE_MB`` (shared by every session)."""
    return _layer_cache(int(load_settings().layer_cache_mb * 2**20))


def run_layers(run: Any) -> dict[str, xr.DataArray]:
    """Every raster of a run (the input under ``"input"``), read once while it stays cached."""
    cache = layer_cache()
    key = ("layers", run_cache_key(run))
    cached = cache.get(key)
    if cached is not None:
        return cast(dict[str, xr.DataArray], cached)
    with st.spinner("Reading the run's layers …"):
        return cast(dict[str, xr.DataArray], cache.put(key, run.load_layers()))


def rendered(cache_key: str, layer: DisplayLayer, da: xr.DataArray) -> RenderedLayer:
    """The map PNG of ``layer`` (rendered once per ``cache_key`` and layer name)."""
    return cast(RenderedLayer, layer_cache().get_or_create(
        ("png", cache_key, layer.name), lambda: render_png(da, layer, max_size=MAP_MAX_SIZE)))


def statistics(cache_key: str, layer: DisplayLayer, da: xr.DataArray) -> dict[str, Any]:
    """:func:`app.layers.layer_statistics` of ``layer``, computed once per ``cache_key``."""
    return cast(dict[str, Any], layer_cache().get_or_create(
        ("stats", cache_key, layer.name), lambda: layer_statistics(da, layer)))


def add_layer(added: dict[str, xr.DataArray], source: str, da: xr.DataArray
              ) -> dict[str, xr.DataArray]:
    """``added`` with ``da`` added under ``source``, the oldest added layers dropped (with a
    toast, which outlives the rerun that follows) beyond ``TERRALENS_SESSION_LAYERS_MB``."""
    budget = int(load_settings().session_layers_mb * 2**20)
    kept, dropped = keep_newest({**{k: v for k, v in added.items() if k != source},
                                 source: da}, budget)
    if dropped:
        names = ", ".join(markdown_code(str(added[n].attrs.get("source_file", n)))
                          for n in dropped)
        st.toast(f"Removed the oldest added layers ({names}) to stay within this session's "
                 "memory for added layers (TERRALENS_SESSION_LAYERS_MB).", icon=":material/memory:")
    return kept


# -- Layer panel preferences -----------------------------------------------------------------------
def newest_output(layers: Sequence[DisplayLayer]) -> str | None:
    """The layer shown when a run is first opened: the last output (else the first layer);
    an ensemble's ``[U]`` layers are not outputs here (its mean or mode is)."""
    outputs = [layer.name for layer in layers if layer.kind not in ("input", "uncertainty")]
    if outputs:
        return outputs[-1]
    return layers[0].name if layers else None


def init_prefs(run_id: str, layers: Sequence[DisplayLayer]) -> None:
    """Set visibility/opacity/order for a newly opened run (only its newest output visible);
    append layers added since (added layers start visible, on top)."""
    if state.LAYERS_RUN_ID.get() != run_id:
        state.LAYERS_RUN_ID.set(run_id)
        state.LAYER_VISIBLE.set({})
        state.LAYER_OPACITY.set({})
        state.LAYER_ORDER.set([])
        state.LAYER_STRETCH.set({})
        state.LAYER_RAMP.set({})
        state.INSPECT_POINT.clear()
    visible = dict(state.LAYER_VISIBLE.get())
    opacity = dict(state.LAYER_OPACITY.get())
    names = [layer.name for layer in layers]
    order = [n for n in state.LAYER_ORDER.get() if n in names]
    first_open = not visible
    newest = newest_output(layers)
    for layer in layers:
        if layer.name not in visible:
            added = layer.source.startswith(ADDED_PREFIX)
            visible[layer.name] = (layer.name == newest or added) if first_open else True
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


def compare_defaults(order: Sequence[str], visible: Mapping[str, bool]) -> tuple[str, str]:
    """Left and right of a new comparison: the two top visible layers (filled up with the
    next layers from the top when fewer are visible)."""
    top_first = list(reversed(order))
    picks = [n for n in top_first if visible.get(n)][:2]
    picks += [n for n in top_first if n not in picks][: 2 - len(picks)]
    if len(picks) < 2:
        picks = (picks * 2)[:2]
    return picks[1], picks[0]


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


def visible_values(values: Mapping[str, tuple[float | str | None, str]],
                   shown: Sequence[DisplayLayer]) -> dict[str, tuple[float | str | None, str]]:
    """The inspector's values of the layers on the map, top first, named for analysts.

    A class map brings its probability (``[G] LULC probability``), an RGB composite its three
    bands (``Input B04``...).
    """
    from app.layer_names import analyst_name

    out: dict[str, tuple[float | str | None, str]] = {}
    for layer in reversed(list(shown)):
        base, _, extra = layer.name.partition(" · ")
        suffix = f" · {extra}" if extra else ""
        if layer.style.kind is StyleKind.RGB:
            prefix = base.split(" ")[0]  # "Input"
            keys = [f"{prefix} {band}{suffix}" for band in layer.bands]
        else:
            keys = [layer.name, f"{base} probability{suffix}"]
        for k in keys:
            if k in values:
                label = f"{analyst_name(layer)} · {k}" if k == layer.name else k
                out[label] = values[k]
    return out


def base_url_path() -> str:
    """Streamlit's ``server.baseUrlPath`` (tile URLs start with it)."""
    return str(st.get_option("server.baseUrlPath") or "")


def class_table(stats: Mapping[str, Any]) -> pd.DataFrame:
    """LULC / prediction class areas: class, km², % of valid pixels (classes present only)."""
    rows = [c for c in stats.get("classes", []) if c["pixels"] > 0]
    return pd.DataFrame({
        "Class": [c["name"] for c in rows],
        "Area km²": [round(c["area_km2"], 4) for c in rows],
        "% of AOI": [round(c["percent"], 2) for c in rows],
    })


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
                       added: Mapping[str, xr.DataArray], *,
                       run_key: str | None = None) -> list[DisplayLayer]:
    """Display layers of the run followed by those of the added rasters (whose names carry
    their file name, so they never collide with the run's).

    With ``run_key`` (:func:`run_cache_key`), the layers and their automatic stretches
    (percentiles over every pixel) are worked out once per run and added raster, not on every
    rerun of the page.
    """
    cache = layer_cache()

    def of(key: str | None, rasters: Mapping[str, xr.DataArray]) -> list[DisplayLayer]:
        if key is None:
            return display_layers_for(rasters)
        return cast(list[DisplayLayer], cache.get_or_create(
            ("display", key), lambda: display_layers_for(rasters)))

    out = list(of(run_key, run_layers_))
    for source, da in added.items():
        label = Path(str(da.attrs.get("source_file", source))).name
        out.extend(replace(layer, name=f"{layer.name} · {label}")
                   for layer in of(added_cache_key(source) if run_key else None, {source: da}))
    return out


# -- Stretch and colours ---------------------------------------------------------------------------
def styled(layer: DisplayLayer, stats: Mapping[str, Any] | None, stretch: str,
           custom: tuple[float, float] | None = None, ramp: str = LAYER_RAMP) -> DisplayLayer:
    """``layer`` drawn with a chosen stretch and ramp (class maps are returned unchanged).

    Args:
        layer: A display layer.
        stats: Its :func:`statistics` (for the percentile and min–max stretches).
        stretch: One of :data:`STRETCHES`.
        custom: ``(low, high)`` for the ``"Custom"`` stretch.
        ramp: One of :data:`RAMP_CHOICES` (continuous layers).
    """
    style = layer.style
    if style.kind is StyleKind.CLASSES:
        return layer
    lo, hi = style.vmin, style.vmax
    if stretch == "2–98 %" and stats and stats.get("p2") is not None:
        lo, hi = float(stats["p2"]), float(stats["p98"])
    elif stretch == "Min–max" and stats and stats.get("min") is not None:
        lo, hi = float(stats["min"]), float(stats["max"])
    elif stretch == "Custom" and custom is not None:
        lo, hi = float(custom[0]), float(custom[1])
    if not hi > lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-6)
    new_ramp = style.ramp
    if style.kind is StyleKind.CONTINUOUS and ramp != LAYER_RAMP:
        new_ramp = ramp
    return replace(layer, style=Style(style.kind, ramp=new_ramp, vmin=lo, vmax=hi,
                                      classes=style.classes, bands=style.bands))


def rgb_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """Percentile-free stats of an RGB composite as one range over its bands."""
    bands = stats.get("bands", {})
    mins = [b["min"] for b in bands.values() if b.get("min") is not None]
    maxs = [b["max"] for b in bands.values() if b.get("max") is not None]
    return {"min": min(mins), "max": max(maxs)} if mins and maxs else {}


# -- The map's changing layers ---------------------------------------------------------------------
def tile_overlay(run: Any, layer: DisplayLayer, opacity: float,
                 base_url_path: str = "") -> TileOverlay:
    """A run layer as a tile layer of :mod:`app.tiles` (drawn with ``layer``'s style)."""
    bounds, zoom = layer_extent(run, layer.source)
    return TileOverlay(name=layer.name, opacity=float(opacity), bounds=bounds,
                       max_native_zoom=zoom + NATIVE_ZOOM_EXTRA,
                       url=tile_url_template(run, layer, base_url_path=base_url_path,
                                             style=layer.style))


def added_overlay(layer: DisplayLayer, da: xr.DataArray, layers_of_source: Sequence[DisplayLayer],
                  opacity: float, base_url_path: str = "") -> TileOverlay:
    """A layer the analyst added as a tile layer: its raster is held by the app
    (:func:`app.held_tiles.held_rasters`, written once per process) and drawn with ``layer``'s
    style.

    Args:
        layer: The (styled) display layer to draw.
        da: Its raster.
        layers_of_source: Every display layer of that raster (the ids the tiles answer to).
        opacity: 0..1.
        base_url_path: Streamlit's ``server.baseUrlPath``.
    """
    from app.added_layers import added_cache_key
    from app.held_tiles import held_overlay, held_rasters

    held = held_rasters().hold(added_cache_key(layer.source), da, layers_of_source)
    return held_overlay(held, layer, opacity, base_url_path=base_url_path)
