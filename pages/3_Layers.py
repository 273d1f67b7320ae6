"""Layers page: the map workbench for one run — layers panel, legends, compare, inspector,
statistics, downloads and added data. ``?run=<id>`` in the URL opens that run."""

from __future__ import annotations

from functools import partial

import streamlit as st
from streamlit_folium import st_folium

from app import added_layers
from app.aoi import AOI
from app.exports import png_snapshot, polygons_bytes, run_zip_bytes, vector_classes
from app.layers import layer_statistics
from app.legends import legend, legend_html
from app.maps import build_map
from app.rasters import layer_to_cog_bytes, read_layer, read_layer_window
from app.runs import RunStore
from app.ui import layers_view as view
from app.ui import state, widgets
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

st.caption(f"{run.title} · run `{run.id}` · share this page's URL to reopen it")
if run.synthetic:
    widgets.synthetic_badge({"untrained": run.untrained})

layers = view.run_layers(run)
added = state.ADDED_LAYERS.get()
display = view.all_display_layers(layers, added)
by_name = {layer.name: layer for layer in display}
source_of = {**layers, **added}
key = view.run_cache_key(run)
view.init_prefs(run.id, display)

map_col, panel_col = st.columns([3, 1.4], gap="medium")

# -- Layers panel ----------------------------------------------------------------------------------
with panel_col:
    st.subheader("Layers")
    st.caption("Tick to show · slider = opacity · top of the list is drawn on top.")
    visible = dict(state.LAYER_VISIBLE.get())
    opacity = dict(state.LAYER_OPACITY.get())
    order = state.LAYER_ORDER.get()
    for position, name in enumerate(reversed(order)):
        layer = by_name[name]
        row = st.container(border=True, key=view.row_key(name))
        c_check, c_up, c_down = row.columns([6, 1, 1], vertical_alignment="center")
        visible[name] = c_check.checkbox(name, value=visible.get(name, True),
                                         key=W.layer("visible", name))
        c_up.button("", icon=":material/arrow_upward:", key=W.layer("up", name),
                    help=f"Move {name} up", disabled=position == 0, type="tertiary",
                    on_click=view.move, args=(name, 1))
        c_down.button("", icon=":material/arrow_downward:", key=W.layer("down", name),
                      help=f"Move {name} down", disabled=position == len(order) - 1,
                      type="tertiary", on_click=view.move, args=(name, -1))
        if visible[name]:
            opacity[name] = row.slider(f"Opacity of {name}", 0.0, 1.0,
                                       float(opacity.get(name, 1.0)), 0.05,
                                       key=W.layer("opacity", name), label_visibility="collapsed")
    state.LAYER_VISIBLE.set(visible)
    state.LAYER_OPACITY.set(opacity)
    st.selectbox("Bring to top", [view.NO_CHOICE, *reversed(order)], key=W.BRING_TO_TOP,
                 on_change=view.bring_chosen_to_top)

    compare = None
    if st.toggle("Compare two layers (swipe)", key=W.COMPARE):
        names = list(reversed(order))
        left = st.selectbox("Left", names, index=len(names) - 1, key=W.COMPARE_LEFT)
        right = st.selectbox("Right", names, index=0, key=W.COMPARE_RIGHT)
        if left == right:
            st.warning("Pick two different layers to compare.")
        else:
            compare = (left, right)

    st.subheader("Legends")
    for name in reversed(view.overlay_names(compare)):
        st.html(legend_html(legend(by_name[name])))

# -- The map ---------------------------------------------------------------------------------------
with map_col:
    overlays = []
    with widgets.guard("Rendering the layers"):
        for name in view.overlay_names(compare):
            layer = by_name[name]
            cache = key if layer.source in layers else added_layers.added_cache_key(layer.source)
            overlays.append((layer, view.rendered(cache, layer, source_of[layer.source]),
                             float(opacity.get(name, 1.0))))
    with widgets.guard("Drawing the map"):
        fmap = build_map(aoi=run.request.aoi, overlays=overlays, compare=compare,
                         static_url=widgets.static_url())
        clicked = st_folium(fmap, key=W.LAYERS_MAP, height=620, use_container_width=True,
                            returned_objects=["last_clicked"])
        point = (clicked or {}).get("last_clicked")
        if point and (point["lat"], point["lng"]) != state.INSPECT_POINT.get():
            state.INSPECT_POINT.set((float(point["lat"]), float(point["lng"])))
    st.caption(f"{len(overlays)} layer(s) on the map. Click the map to inspect a pixel.")

# -- Inspector, statistics, downloads, added data --------------------------------------------------
inspect_tab, stats_tab, download_tab, add_tab = st.tabs(
    ["Pixel inspector", "Statistics", "Downloads", "Add data"]
)
with inspect_tab:
    point = state.INSPECT_POINT.get()
    if point is None:
        st.info("Click the map to see the value of every layer at that point.")
    else:
        lat, lon = point
        st.markdown(f"**Point** {lat:.5f}, {lon:.5f} (lat, lon)")
        with widgets.guard("Inspecting the pixel"):
            st.dataframe(view.inspector_frame(view.inspect(layers, added, lon, lat)),
                         hide_index=True, width="stretch")

with stats_tab:
    names = [n for n in reversed(order) if by_name[n].style.kind.value != "rgb"]
    if names:
        chosen = st.selectbox("Layer", names, key=W.STATS_LAYER)
        layer = by_name[chosen]
        if layer.synthetic:
            st.caption("Statistics of generated (synthetic) values, not of measurements.")
        with widgets.guard("Computing statistics"):
            stats = layer_statistics(source_of[layer.source], layer)
            if stats["kind"] == "classes":
                st.markdown(f"Valid area **{stats['total_km2']:.3f} km²**")
                st.dataframe(view.class_table(stats), hide_index=True, width="stretch")
            else:
                st.markdown(view.summary_line(stats))
                st.bar_chart(view.histogram_frame(stats), x="value", y="pixels",
                             x_label=f"{layer.title} ({layer.units or 'unitless'})",
                             y_label="pixels")

with download_tab:
    st.caption("GeoTIFFs are Cloud-Optimized, in the scene's CRS, with units, nodata and "
               "provenance tags.")
    for source, da in source_of.items():
        st.download_button(
            f"GeoTIFF: {source}", data=partial(layer_to_cog_bytes, da),
            file_name=f"{run.id}_{source}.tif", mime="image/tiff", on_click="ignore",
            key=W.layer("download", source), icon=":material/download:",
        )
    for source, da in source_of.items():
        if not vector_classes(da):
            continue
        v1, v2 = st.columns(2)
        v1.download_button(
            f"Polygons (GeoJSON): {source}", data=partial(polygons_bytes, da, "geojson"),
            file_name=f"{run.id}_{source}.geojson", mime="application/geo+json",
            on_click="ignore", key=W.layer("geojson", source), icon=":material/polyline:",
        )
        v2.download_button(
            f"Polygons (GeoPackage): {source}", data=partial(polygons_bytes, da, "gpkg"),
            file_name=f"{run.id}_{source}.gpkg", mime="application/geopackage+sqlite3",
            on_click="ignore", key=W.layer("gpkg", source), icon=":material/polyline:",
        )
    st.download_button("Whole run (zip: COGs + STAC Item + README)",
                       data=partial(run_zip_bytes, run), file_name=f"terralens-run-{run.id}.zip",
                       mime="application/zip", on_click="ignore", key=W.DOWNLOAD_ZIP,
                       icon=":material/folder_zip:")
    shown = view.overlay_names(compare)
    if shown:
        snap = st.selectbox("PNG snapshot of", list(reversed(shown)), key=W.SNAPSHOT_LAYER)
        snap_layer = by_name[snap]
        snap_cache = key if snap_layer.source in layers else added_layers.added_cache_key(
            snap_layer.source)
        st.download_button(
            "PNG snapshot", data=lambda: png_snapshot(
                view.rendered(snap_cache, snap_layer, source_of[snap_layer.source]),
                title=snap_layer.name, legend=legend(snap_layer)),
            file_name=f"{run.id}_{snap_layer.source}.png", mime="image/png", on_click="ignore",
            key=W.DOWNLOAD_PNG, icon=":material/image:",
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
            state.ADDED_LAYERS.set({**added, source: new})
            st.rerun()
    url = st.text_input("…or the URL of a Cloud-Optimized GeoTIFF", key=W.ADD_URL,
                        placeholder="https://example.org/data/dem.tif")
    if url and st.button("Add from URL", key=W.ADD_URL_BUTTON):
        with (widgets.guard("Reading the GeoTIFF URL"),
              st.spinner("Reading the window over the run…")):
            raw = read_layer_window(url, AOI(run.request.aoi).bbox,
                                    timeout_s=settings.stac_timeout_s,
                                    allow_private=settings.allow_private_urls,
                                    max_pixels=settings.max_read_pixels)
            name = url.rstrip("/").rsplit("/", 1)[-1] or "remote.tif"
            source = added_layers.added_source_name(name, url.encode())
            state.ADDED_LAYERS.set({**added, source: added_layers.prepare_added(raw, name)})
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
                state.ADDED_LAYERS.set({**added, source: layer_da})
                st.rerun()
    if added:
        for source in list(added):
            c1, c2 = st.columns([4, 1])
            c1.markdown(f"`{added[source].attrs.get('source_file', source)}`")
            if c2.button("Remove", key=W.layer("remove", source)):
                state.ADDED_LAYERS.set({k: v for k, v in added.items() if k != source})
                st.rerun()

# -- Reality check (app/ui/reality_view.py) --------------------------------------------------------
from app.ui import reality_view  # noqa: E402  (kept inside this block)

reality_view.render(run, settings)
# -- end of the reality check ----------------------------------------------------------------------
