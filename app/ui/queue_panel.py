"""The job queue in the sidebar of every page: position, progress, ETA, Cancel, Run again.

The panel is a fragment that refreshes itself every :data:`REFRESH_S` seconds, so a job's
progress shows on whatever page the analyst is on; when a job this session watched ends, a
toast says so and links to its layers.
"""

from __future__ import annotations

import streamlit as st

from app.job_store import JobRecord, JobState
from app.jobs import JobRuntime
from app.settings import Settings
from app.ui import runtime, state, widgets
from app.ui.state import W
from inference.progress import Unit, format_seconds

#: Seconds between two refreshes of the panel.
REFRESH_S = 2.0
#: Ended jobs of this session listed under the active ones.
RECENT = 3


def eta_text(job: JobRecord) -> str:
    """``"about 1 min 05 s left"`` or ``""``."""
    eta = job.eta_s()
    return f"about {format_seconds(eta)} left" if eta is not None else ""


def counts_text(job: JobRecord) -> str:
    """The counters after a running job's message: a percentage of chip steps, done/total of
    chips or samples; nothing for bytes (the message names them) or an unknown total."""
    if job.total <= 1 or job.unit in (Unit.BYTES.value, Unit.NONE.value):
        return ""
    if job.unit == Unit.CHIP_STEPS.value:
        return f" ({100 * min(job.done, job.total) / job.total:.0f}%)"
    return f" ({job.done}/{job.total} {job.unit})"


def status_line(job: JobRecord, position: int) -> str:
    """One line of a job's state for the panel and the pages."""
    if job.state is JobState.QUEUED:
        return f"waiting for the device (position {position})"
    if job.state is JobState.RUNNING:
        eta = eta_text(job)
        return f"{job.message}{counts_text(job)}" + (f" · {eta}" if eta else "")
    if job.state is JobState.DONE:
        return "answered from the run store" if job.reused else "done"
    return f"{job.state.value}" + (f": {job.error}" if job.error else "")


def layers_url(run_id: str) -> str:
    """Link to a run on the Layers page (a shared-link URL, honours the base URL path)."""
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    spec = widgets.PAGES["layers"]
    return f"/{base + '/' if base else ''}{spec.url_path}?run={run_id}"


def _job_row(rt: JobRuntime, job: JobRecord, mine: str) -> None:
    who = " (yours)" if job.session == mine else ""
    st.markdown(f"**#{job.id}** {job.label}{who}")
    line = status_line(job, rt.jobs.position(job))
    if job.state is JobState.RUNNING:
        st.progress(min(1.0, job.done / job.total) if job.total else 0.0, text=line)
    else:
        st.caption(line)
    if job.state.active:
        if st.button("Cancel", key=W.job("cancel", job.id), icon=":material/stop:"):
            rt.cancel(job.id)
            st.rerun(scope="fragment")
    elif job.state is JobState.INTERRUPTED:
        if st.button("Run again", key=W.job("rerun", job.id), icon=":material/replay:"):
            rt.rerun(job.id, session=mine)
            st.rerun(scope="fragment")
    elif job.state is JobState.DONE and job.run_id and st.button(
            "Open layers", key=W.job("open", job.id), icon=":material/layers:"):
        state.open_run(job.run_id)
        widgets.switch_to("layers")


def _announce(ended: list[JobRecord]) -> None:
    seen, toasted = state.SEEN_JOBS.get(), state.TOASTED_JOBS.get()
    for job in ended:
        if job.id not in seen or job.id in toasted:
            continue
        toasted.add(job.id)
        if job.state is JobState.DONE and job.run_id:
            st.toast(f"Job #{job.id} finished: {job.label}. "
                     f"[Open its layers]({layers_url(job.run_id)})", icon=":material/check:")
        elif job.state is JobState.DONE:
            st.toast(f"Job #{job.id} finished: {job.label}.", icon=":material/check:")
        else:
            st.toast(f"Job #{job.id} {job.state.value}: {job.label}.", icon=":material/info:")
    state.TOASTED_JOBS.set(toasted)


@st.fragment(run_every=REFRESH_S)
def _panel(settings: Settings) -> None:
    rt = runtime.job_runtime(settings)
    mine = runtime.session_id()
    active = rt.jobs.active()
    seen = state.SEEN_JOBS.get()
    seen.update(j.id for j in active)
    state.SEEN_JOBS.set(seen)
    recent = [j for j in rt.jobs.recent(20) if not j.state.active]
    _announce([j for j in recent if j.id in seen])
    shown = [j for j in recent if j.session == mine or j.id in seen][:RECENT]
    st.caption(f"Jobs · {len(active)} in the queue" if active else "Jobs · the queue is empty")
    for job in [*active, *shown]:
        with st.container(border=True):
            _job_row(rt, job, mine)


def queue_panel(settings: Settings) -> None:
    """Draw the self-refreshing queue panel in the sidebar."""
    with st.sidebar, widgets.guard("Reading the job queue"):
        _panel(settings)
