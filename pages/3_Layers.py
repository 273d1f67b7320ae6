"""Layers page: the map workbench for one run. The map is the page: the layer list (one line per
layer, opacity/stretch/order on demand), basemap, compare and pixel inspector beside it, the
legends of the visible layers under it; statistics, downloads and added data below.
``?run=<id>`` in the URL opens that run."""

from __future__ import annotations

import time
from functools import partial

import streamlit as st
from streamlit_folium import st_folium

from app import added_layers
from app.charts import class_chart, histogram_chart
from app.colors import StyleKind
from app.escaping import markdown_code, markdown_text
from app.exports import polygons_bytes, run_zip_bytes, vector_classes
from app.layer_names import layer_label, layer_tooltip, source_label
from app.layers import DisplayLayer
from app.legends import legend, legend_html
from app.map_export import EXPORT_WIDTHS, map_png, sheet_info
from app.map_rasters import raster_group
from app.map_tools import basemap_choices
from app.maps import SYNTHETIC_MAP_NOTE, build_map
from app.rasters import layer_to_cog_bytes, read_layer, read_layer_window
from app.report_pdf import report_pdf
from app.runs import RunStore
from app.ui import layers_view as view
from app.ui import map_view, state, widgets
from app.ui.state import W

settings = widgets.load_settings_or_stop()
st.title("Layers")

# The URL carries the run (shareable link); the state remembers it between pages.
url_run = st.query_params.get("run")
if url_run and url_run != state.RUN_ID.get():
    state.RUN_ID.set(url_run)
run_id = state.RUN_ID.get()
if not run_id:
    st.info("No run is open: run TerraMind on a scene, or reopen a stored run.")
    widgets.page_link("run", "Run TerraMind")
    widgets.page_link("runs", "Stored runs")
    st.stop()
if st.query_params.get("run") != run_id:
    st.query_params["run"] = run_id

run = None
with widgets.guard("Opening the run"):
    run = RunStore(settings.runs_dir).open(run_id)
if run is None:
    widgets.page_link("runs", "Choose another stored run")
    st.stop()

st.caption(f"{markdown_text(run.title)} · run {markdown_code(run.id)} · "
           "share this page's URL to reopen it")
if run.synthetic:
    widgets.synthetic_badge({"untrained": run.untrained})

layers = None
with widgets.guard("Reading the run's layers"):
    layers = view.run_layers(run)
if layers is None:
    widgets.page_link("runs", "Choose another stored run")
    st.stop()
added = state.ADDED_LAYERS.get()
display = view.all_display_layers(layers, added, run_key=view.run_cache_key(run))
by_name = {layer.name: layer for layer in display}
source_of = {**layers, **added}
key = view.run_cache_key(run)
view.init_prefs(run.id, display)


def cache_of(layer: DisplayLayer) -> str:
    """Cache key of a layer's source: the run's, or the added raster's."""
    return key if layer.source in layers else added_layers.added_cache_key(layer.source)


def drawn(layer: DisplayLayer) -> DisplayLayer:
    """The layer with the analyst's stretch and ramp."""
    if layer.style.kind is StyleKind.CLASSES:
        return layer
    choice, low, high = state.LAYER_STRETCH.get().get(layer.name,
                                                     (view.STRETCHES[0], None, None))
    stats = None
    if choice in view.STRETCHES[1:3]:
        stats = view.statistics(cache_of(layer), layer, source_of[layer.source])
        if layer.style.kind is StyleKind.RGB:
            stats = view.rgb_stats(stats)
    custom = (low, high) if low is not None and high is not None else None
    ramp = state.LAYER_RAMP.get().get(layer.name, view.LAYER_RAMP)
    return view.styled(layer, stats, choice, custom, ramp)


@st.fragment
def map_and_layers() -> None:
    """The map, the layer list, the legends and the pixel inspector. A fragment: a toggle, an
    opacity, a stretch, a basemap or a click on the map reruns only this part of the page, not
    the statistics, downloads, added data and reality-check panels below it."""
    started = time.perf_counter()
    # A click on the map arrives in the component's state before this run: mark it right away.
    returned = st.session_state.get(W.LAYERS_MAP) or {}
    map_view.remember("layers", run.id, returned)
    clicked_point = returned.get("last_clicked") if isinstance(returned, dict) else None
    if clicked_point:
        state.INSPECT_POINT.set((float(clicked_point["lat"]), float(clicked_point["lng"])))

    map_col, side_col = st.columns([3, 1.25], gap="small")

    # -- Layer list (one line per layer; opacity, stretch and order on demand) ---------------------
    with side_col:
        st.markdown("**Layers** · the top of the list is drawn on top")
        visible = dict(state.LAYER_VISIBLE.get())
        opacity = dict(state.LAYER_OPACITY.get())
        stretch_prefs = dict(state.LAYER_STRETCH.get())
        ramp_prefs = dict(state.LAYER_RAMP.get())
        order = state.LAYER_ORDER.get()
        for position, name in enumerate(reversed(order)):
            layer = by_name[name]
            row = st.container(key=view.row_key(name))
            c_check, c_more = row.columns([7, 1], vertical_alignment="center", gap="small")
            visible[name] = c_check.checkbox(markdown_text(layer_label(layer)),
                                             value=visible.get(name, False),
                                             key=W.layer("visible", name),
                                             help=markdown_text(layer_tooltip(layer)))
            with c_more.popover("", icon=":material/tune:",
                                help=f"Opacity, stretch and order of {markdown_text(name)}"):
                opacity[name] = st.slider(f"Opacity of {markdown_text(name)}", 0.0, 1.0,
                                          float(opacity.get(name, 1.0)), 0.05,
                                          key=W.layer("opacity", name))
                b_up, b_down = st.columns(2)
                b_up.button("Up", icon=":material/arrow_upward:", key=W.layer("up", name),
                            disabled=position == 0, on_click=view.move, args=(name, 1))
                b_down.button("Down", icon=":material/arrow_downward:", key=W.layer("down", name),
                              disabled=position == len(order) - 1, on_click=view.move,
                              args=(name, -1))
                if layer.style.kind is not StyleKind.CLASSES:
                    saved = stretch_prefs.get(name, (view.STRETCHES[0], None, None))
                    choice = st.selectbox("Stretch", view.STRETCHES,
                                          index=view.STRETCHES.index(saved[0]),
                                          key=W.layer("stretch", name))
                    low, high = saved[1], saved[2]
                    if choice == "Custom":
                        n_lo, n_hi = st.columns(2)
                        low = n_lo.number_input("Low", value=float(
                            layer.style.vmin if low is None else low), key=W.layer("low", name),
                            format="%.4g")
                        high = n_hi.number_input("High", value=float(
                            layer.style.vmax if high is None else high), key=W.layer("high", name),
                            format="%.4g")
                    stretch_prefs[name] = (choice, low, high)
                if layer.style.kind is StyleKind.CONTINUOUS:
                    ramp_prefs[name] = st.selectbox(
                        "Colours", view.RAMP_CHOICES,
                        index=view.RAMP_CHOICES.index(ramp_prefs.get(name, view.LAYER_RAMP)),
                        key=W.layer("ramp", name),
                        help="viridis, cividis, magma and BrBG read for colour-blind viewers too.")
        state.LAYER_VISIBLE.set(visible)
        state.LAYER_OPACITY.set(opacity)
        state.LAYER_STRETCH.set(stretch_prefs)
        state.LAYER_RAMP.set(ramp_prefs)

        choices = basemap_choices(settings.basemap_url)
        names_b = list(choices)
        saved_basemap = state.BASEMAP.get()
        at = names_b.index(saved_basemap) if saved_basemap in names_b else 0
        basemap = st.selectbox("Basemap", names_b, index=at, key=W.BASEMAP)
        state.BASEMAP.set(basemap)

        compare = None
        if st.toggle("Compare two layers (swipe)", key=W.COMPARE):
            names = list(reversed(order))
            left_default, right_default = view.compare_defaults(order, visible)
            left = st.selectbox("Left", names, index=names.index(left_default),
                                key=W.COMPARE_LEFT)
            right = st.selectbox("Right", names, index=names.index(right_default),
                                 key=W.COMPARE_RIGHT)
            if left == right:
                st.warning("Pick two different layers to compare.")
            else:
                compare = (left, right)
        state.LAYER_COMPARE.set(compare)

    shown = view.overlay_names(compare)
    styled_layers = {name: drawn(by_name[name]) for name in shown}

    # -- The map: fixed (AOI, tools, offline outline); layers change in place ----------------------
    with map_col:
        tiles = []
        with widgets.guard("Preparing the layers"):
            for name in shown:
                layer = styled_layers[name]
                alpha = float(opacity.get(name, 1.0))
                if layer.source in layers:
                    tiles.append(view.tile_overlay(run, layer, alpha, view.base_url_path()))
                else:  # added data: held by the app and served as tiles too (app/held_tiles.py)
                    tiles.append(view.added_overlay(
                        layer, source_of[layer.source],
                        [x for x in display if x.source == layer.source], alpha,
                        view.base_url_path()))
        with widgets.guard("Drawing the map"):
            fmap = build_map(aoi=run.request.aoi, basemap=None, layer_control=False,
                             side_by_side=True, static_url=widgets.static_url(),
                             note=SYNTHETIC_MAP_NOTE if run.synthetic else None)
            group = raster_group(basemap=choices[basemap], tiles=tiles,
                                 marker=state.INSPECT_POINT.get(), compare=compare)
            result = st_folium(fmap, key=W.LAYERS_MAP, height=560, use_container_width=True,
                               returned_objects=["last_clicked", *map_view.VIEW_OBJECTS],
                               feature_group_to_add=group,
                               **map_view.view_args("layers", run.id, f"{run.id}|{run.synthetic}"))
            map_view.remember("layers", run.id, result)
            point = (result or {}).get("last_clicked")
            if point and (float(point["lat"]), float(point["lng"])) != state.INSPECT_POINT.get():
                state.INSPECT_POINT.set((float(point["lat"]), float(point["lng"])))
                widgets.rerun_fragment()
        # Legends of the visible layers, side by side under the map (top layer first).
        legend_layers = [styled_layers[n] for n in reversed(shown)]
        if legend_layers:
            for column, layer in zip(st.columns(min(4, len(legend_layers))), legend_layers[:4],
                                     strict=False):
                column.html(legend_html(legend(layer)))
            if len(legend_layers) > 4:
                st.caption(f"{len(legend_layers) - 4} more visible layer(s): hide some to see "
                           "their legends.")
        else:
            st.caption("No layer is visible: tick one in the list.")

    # -- Pixel inspector, beside the map -----------------------------------------------------------
    with side_col:
        point = state.INSPECT_POINT.get()
        st.markdown("**Pixel inspector**")
        if point is None:
            st.caption("Click the map to see the value of every visible layer there.")
        else:
            lat, lon = point
            st.caption(f"{lat:.5f}, {lon:.5f} (lat, lon) · marked on the map")
            with widgets.guard("Inspecting the pixel"):
                values = view.visible_values(view.inspect(layers, added, lon, lat),
                                             [by_name[n] for n in shown])
                st.dataframe(view.inspector_frame(values), hide_index=True, width="stretch")
    state.LAYERS_FRAGMENT_S.set(time.perf_counter() - started)


map_and_layers()

# -- Inspector, statistics, downloads, added data --------------------------------------------------
stats_tab, download_tab, add_tab = st.tabs(["Statistics", "Downloads", "Add data"])
with stats_tab:
    names = [n for n in reversed(state.LAYER_ORDER.get())
             if by_name[n].style.kind is not StyleKind.RGB]
    if names:
        chosen = st.selectbox("Layer", names, key=W.STATS_LAYER,
                              format_func=lambda n: layer_label(by_name[n]))
        layer = by_name[chosen]
        if layer.synthetic:
            st.caption("Statistics of generated (synthetic) values, not of measurements.")
        with widgets.guard("Computing statistics"):
            stats = view.statistics(cache_of(layer), layer, source_of[layer.source])
            if stats["kind"] == "classes":
                st.markdown(f"Valid area **{stats['total_km2']:.3f} km²**")
                t_col, c_col = st.columns([1, 1.3])
                t_col.dataframe(view.class_table(stats), hide_index=True, width="stretch")
                c_col.altair_chart(class_chart(stats), width="stretch")
            else:
                st.markdown(view.summary_line(stats))
                st.altair_chart(histogram_chart(
                    stats, f"{layer.title} ({layer.units or 'unitless'})"), width="stretch")

with download_tab:
    st.caption("GeoTIFFs are Cloud-Optimized, in the scene's CRS, with units, nodata and "
               "provenance tags.")
    for source, da in source_of.items():
        st.download_button(
            f"GeoTIFF: {markdown_text(source_label(source, da))}",
            data=partial(layer_to_cog_bytes, da),
            file_name=f"{run.id}_{source}.tif", mime="image/tiff", on_click="ignore",
            key=W.layer("download", source), icon=":material/download:",
        )
    for source, da in source_of.items():
        if not vector_classes(da):
            continue
        v1, v2 = st.columns(2)
        v1.download_button(
            f"Polygons (GeoJSON): {markdown_text(source_label(source, da))}",
            data=partial(polygons_bytes, da, "geojson"),
            file_name=f"{run.id}_{source}.geojson", mime="application/geo+json",
            on_click="ignore", key=W.layer("geojson", source), icon=":material/polyline:",
        )
        v2.download_button(
            f"Polygons (GeoPackage): {markdown_text(source_label(source, da))}",
            data=partial(polygons_bytes, da, "gpkg"),
            file_name=f"{run.id}_{source}.gpkg", mime="application/geopackage+sqlite3",
            on_click="ignore", key=W.layer("gpkg", source), icon=":material/polyline:",
        )
    st.download_button("Whole run (zip: COGs + STAC Item + README)",
                       data=partial(run_zip_bytes, run), file_name=f"terralens-run-{run.id}.zip",
                       mime="application/zip", on_click="ignore", key=W.DOWNLOAD_ZIP,
                       icon=":material/folder_zip:")
    # Every layer, top first, starting at the top visible one: a toggle reruns only the map's
    # fragment, so this list must not depend on what is visible right now.
    every = list(reversed(state.LAYER_ORDER.get()))
    shown = view.overlay_names(state.LAYER_COMPARE.get())
    s_layer, s_width = st.columns([3, 1])
    snap = s_layer.selectbox("Map (PNG) and report of", every,
                             index=every.index(shown[-1]) if shown else 0,
                             format_func=lambda n: layer_label(by_name[n]),
                             key=W.SNAPSHOT_LAYER)
    width = s_width.selectbox("PNG width (px)", EXPORT_WIDTHS, key=W.SNAPSHOT_WIDTH)
    snap_layer = drawn(by_name[snap]) if snap else None
    d_png, d_pdf = st.columns(2)
    if snap_layer is not None:
        snap_rendered = partial(view.rendered, cache_of(snap_layer), snap_layer,
                                source_of[snap_layer.source])
        d_png.download_button(
            "PNG snapshot", data=lambda: map_png(
                snap_rendered(), snap_layer, width_px=int(width), info=sheet_info(run),
                basemap_url=settings.basemap_url),
            file_name=f"{run.id}_{snap_layer.source}.png", mime="image/png", on_click="ignore",
            key=W.DOWNLOAD_PNG, icon=":material/image:",
            help="The layer as a map: basemap, legend, scale bar, north arrow, dates and marks.",
        )
    d_pdf.download_button(
        "PDF report of the run", data=lambda: report_pdf(
            run, layers, map_layer=snap_layer,
            rendered=snap_rendered() if snap_layer is not None else None,
            basemap_url=settings.basemap_url),
        file_name=f"terralens-report-{run.id}.pdf", mime="application/pdf", on_click="ignore",
        key=W.DOWNLOAD_PDF, icon=":material/picture_as_pdf:",
        help="One page: the map, its legend, statistics of every layer and the provenance.",
    )

with add_tab:
    st.caption("Add your own GeoTIFF: it is drawn with the same colour tables, legends and "
               "inspector (modality guessed from band names or the file name).")
    upload = st.file_uploader("GeoTIFF", type=["tif", "tiff"], key=W.ADD_UPLOAD)
    if upload is not None and st.button("Add to map", key=W.ADD_BUTTON):
        with widgets.guard("Adding the layer"):
            data = upload.getvalue()
            source = added_layers.added_source_name(upload.name, data)
            new = added_layers.prepare_added(
                read_layer(data, max_pixels=settings.max_read_pixels), upload.name)
            state.ADDED_LAYERS.set(view.add_layer(added, source, new))
            st.rerun()
    url = st.text_input("…or the URL of a Cloud-Optimized GeoTIFF", key=W.ADD_URL,
                        placeholder="https://example.org/data/dem.tif")
    if url and st.button("Add from URL", key=W.ADD_URL_BUTTON):
        with (widgets.guard("Reading the GeoTIFF URL"),
              st.spinner("Reading the window over the run…")):
            raw = read_layer_window(url, run.aoi.bbox,
                                    timeout_s=settings.stac_timeout_s,
                                    allow_private=settings.allow_private_urls,
                                    max_pixels=settings.max_read_pixels)
            name = url.rstrip("/").rsplit("/", 1)[-1] or "remote.tif"
            source = added_layers.added_source_name(name, url.encode())
            state.ADDED_LAYERS.set(
                view.add_layer(added, source, added_layers.prepare_added(raw, name)))
            st.rerun()
    st.markdown("**…or a scene from the catalog** over this run's area (e.g. a real "
                "Sentinel-1 acquisition to compare with the generated one)")
    k1, k2, k3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    collection = k1.selectbox("Collection", ["sentinel-1-rtc", "sentinel-2-l2a"],
                              key=W.ADD_COLLECTION)
    days = k2.number_input("± days", 0, 365, 10, key=W.ADD_DAYS)
    if k3.button("Find scenes", key=W.ADD_FIND):
        with widgets.guard("Searching the catalog"):
            state.ADD_CANDIDATES.set(added_layers.catalog_candidates(
                run, collection, int(days), stac_url=settings.stac_url,
                timeout_s=settings.stac_timeout_s))
    candidates = state.ADD_CANDIDATES.get()
    if candidates is not None and not candidates:
        st.info("No scene of that collection over this area in that window.")
    elif candidates:
        pick = st.selectbox("Scene", [c.id for c in candidates], key=W.ADD_SCENE)
        if st.button("Add scene", key=W.ADD_SCENE_BUTTON):
            chosen = next(c for c in candidates if c.id == pick)
            with widgets.guard("Reading the scene"), st.spinner("Reading the scene over the run …"):
                source, layer_da = added_layers.load_catalog_layer(
                    chosen, run, stac_url=settings.stac_url, timeout_s=settings.stac_timeout_s,
                    subscription_key=settings.pc_subscription_key,
                    max_pixels=settings.max_read_pixels)
                state.ADDED_LAYERS.set(view.add_layer(added, source, layer_da))
                st.rerun()
    if added:
        for source in list(added):
            c1, c2 = st.columns([4, 1])
            c1.markdown(markdown_code(added[source].attrs.get('source_file', source)))
            if c2.button("Remove", key=W.layer("remove", source)):
                state.ADDED_LAYERS.set({k: v for k, v in added.items() if k != source})
                st.rerun()

# -- Reality check (app/ui/reality_view.py) --------------------------------------------------------
from app.ui import reality_view  # noqa: E402  (kept inside this block)

reality_view.render(run, settings)
# -- end of the reality check ----------------------------------------------------------------------
