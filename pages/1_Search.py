"""Search page: give an AOI, search the catalog, pick a scene and load its AOI window."""

from __future__ import annotations

import streamlit as st
from streamlit_folium import st_folium

from app.catalog import Collection, SearchRequest, search_scenes
from app.escaping import markdown_code, markdown_text
from app.scenes import load_scene
from app.ui import map_view, state, widgets
from app.ui import search_view as view
from app.ui.state import W
from inference.errors import CatalogError, InvalidAOIError

settings = widgets.load_settings_or_stop()
st.title("Search scenes")
st.caption(
    "Draw a rectangle or polygon on the map (or upload / type an area), search the catalog, "
    "pick a scene and load the window the models will see."
)

aoi = state.get_aoi()
# A search reads no pixels: it takes regions up to TERRALENS_MAX_SEARCH_KM2; loading a scene
# (and so running) is held to TERRALENS_MAX_AOI_KM2 / TERRALENS_MAX_WINDOW_KM2.
search_limits, run_limits = settings.search_limits, settings.run_limits
aoi_error = view.aoi_problem(aoi, **search_limits)
run_error = None if aoi_error else view.aoi_problem(aoi, **run_limits)

map_col, side_col = st.columns([3, 2], gap="medium")

# -- AOI inputs ----------------------------------------------------------------------------------
with side_col:
    st.subheader("Area of interest")
    draw_tab, upload_tab, bbox_tab, jump_tab = st.tabs(
        ["Draw", "Upload", "Bounding box", "Jump to"]
    )
    with draw_tab:
        st.markdown(
            "Pick the **rectangle** or **polygon** tool in the map's toolbar and draw the area. "
            f"Largest area to search: {settings.max_search_km2:,g} km²; to load a scene and "
            f"run: {settings.max_aoi_km2:,g} km²."
        )
    with upload_tab:
        upload = st.file_uploader("GeoJSON or KML file", type=["geojson", "json", "kml"],
                                  key=W.UPLOAD)
        pasted = st.text_area("…or paste GeoJSON", key=W.PASTE, height=90)
        if st.button("Use this area", key=W.USE_UPLOAD):
            with widgets.guard("Reading the uploaded area"):
                new_aoi = view.aoi_from_upload(upload, pasted).validate(**search_limits)
                state.set_aoi(new_aoi, "uploaded")
                st.rerun()
    with bbox_tab:
        bbox_text = st.text_input("West, South, East, North (degrees)", key=W.BBOX,
                                  placeholder="15.00, 45.00, 15.03, 45.02")
        if st.button("Use bounding box", key=W.USE_BBOX):
            with widgets.guard("Reading the bounding box"):
                new_aoi = view.aoi_from_bbox_text(bbox_text).validate(**search_limits)
                state.set_aoi(new_aoi, "bbox")
                st.rerun()
    with jump_tab:
        if settings.geocoder_url:
            st.caption("To find a place by name, type it in the search box on the map "
                       "(top right) and press Enter.")
        lat = st.number_input("Latitude", min_value=-90.0, max_value=90.0, value=45.0,
                              step=0.1, format="%.5f", key=W.JUMP_LAT)
        lon = st.number_input("Longitude", min_value=-180.0, max_value=180.0, value=15.0,
                              step=0.1, format="%.5f", key=W.JUMP_LON)
        if st.button("Jump to", key=W.JUMP):
            map_view.jump("search", state.AOI_JSON.get() or "", (float(lat), float(lon)), 12)
            st.rerun()

    if aoi is not None:
        st.metric("AOI area", f"{aoi.area_km2:,.2f} km²")
        w, s, e, n = aoi.bbox
        st.caption(f"{state.AOI_SOURCE.get() or 'AOI'} · bbox {w:.4f}, {s:.4f}, {e:.4f}, {n:.4f}")
        if aoi_error:
            st.error(markdown_text(aoi_error))
        elif run_error:
            st.info("This area can be searched; to load a scene and run, draw a part of it "
                    f"within the run limit — {markdown_text(run_error)}",
                    icon=":material/info:")
        if st.button("Clear area", key=W.CLEAR_AOI):
            state.set_aoi(None)
            state.clear_scene()
            st.rerun()
    else:
        st.info("No area yet: draw one on the map, upload a file or type a bounding box.")

# -- The map ---------------------------------------------------------------------------------------
results = state.SEARCH_RESULTS.get()
selected = view.find_scene(results, state.SELECTED_SCENE_ID.get())
view_scope = state.AOI_JSON.get() or ""
map_key = W.search_map(state.SEARCH_MAP_GENERATION.get())
map_view.remember("search", view_scope, st.session_state.get(map_key))
with map_col, widgets.guard("Drawing the map"):
    preview = view.preview_overlay(state.SCENE.get(), state.SCENE_PREVIEW.get())
    fmap = view.search_map(aoi, results, selected, preview, geocoder_url=settings.geocoder_url)
    rejected = state.AOI_REJECTED.get()
    if rejected:
        st.error(f"The drawn area was not used: {markdown_text(rejected)}",
                 icon=":material/block:")
    value = st_folium(
        fmap, key=map_key, height=520, use_container_width=True,
        returned_objects=["last_active_drawing", *map_view.VIEW_OBJECTS],
        **map_view.view_args("search", view_scope, view.map_signature(
            aoi, results, selected, preview, settings.geocoder_url)),
    )
    map_view.remember("search", view_scope, value)
    drawing = view.new_drawing(value, state.LAST_DRAWING.get())
    if drawing is not None:
        state.LAST_DRAWING.set(drawing)
        with widgets.guard("Reading the drawn area"):
            try:
                new_aoi = view.aoi_from_map(value).validate(**search_limits)
            except InvalidAOIError as err:
                # Leaflet keeps a drawn shape until its map goes: a new map instance drops
                # the refused one (the accepted AOI, if any, is drawn again from state).
                state.AOI_REJECTED.set(str(err))
                state.SEARCH_MAP_GENERATION.set(state.SEARCH_MAP_GENERATION.get() + 1)
            else:
                state.set_aoi(new_aoi, "drawn")
                state.AOI_REJECTED.clear()
            st.rerun()

# -- Search ----------------------------------------------------------------------------------------
st.subheader("Search")
# The form starts from the session's kept choices (state.SEARCH_*), written back below.
default_start, default_end = state.SEARCH_DATES.get() or state.default_date_range()
collections = [Collection.SENTINEL_2_L2A.value, Collection.SENTINEL_1_RTC.value]
with st.form("search_form", border=True):
    c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
    collection = c1.selectbox(
        "Collection", collections, format_func=view.collection_label, key=W.COLLECTION,
        index=state.kept_index(collections, state.SEARCH_COLLECTION.get()),
    )
    start = c2.date_input("Start", value=default_start, key=W.START)
    end = c3.date_input("End", value=default_end, key=W.END)
    max_cloud = c4.slider("Max cloud %", 0, 100, state.SEARCH_MAX_CLOUD.get(), key=W.MAX_CLOUD,
                          help="Whole-scene eo:cloud_cover (Sentinel-2 only)")
    limit = c5.number_input("Max scenes", 1, 500, state.SEARCH_LIMIT.get(), key=W.LIMIT)
    submitted = st.form_submit_button("Search", type="primary", icon=":material/search:")
state.SEARCH_COLLECTION.set(collection)
state.SEARCH_DATES.set((start, end))
state.SEARCH_MAX_CLOUD.set(int(max_cloud))
state.SEARCH_LIMIT.set(int(limit))

if submitted:
    if aoi is None:
        st.error("Give an area of interest first: draw it on the map, upload it or type a bbox.")
    else:
        with widgets.guard("Searching the catalog"):
            try:
                request = SearchRequest(
                    aoi=aoi.validate(**search_limits), start=start, end=end,
                    collection=Collection(collection), max_cloud=float(max_cloud), limit=int(limit),
                )
                with st.spinner(f"Searching {markdown_code(settings.stac_url)} …"):
                    found = search_scenes(request, stac_url=settings.stac_url,
                                          timeout_s=settings.stac_timeout_s)
            except CatalogError:
                st.info(view.CATALOG_HINT.format(url=markdown_code(settings.stac_url)))
                raise
            state.SEARCH_REQUEST.set(request)
            state.SEARCH_RESULTS.set(list(found))
            state.SEARCH_SKIPPED.set(getattr(found, "skipped", 0))
            state.SELECTED_SCENE_ID.clear()
            st.rerun()

# -- Results ---------------------------------------------------------------------------------------
if results is not None:
    if not results:
        st.warning(view.no_results_text(state.SEARCH_REQUEST.get()))
    else:
        f1, f2 = st.columns(2)
        cloud_cap = f1.slider("Show scenes with cloud ≤ %", 0, 100, state.FILTER_CLOUD.get(),
                              key=W.FILTER_CLOUD)
        min_cov = f2.slider("Show scenes covering ≥ % of the AOI", 0, 100,
                            state.FILTER_COVERAGE.get(), key=W.FILTER_COVERAGE)
        state.FILTER_CLOUD.set(int(cloud_cap))
        state.FILTER_COVERAGE.set(int(min_cov))
        shown = view.filter_scenes(results, max_cloud=cloud_cap, min_coverage=min_cov)
        st.caption(f"{len(shown)} of {len(results)} scenes shown · sorted by date · "
                   "select a row to preview it")
        event = st.dataframe(
            view.results_frame(shown), key=W.RESULTS_TABLE, hide_index=True,
            on_select="rerun", selection_mode="single-row", width="stretch",
            # The chosen (or loaded) scene stays ticked when the page is shown again.
            selection_default=view.selected_rows(shown, state.SELECTED_SCENE_ID.get()),
        )
        rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
        if rows and rows[0] < len(shown) and shown[rows[0]].id != state.SELECTED_SCENE_ID.get():
            state.SELECTED_SCENE_ID.set(shown[rows[0]].id)
            st.rerun()
    skipped = state.SEARCH_SKIPPED.get()
    if skipped:
        st.warning(f"{skipped} malformed item(s) in the catalog answer were left out.")

# -- Selected scene + load -------------------------------------------------------------------------
if selected is not None and aoi is not None:
    st.subheader(f"Scene {markdown_text(selected.id)}")
    info_col, thumb_col = st.columns([3, 2])
    with info_col:
        st.markdown(view.scene_markdown(selected))
        same_day = view.same_day_items(results or [], selected)
        if len(same_day) > 1:
            st.caption(f"{len(same_day)} tiles of the same day will be mosaicked.")
        if run_error:
            st.warning(f"Loading needs a smaller area: {markdown_text(run_error)}",
                       icon=":material/warning:")
        if st.button("Load scene", type="primary", key=W.LOAD, icon=":material/download:",
                     disabled=run_error is not None):
            with widgets.guard("Loading the scene"), st.spinner("Reading the AOI window …"):
                aoi.validate(**run_limits)
                scene = load_scene(same_day, aoi, stac_url=settings.stac_url,
                                   timeout_s=settings.stac_timeout_s,
                                   subscription_key=settings.pc_subscription_key,
                                   max_pixels=settings.max_read_pixels)
                state.set_scene(scene, tuple(same_day), aoi, view.scene_preview(scene))
                st.rerun()
    with thumb_col:
        view.show_thumbnail(selected.thumbnail_href)

loaded = state.SCENE.get()
if loaded is not None:
    st.subheader("Loaded scene")
    if state.get_scene_aoi() != state.get_aoi():
        st.warning("The area changed since this scene was loaded: load it again for the new AOI.")
    st.markdown(view.loaded_scene_markdown(loaded))
    widgets.page_link("run", "Continue: run TerraMind on this scene →")
