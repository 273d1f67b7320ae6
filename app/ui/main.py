"""TerraLens Streamlit entry point: ``streamlit run app/ui/main.py`` from the repository root.

Two roles in one file, as Streamlit's ``st.App`` expects:

* imported by the server (``streamlit run`` finds :data:`streamlit_app` in this file and serves
  it with uvicorn), it mounts the map-tile route of :mod:`app.tiles` on the app's own port;
* run as the app script (``__main__``, once per session and rerun), it is the only module that
  calls ``st.navigation``: it sets the page config, builds the navigation over the pages in
  ``pages/`` (see :data:`app.ui.widgets.PAGES`), draws the settings summary and the job queue in
  the sidebar and runs the chosen page. A ``?run=<id>`` query parameter (a shared link) opens
  that run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from app.held_tiles import held_rasters
from app.settings import load_settings
from app.tiles import TileService, tile_routes

_SERVICES: dict[Path, TileService] = {}


def tile_service() -> TileService:
    """The tile service of the configured run store (one per store folder, per process), which
    also serves the rasters the pages hold (:func:`app.held_tiles.held_rasters`)."""
    settings = load_settings()
    runs_dir = settings.runs_dir
    if runs_dir not in _SERVICES:
        _SERVICES[runs_dir] = TileService(runs_dir, held=held_rasters(),
                                          cache_bytes=int(settings.tile_cache_mb * 2**20))
    return _SERVICES[runs_dir]


def _run_page() -> None:
    from app.ui import map_view, queue_panel, state, widgets

    st.set_page_config(
        page_title="TerraLens",
        page_icon=":material/satellite_alt:",
        layout="wide",
        initial_sidebar_state="expanded",
    )
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    settings = widgets.load_settings_or_stop()

    # A shared link (?run=<id>) opens that run; the Layers page then shows it.
    run_param = st.query_params.get("run")
    if run_param and run_param != state.RUN_ID.get():
        state.RUN_ID.set(run_param)

    current = st.navigation(widgets.navigation_pages(), position="sidebar")
    map_view.note_page(current.url_path)  # maps keep their view when a page is re-entered
    widgets.sidebar(settings)
    queue_panel.queue_panel(settings)
    current.run()


if __name__ == "__main__":
    _run_page()
else:
    streamlit_app = st.App(
        Path(__file__).resolve(),
        routes=tile_routes(tile_service, str(st.get_option("server.baseUrlPath") or "")),
    )
