"""Run page: choose a task and its parameters, see the estimate, run TerraMind on the scene."""

from __future__ import annotations

import time

import streamlit as st

from app.pipeline import execute_generation, find_existing
from app.runs import RunStore
from app.ui import model_cache, state, widgets
from app.ui import run_view as view
from app.ui.state import W
from inference.errors import (
    OutOfMemoryError,
    RunCancelledError,
    TerraLensError,
    WeightsUnavailableError,
)

settings = widgets.load_settings_or_stop()
st.title("Run TerraMind")

# A run that was interrupted (Cancel, or the page was left) left its progress behind.
leftover = state.RUN_PROGRESS.get()
if leftover is not None:
    state.RUN_PROGRESS.clear()
    done, total, _ = leftover
    if state.CANCEL_REQUESTED.get():
        st.warning(f"Run cancelled after {done} of {total} steps; nothing was stored.")
    else:
        st.warning(f"The run was interrupted after {done} of {total} steps (the page was left "
                   "or a control changed while it ran); nothing was stored. Run it again.")
state.CANCEL_REQUESTED.set(False)

try:
    scene = view.check_scene(state.SCENE.get())
except TerraLensError as err:
    st.error(str(err))
    widgets.page_link("search", "Go to Search")
    st.stop()

attrs = scene.attrs
st.markdown(
    f"Scene `{attrs.get('scene_id', '?')}` · {attrs.get('datetime', '')} · "
    f"{int(scene.sizes['x'])} × {int(scene.sizes['y'])} px · AOI cloud "
    f"{100 * float(attrs.get('aoi_cloud_share', 0.0)):.1f}%"
)
if settings.weights == "untrained":
    st.warning(f"{widgets.UNTRAINED_WARNING}. Set TERRALENS_WEIGHTS=hub or a weights folder for "
               "real results.", icon=":material/warning:")

# -- Parameters ------------------------------------------------------------------------------------
tasks = view.available_tasks()
task = st.radio("Task", [t.key for t in tasks], format_func=view.task_label, horizontal=True,
                key=W.TASK, captions=[t.help for t in tasks])
if len(tasks) < len(view.TASKS):
    missing = ", ".join(t.label for t in view.TASKS if t not in tasks)
    st.caption(f"Not available in this installation: {missing}.")
c1, c2, c3 = st.columns(3)
sizes = ["tiny", "small", "base", "large"]
size = c1.selectbox("Model size", sizes, index=sizes.index(settings.model_size), key=W.SIZE,
                    help="Larger is slower; the diffusion decoders dominate the cost.")
timesteps = c2.number_input("Diffusion timesteps", 1, 100, 10, key=W.TIMESTEPS,
                            help="Steps of the S1/NDVI/DEM decoders: more = finer, slower.")
seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key=W.SEED,
                       help="The same seed reproduces the same outputs.")
outputs: list[str] = []
checkpoint = ""
if task == "generation":
    outputs = st.multiselect("Outputs", view.output_choices(), default=list(view.DEFAULT_OUTPUTS),
                             key=W.OUTPUTS,
                             help="Only the tokenizers of chosen outputs are loaded.")
elif task == "tim":
    checkpoint = st.text_input("Checkpoint (local .ckpt path or Hugging Face repo id)",
                               key=W.CHECKPOINT,
                               placeholder="ibm-esa-geospatial/TerraMind-base-Flood")

device = "cpu" if settings.device == "cpu" else widgets.device_name(settings.device)
if task == "generation" and not outputs:
    st.info("Choose at least one output.")
else:
    with widgets.guard("Estimating the run"):
        st.info(view.estimate_text(scene, task, view.outputs_for(task, outputs),
                                   timesteps=int(timesteps), size=size, device=device,
                                   aoi_json=state.SCENE_AOI_JSON.get()),
                icon=":material/timer:")

# -- Run -------------------------------------------------------------------------------------------
b1, b2, _spacer = st.columns([1, 1, 4])
run_clicked = b1.button("Run", type="primary", key=W.RUN, icon=":material/play_arrow:")
cancel_slot = b2.empty()
status = st.container()

if run_clicked:
    with status, widgets.guard("Running TerraMind"):
        job = view.build_job(
            items=state.SCENE_ITEMS.get(), aoi_json=state.SCENE_AOI_JSON.get(), task=task,
            outputs=outputs, size=size, timesteps=int(timesteps), seed=int(seed),
            checkpoint=checkpoint,
        )
        store = RunStore(settings.runs_dir)
        existing = find_existing(job, settings=settings, store=store)
        if existing is not None:
            state.open_run(existing.id)
            state.LAST_RUN_REUSED.set(True)
            state.LAST_RUN_SECONDS.set(0.0)
        else:
            cancel_slot.button("Cancel", key=W.CANCEL, icon=":material/stop:",
                               on_click=lambda: state.CANCEL_REQUESTED.set(True))
            bar = st.progress(0.0, text="Loading the model …")

            def progress(done: int, total: int, message: str) -> None:
                state.RUN_PROGRESS.set((done, total, message))
                bar.progress(min(1.0, done / total) if total else 0.0,
                             text=f"{message} ({done}/{total})")

            state.RUN_PROGRESS.set((0, 1, "loading the model"))
            started = time.monotonic()
            try:
                run = execute_generation(
                    job, settings=settings, store=store,
                    model_provider=model_cache.model_provider(settings), scene=scene,
                    progress=progress, cancel=state.CANCEL_REQUESTED.get,
                )
            except Exception as err:
                # Not on Streamlit's own interruption (a BaseException): then the progress
                # stays behind and the next run of this page reports the interruption.
                state.RUN_PROGRESS.clear()
                cancel_slot.empty()
                if isinstance(err, WeightsUnavailableError) and job.task != "tim":
                    st.info(view.weights_advice(job.size, job.outputs))
                elif isinstance(err, OutOfMemoryError):
                    st.info("Pick a smaller model, fewer outputs or a smaller AOI.")
                elif isinstance(err, RunCancelledError):
                    st.warning("Run cancelled; nothing was stored.")
                raise
            state.RUN_PROGRESS.clear()
            cancel_slot.empty()
            bar.progress(1.0, text="Done")
            state.open_run(run.id)
            state.LAST_RUN_REUSED.set(False)
            state.LAST_RUN_SECONDS.set(time.monotonic() - started)

# -- The current run -------------------------------------------------------------------------------
run_id = state.RUN_ID.get()
if run_id:
    with widgets.guard("Opening the run"):
        run = RunStore(settings.runs_dir).open(run_id)
        if state.LAST_RUN_REUSED.get():
            st.success("Answered from the run store: this exact request ran before.",
                       icon=":material/inventory_2:")
        elif state.LAST_RUN_SECONDS.get() is not None:
            st.success(f"Finished in {view.format_seconds(state.LAST_RUN_SECONDS.get() or 0)} "
                       "and stored.", icon=":material/check_circle:")
        st.markdown("  \n".join(view.run_summary(run)))
        widgets.page_link("layers", "Open the layers on the map →")
