"""Runs page: every run in the store — reopen one on the map, read its provenance, delete it."""

from __future__ import annotations

import streamlit as st

from app.escaping import markdown_code, markdown_text
from app.runs import RunStore
from app.tasks import task_label
from app.ui import runs_view, state, widgets
from app.ui.state import W

settings = widgets.load_settings_or_stop()
st.title("Stored runs")
st.caption(f"Run store: {markdown_code(settings.runs_dir)} (a STAC catalog: every run is a "
           "folder of COGs and an item.json).")

store = None
runs = []
with widgets.guard("Reading the run store"):
    store = RunStore(settings.runs_dir)
    runs = store.list_runs()

if not runs:
    st.info("No runs stored yet: search a scene and run TerraMind on it.")
    widgets.page_link("search", "Search scenes")
    st.stop()


runs_view.show_runs_table(runs)

ids = [r.id for r in runs]
by_id = {r.id: r for r in runs}
current = state.RUN_ID.get()
chosen_id = st.selectbox(
    "Run", ids, index=ids.index(current) if current in ids else 0, key=W.RUNS_CHOICE,
    format_func=lambda rid: runs_view.run_label(by_id[rid]),
)
run = by_id[chosen_id]
if run.untrained:
    st.warning(widgets.UNTRAINED_WARNING, icon=":material/warning:")

c1, c2, _ = st.columns([1, 1, 3])
if c1.button("Open on the map", type="primary", key=W.RUNS_OPEN, icon=":material/map:"):
    state.open_run(run.id)
    widgets.switch_to("layers", query_params={"run": run.id})
if c2.button("Delete…", key=W.RUNS_DELETE, icon=":material/delete:"):
    state.DELETE_PENDING.set(run.id)
    st.rerun()

pending = state.DELETE_PENDING.get()
if pending and pending in by_id and store is not None:
    st.warning(f"Delete run {markdown_code(pending)} ({markdown_text(by_id[pending].title)})? "
               "Its files are removed from the store; this cannot be undone.")
    y, n, _ = st.columns([1, 1, 3])
    if y.button("Yes, delete", type="primary", key=W.RUNS_CONFIRM):
        with widgets.guard("Deleting the run"):
            store.delete(pending)
            state.DELETE_PENDING.clear()
            if state.RUN_ID.get() == pending:
                state.open_run(None)
            st.toast(f"Deleted run {markdown_text(pending)}")
            st.rerun()
    if n.button("Keep it", key=W.RUNS_KEEP):
        state.DELETE_PENDING.clear()
        st.rerun()

st.subheader("Provenance")
props = run.item.properties
prov = run.provenance
st.markdown("\n".join(
    f"- **{label}** {value}" for label, value in [
        ("Run id", markdown_code(run.id)),
        ("Scene", markdown_code(run.request.scene_id)),
        ("Task", task_label(run.request.task)),
        ("Model", markdown_code(run.request.model)),
        ("Weights", markdown_code(run.request.weights)),
        ("Parameters", markdown_text(", ".join(f"{k}={v}"
                                               for k, v in run.request.params_dict.items()))),
        ("Offset applied", markdown_text(prov.get("offset_applied", "n/a"))),
        ("terratorch", markdown_text(prov.get("terratorch_version", "n/a"))),
        ("Synthetic layers", "yes — generated, not measured" if run.synthetic else "no"),
    ]
))
with st.expander("STAC Item properties (item.json)"):
    st.json(props, expanded=False)
