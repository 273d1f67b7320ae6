"""Geolocate page: where on Earth does TerraMind think this scene (or this land cover) is?"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st
from streamlit_folium import st_folium

from app.runs import RunStore
from app.ui import geolocate_view as view
from app.ui import model_cache, state, widgets
from app.ui.state import W
from inference.errors import InvalidRequestError

settings = widgets.load_settings_or_stop()
st.title("Geolocate")
st.caption("TerraMind generates geographic coordinates from an image or a land-cover map. Each "
           "sample is one draw from the model's belief: their spread is its uncertainty.")
if settings.weights == "untrained":
    st.warning(f"{widgets.UNTRAINED_WARNING}: untrained models rarely even produce valid "
               "coordinates.", icon=":material/warning:")

SCENE_S2, SCENE_LULC, PROMPT = "scene", "run_lulc", "prompt"
labels = {SCENE_S2: "From the loaded scene (Sentinel-2)",
          SCENE_LULC: "From the current run's generated land cover",
          PROMPT: "From a land-cover prompt"}
mode = st.radio("Condition", list(labels), format_func=labels.get, key=W.GEO_MODE)

condition: Any = None
true_lonlat: tuple[float, float] | None = None
if mode == SCENE_S2:
    scene = state.SCENE.get()
    if scene is None or scene.attrs.get("modality") != "S2L2A":
        st.error("No Sentinel-2 scene loaded: load one on the Search page, or use a land-cover "
                 "prompt.")
        widgets.page_link("search", "Go to Search")
    else:
        condition = scene
        true_lonlat = view.centre_lonlat(scene)
        st.caption(f"Scene `{scene.attrs.get('scene_id', '?')}`: the centre 224 × 224 px of "
                   "the window is shown to the model.")
elif mode == SCENE_LULC:
    run_id = state.RUN_ID.get()
    with widgets.guard("Opening the run"):
        run = RunStore(settings.runs_dir).open(run_id) if run_id else None
        if run is None or "LULC" not in run.layer_names:
            st.error("The current run has no generated LULC layer: run a generation with LULC "
                     "(Run page) or open such a run (Runs page).")
        else:
            condition = run.load_layer("LULC")
            true_lonlat = view.centre_lonlat(condition)
            st.caption(f"`[G] LULC` of run `{run.id}` ({run.request.scene_id}).")
else:
    st.markdown("Land-cover composition of the prompt (must add up to 100%):")
    cols = st.columns(4)
    shares: dict[str, float] = {}
    for i, cls in enumerate(view.PROMPT_CLASSES):
        default = 100 if cls.name == "Bare ground" else 0
        shares[cls.name] = cols[i % 4].slider(cls.name, 0, 100, default, 5,
                                              key=W.lulc_fraction(cls.name))
    total = sum(shares.values())
    try:
        prompt = view.composition(shares)
    except InvalidRequestError as err:
        st.error(str(err))
    else:
        from inference.geolocate import lulc_prompt

        condition = lulc_prompt(prompt, seed=0)
        st.caption(f"Total {total:g}% · " + ", ".join(
            f"{name} {pct:g}%" for name, pct in shares.items() if pct))

c1, c2, c3, c4, c5 = st.columns(5)
sizes = ["tiny", "small", "base", "large"]
size = c1.selectbox("Model size", sizes, index=sizes.index(settings.model_size),
                    key=W.GEO_SIZE)
samples = c2.number_input("Samples", 1, 1024, 64, key=W.GEO_SAMPLES)
temperature = c3.slider("Temperature", 0.1, 3.0, 1.0, 0.1, key=W.GEO_TEMPERATURE,
                        help="Higher spreads the samples.")
top_p = c4.slider("Top-p", 0.0, 1.0, 0.8, 0.05, key=W.GEO_TOP_P,
                  help="Nucleus sampling threshold (0 turns it off).")
seed = c5.number_input("Seed", 0, 2**31 - 1, 0, key=W.GEO_SEED)

if st.button("Sample locations", type="primary", key=W.GEO_RUN, disabled=condition is None,
             icon=":material/casino:"):
    with widgets.guard("Sampling locations"):
        from inference.geolocate import sample_locations, summary

        bar = st.progress(0.0, text="Loading the model …")
        model = model_cache.geolocation_model(size, settings=settings)

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"{done} of {total} samples")

        with model_cache.device_slot():
            result = sample_locations(model, condition, n=int(samples),
                                      temperature=float(temperature), top_p=float(top_p),
                                      seed=int(seed), progress=progress)
        state.GEOLOCATE_RESULT.set((result, summary(result, true_lonlat), true_lonlat))

stored = state.GEOLOCATE_RESULT.get()
if stored is not None:
    result, stats, truth = stored
    st.subheader("Where TerraMind places it")
    if stats["invalid"]:
        st.warning(f"{stats['invalid']} of {stats['n']} samples were not valid coordinates and "
                   "are not plotted.")
    map_col, table_col = st.columns([3, 2])
    with map_col, widgets.guard("Drawing the map"):
        st_folium(view.results_map(result.samples, truth, static_url=widgets.static_url()),
                  key=W.GEO_MAP, height=460, use_container_width=True, returned_objects=[])
    with table_col:
        st.dataframe(view.summary_table(stats), hide_index=True, width="stretch")
        with widgets.guard("Preparing the downloads"):
            from inference.geolocate import to_csv, to_geojson

            geojson = to_geojson(result)
            geojson["properties"] = {**geojson.get("properties", {}), "summary": stats}
            st.download_button("Samples (GeoJSON)", json.dumps(geojson, indent=1),
                               file_name="terralens-geolocation.geojson",
                               mime="application/geo+json", key=W.GEO_GEOJSON,
                               on_click="ignore", icon=":material/download:")
            st.download_button("Samples (CSV)", to_csv(result),
                               file_name="terralens-geolocation.csv", mime="text/csv",
                               key=W.GEO_CSV, on_click="ignore", icon=":material/download:")
elif condition is not None:
    st.info("Choose the parameters and press 'Sample locations'.")
