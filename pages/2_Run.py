"""Run page: choose a task and its parameters, see the estimate, submit the job to the queue."""

from __future__ import annotations

import streamlit as st

from app.escaping import markdown_code, markdown_text
from app.job_store import JobRecord, JobState
from app.runs import RunStore
from app.tasks import RUN_PAGE_TASKS, TASKS, Knob, Task, task_label
from app.ui import queue_panel, runtime, state, widgets
from app.ui import run_view as view
from app.ui.state import W
from inference.errors import TerraLensError
from inference.modalities import Modality
from inference.models import ModelSize
from inference.progress import format_seconds

#: Seconds between two refreshes of a queued or running job's status.
STATUS_REFRESH_S = 1.0

settings = widgets.load_settings_or_stop()
st.title("Run TerraMind")

try:
    scene = view.check_scene(state.SCENE.get())
except TerraLensError as err:
    st.error(markdown_text(err))
    widgets.page_link("search", "Go to Search")
    st.stop()

attrs = scene.attrs
st.markdown(
    f"Scene {markdown_code(attrs.get('scene_id', '?'))} · "
    f"{markdown_text(attrs.get('datetime', ''))} · "
    f"{int(scene.sizes['x'])} × {int(scene.sizes['y'])} px · AOI cloud "
    f"{100 * float(attrs.get('aoi_cloud_share', 0.0)):.1f}%"
)
if settings.weights == "untrained":
    st.warning(f"{widgets.UNTRAINED_WARNING}. Set TERRALENS_WEIGHTS=hub or a weights folder for "
               "real results.", icon=":material/warning:")

aoi_note = view.aoi_mismatch_text(state.get_aoi(), state.get_scene_aoi())
if aoi_note:
    st.warning(aoi_note, icon=":material/crop_free:")

# -- Parameters (the task table says which knobs apply) -------------------------------------
# Each widget starts from the session's kept choice (state.RUN_*) and writes it back: Streamlit
# forgets a widget's value while its page is not shown.
tasks = view.available_tasks()
task_values = [t.value for t in tasks]
task = Task(st.radio("Task", task_values, format_func=task_label, horizontal=True,
                     index=state.kept_index(task_values, state.RUN_TASK.get()),
                     key=W.TASK, captions=[TASKS[t].help for t in tasks]))
state.RUN_TASK.set(task.value)
if len(tasks) < len(RUN_PAGE_TASKS):
    missing = ", ".join(task_label(t) for t in RUN_PAGE_TASKS if t not in tasks)
    st.caption(f"Not available in this installation: {missing}.")
knobs = TASKS[task].knobs
c1, c2, c3 = st.columns(3)
sizes = [s.value for s in ModelSize]
size = settings.model_size
if Knob.SIZE in knobs:
    size = c1.selectbox("Model size", sizes,
                        index=state.kept_index(sizes, state.RUN_SIZE.get() or settings.model_size),
                        key=W.SIZE, help="Larger is slower; the diffusion decoders dominate.")
    state.RUN_SIZE.set(size)
timesteps = 1
if Knob.TIMESTEPS in knobs:
    timesteps = int(c2.number_input("Diffusion timesteps", 1, 100, state.RUN_TIMESTEPS.get(),
                                    key=W.TIMESTEPS,
                                    help="Steps of the S1/NDVI/DEM decoders: more = finer, "
                                         "slower. Changing them does not reload the model."))
    state.RUN_TIMESTEPS.set(timesteps)
seed = int(c3.number_input("Seed", 0, 2**31 - 1, state.RUN_SEED.get(), key=W.SEED,
                           help="The same seed reproduces the same outputs."))
state.RUN_SEED.set(seed)
seeds = 1
if Knob.SEEDS in knobs:
    seeds = int(c3.number_input(
        "Ensemble seeds", view.MIN_SEEDS, view.MAX_SEEDS, state.RUN_SEEDS.get(), key=W.SEEDS,
        help="1 = off. N runs every chip N times with other random noise, in the same job, "
             "and adds [U] uncertainty layers (standard deviation; land-cover agreement and "
             "entropy). Costs N times the chips."))
    state.RUN_SEEDS.set(seeds)
outputs: list[str] = []
checkpoint = ""
if Knob.OUTPUTS in knobs:
    outputs = st.multiselect("Outputs", view.output_choices(),
                             default=view.kept_outputs(state.RUN_OUTPUTS.get()), key=W.OUTPUTS,
                             help="Only the tokenizers of chosen outputs are loaded.")
    state.RUN_OUTPUTS.set(list(outputs))
if Knob.CHECKPOINT in knobs:
    checkpoint = st.text_input("Checkpoint (local .ckpt path or Hugging Face repo id)",
                               value=state.RUN_CHECKPOINT.get(), key=W.CHECKPOINT,
                               placeholder="ibm-esa-geospatial/TerraMind-base-Flood")
    state.RUN_CHECKPOINT.set(checkpoint)
st.caption(f"Writes {TASKS[task].outputs}.")

device = "cpu" if settings.device == "cpu" else widgets.device_name(settings.device)
estimate_s: float | None = None
if task is Task.GENERATE and not outputs:
    st.info("Choose at least one output.")
else:
    with widgets.guard("Estimating the run"):
        chosen = tuple(Modality(o) for o in outputs) if outputs else (Modality.LULC,)
        text, estimate_s = view.estimate(
            scene, task, chosen, timesteps=timesteps, size=size, device=device,
            aoi=state.get_scene_aoi(), throughput=view.throughput_store(settings),
            model=view.model_to_load(runtime.job_runtime(settings).models, task, size=size,
                                     outputs=chosen, checkpoint=checkpoint,
                                     settings=settings, device=device), seeds=seeds)
        st.info(text, icon=":material/timer:")

# -- Submit --------------------------------------------------------------------------------------
if st.button("Run", type="primary", key=W.RUN, icon=":material/play_arrow:"):
    with widgets.guard("Submitting the run"):
        spec = view.build_spec(
            items=state.SCENE_ITEMS.get(), aoi=state.get_scene_aoi(), task=task,
            outputs=outputs, size=size, timesteps=timesteps, seed=seed, checkpoint=checkpoint,
            seeds=seeds,
        )
        job = runtime.job_runtime(settings).submit(
            spec, session=runtime.session_id(), scene=scene, estimate_s=estimate_s)
        state.RUN_JOB_ID.set(job.id)
        seen = state.SEEN_JOBS.get()
        seen.add(job.id)
        state.SEEN_JOBS.set(seen)


# -- The job of this page ------------------------------------------------------------------------
def _ended(job: JobRecord) -> None:
    """What a finished, failed, cancelled or interrupted job shows."""
    if job.state is JobState.DONE and job.run_id:
        if state.RUN_ID.get() != job.run_id:
            state.open_run(job.run_id)
        with widgets.guard("Opening the run"):
            run = RunStore(settings.runs_dir).open(job.run_id)
            if job.reused:
                st.success("Answered from the run store: this exact request ran before.",
                           icon=":material/inventory_2:")
            else:
                took = (job.finished or 0) - (job.started or job.submitted)
                st.success(f"Finished in {format_seconds(took)} and stored.",
                           icon=":material/check_circle:")
            st.markdown("  \n".join(view.run_summary(run)))
            widgets.page_link("layers", "Open the layers on the map →")
    elif job.state is JobState.FAILED:
        st.error(job.error or "The run failed.", icon=":material/error:")
        if job.error_kind == "WeightsUnavailableError" and job.spec.task is not Task.TIM:
            st.info(view.weights_advice(job.spec.size.value, job.spec.outputs))
        elif job.error_kind == "OutOfMemoryError":
            st.info("Pick a smaller model, fewer outputs or a smaller AOI.")
    elif job.state is JobState.CANCELLED:
        st.warning(f"Run cancelled {view.cancelled_at(job)}; nothing was stored.")
    elif job.state is JobState.INTERRUPTED:
        st.warning(f"Job #{job.id} was interrupted (the server stopped while it ran); nothing "
                   "was stored.")
        if st.button("Run again", key=W.RUN_AGAIN, icon=":material/replay:"):
            same_scene = job.spec.scene_id == str(scene.attrs.get("scene_id", "")) and \
                state.get_scene_aoi() == job.spec.aoi
            again = runtime.job_runtime(settings).rerun(
                job.id, session=runtime.session_id(), scene=scene if same_scene else None)
            if again is not None:
                state.RUN_JOB_ID.set(again.id)
                st.rerun()


@st.fragment(run_every=STATUS_REFRESH_S)
def _live(job_id: int) -> None:
    """A queued or running job's status, refreshed until it ends."""
    rt = runtime.job_runtime(settings)
    job = rt.jobs.get(job_id)
    if job is None or not job.state.active:
        st.rerun()  # ended: draw the result with the whole page
        return
    line = queue_panel.status_line(job, rt.jobs.position(job))
    st.markdown(f"**Job #{job.id}** · {job.label}")
    if job.state is JobState.RUNNING:
        st.progress(min(1.0, job.done / job.total) if job.total else 0.0, text=line)
    else:
        st.info(line.capitalize(), icon=":material/hourglass_top:")
    st.caption("The job runs on the server: leave this page or close the tab, it goes on; the "
               "sidebar shows its progress everywhere.")
    if st.button("Cancel", key=W.CANCEL, icon=":material/stop:"):
        rt.cancel(job.id)
        st.rerun()


job_id = state.RUN_JOB_ID.get()
current = runtime.job_runtime(settings).jobs.get(job_id) if job_id is not None else None
if current is not None and current.state.active:
    _live(current.id)
elif current is not None and view.matches_choices(
        current, settings.weights, items=state.SCENE_ITEMS.get(),
        aoi=state.get_scene_aoi(), task=task, outputs=outputs, size=size,
        timesteps=timesteps, seed=seed, checkpoint=checkpoint, seeds=seeds):
    _ended(current)
elif current is not None:  # the last run answered other choices: not these inputs' result
    st.caption(view.stale_result_text(current))
