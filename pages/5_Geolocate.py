"""Geolocate page: where on Earth does TerraMind think this scene (or this land cover) is?"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import streamlit as st
from streamlit_folium import st_folium

from app.escaping import markdown_code, markdown_text
from app.geolocation import GeolocationOutcome
from app.held_tiles import held_image_url
from app.job_store import JobState
from app.runs import RunStore
from app.tasks import Condition, JobSpec, Task
from app.ui import geolocate_view as view
from app.ui import map_view, queue_panel, runtime, state, widgets
from app.ui.state import W
from inference.errors import InvalidRequestError
from inference.models import ModelSize

#: Seconds between two refreshes of a queued or running geolocation's status.
STATUS_REFRESH_S = 1.0

settings = widgets.load_settings_or_stop()
st.title("Geolocate")
st.caption("TerraMind generates geographic coordinates from an image or a land-cover map. Each "
           "sample is one draw from the model's belief: their spread is its uncertainty.")
if settings.weights == "untrained":
    st.warning(f"{widgets.UNTRAINED_WARNING}: untrained models rarely even produce valid "
               "coordinates.", icon=":material/warning:")

labels = {Condition.SCENE.value: "From the loaded scene (Sentinel-2)",
          Condition.RUN_LULC.value: "From the current run's generated land cover",
          Condition.PROMPT.value: "From a land-cover prompt"}
mode = Condition(st.radio("Condition", list(labels), format_func=labels.get, key=W.GEO_MODE))

condition: Any = None
prompt: dict[int, float] = {}
run_id = None
if mode is Condition.SCENE:
    scene = state.SCENE.get()
    if scene is None or scene.attrs.get("modality") != "S2L2A":
        st.error("No Sentinel-2 scene loaded: load one on the Search page, or use a land-cover "
                 "prompt.")
        widgets.page_link("search", "Go to Search")
    else:
        condition = scene
        st.caption(f"Scene {markdown_code(scene.attrs.get('scene_id', '?'))}: the centre "
                   "224 × 224 px of the window is shown to the model.")
elif mode is Condition.RUN_LULC:
    run_id = state.RUN_ID.get()
    with widgets.guard("Opening the run"):
        run = RunStore(settings.runs_dir).open(run_id) if run_id else None
        if run is None or "LULC" not in run.layer_names:
            st.error("The current run has no generated LULC layer: run a generation with LULC "
                     "(Run page) or open such a run (Runs page).")
        else:
            condition = run.load_layer("LULC")
            st.caption(f"`[G] LULC` of run {markdown_code(run.id)} "
                       f"({markdown_text(run.request.scene_id)}).")
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
        st.error(markdown_text(err))
    else:
        condition = prompt
        st.caption(f"Total {total:g}% · " + ", ".join(
            f"{name} {pct:g}%" for name, pct in shares.items() if pct))

c1, c2, c3, c4, c5 = st.columns(5)
sizes = [s.value for s in ModelSize]
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
    with widgets.guard("Submitting the geolocation"):
        spec = JobSpec(
            task=Task.GEOLOCATE, condition=mode, size=size, samples=int(samples),
            temperature=float(temperature), top_p=float(top_p), seed=int(seed),
            scene_items=state.SCENE_ITEMS.get() if mode is Condition.SCENE else (),
            aoi=state.get_scene_aoi() if mode is Condition.SCENE else None,
            source_run=run_id if mode is Condition.RUN_LULC else None,
            prompt=tuple(prompt.items()),
        )
        job = runtime.job_runtime(settings).submit(
            spec, session=runtime.session_id(),
            scene=condition if mode is Condition.SCENE else None)
        state.GEOLOCATE_JOB_ID.set(job.id)
        seen = state.SEEN_JOBS.get()
        seen.add(job.id)
        state.SEEN_JOBS.set(seen)


@st.fragment(run_every=STATUS_REFRESH_S)
def _live(job_id: int) -> None:
    """A queued or running geolocation's status, refreshed until it ends."""
    rt = runtime.job_runtime(settings)
    job = rt.jobs.get(job_id)
    if job is None or not job.state.active:
        st.rerun()
        return
    line = queue_panel.status_line(job, rt.jobs.position(job))
    if job.state is JobState.RUNNING:
        st.progress(min(1.0, job.done / job.total) if job.total else 0.0, text=line)
    else:
        st.info(line.capitalize(), icon=":material/hourglass_top:")
    if st.button("Cancel", key=W.GEO_CANCEL, icon=":material/stop:"):
        rt.cancel(job.id)
        st.rerun()


def _show(outcome: GeolocationOutcome) -> None:
    result, stats, truth = outcome.result, outcome.summary, outcome.true_lonlat
    st.subheader("Where TerraMind places it")
    if stats["invalid"]:
        st.warning(f"{stats['invalid']} of {stats['n']} samples were not valid coordinates and "
                   "are not plotted.")
    map_col, table_col = st.columns([3, 2])
    with map_col, widgets.guard("Drawing the map"):
        scope = str(state.GEOLOCATE_JOB_ID.get())
        map_view.remember("geolocate", scope, st.session_state.get(W.GEO_MAP))
        value = st_folium(
            view.results_map(result.samples, truth, static_url=widgets.static_url(),
                             image_url=partial(held_image_url, base_url_path=str(
                                 st.get_option("server.baseUrlPath") or ""))),
            key=W.GEO_MAP, height=460, use_container_width=True,
            returned_objects=map_view.VIEW_OBJECTS,
            **map_view.view_args("geolocate", scope, scope))
        map_view.remember("geolocate", scope, value)
    with table_col:
        st.dataframe(view.summary_table(stats), hide_index=True, width="stretch")
        with widgets.guard("Preparing the downloads"):
            from inference.geolocate_summary import to_csv, to_geojson

            geojson = to_geojson(result)
            geojson["properties"] = {**geojson.get("properties", {}), "summary": stats}
            st.download_button("Samples (GeoJSON)", json.dumps(geojson, indent=1),
                               file_name="terralens-geolocation.geojson",
                               mime="application/geo+json", key=W.GEO_GEOJSON,
                               on_click="ignore", icon=":material/download:")
            st.download_button("Samples (CSV)", to_csv(result),
                               file_name="terralens-geolocation.csv", mime="text/csv",
                               key=W.GEO_CSV, on_click="ignore", icon=":material/download:")


job_id = state.GEOLOCATE_JOB_ID.get()
current = runtime.job_runtime(settings).jobs.get(job_id) if job_id is not None else None
if current is not None and current.state.active:
    _live(current.id)
elif current is not None and current.state is JobState.DONE and current.result:
    with widgets.guard("Showing the samples"):
        _show(GeolocationOutcome.from_json(current.result))
elif current is not None and current.state is JobState.FAILED:
    st.error(current.error or "The geolocation failed.", icon=":material/error:")
elif current is not None:
    st.warning(f"Geolocation {current.state.value}; nothing was sampled.")
elif condition is not None:
    st.info("Choose the parameters and press 'Sample locations'.")
