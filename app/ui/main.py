"""TerraLens Streamlit entry point: ``streamlit run app/ui/main.py`` from the repository root.

The only module that calls ``st.navigation``: it sets the page config, builds the navigation
over the pages in ``pages/`` (see :data:`app.widgets.PAGES`), draws the settings summary and
the job queue in the sidebar and runs the chosen page. A ``?run=<id>`` query parameter (a
shared link) opens that run.
"""

from __future__ import annotations

import logging

import streamlit as st

from app.ui import queue_panel, state, widgets

st.set_page_config(
    page_title="TerraLens",
    page_icon=":material/satellite_alt:",
    layout="wide",
    initial_sidebar_state="expanded",
)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

settings = widgets.load_settings_or_stop()

# A shared link (?run=<id>) opens that run; the Layers page then shows it.
run_param = st.query_params.get("run")
if run_param and run_param != state.RUN_ID.get():
    state.RUN_ID.set(run_param)

pages = [widgets.page(name) for name in widgets.available_pages()]
current = st.navigation(pages, position="sidebar")
widgets.sidebar(settings)
queue_panel.queue_panel(settings)
current.run()
