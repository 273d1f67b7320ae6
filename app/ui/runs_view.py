"""What the Runs page shows as plain functions: the table of stored runs.

The table's first screen is what tells runs apart — task, outputs, the settings that differ
between runs of one scene (size, timesteps, seed), acquisition date, AOI area, status and when
it ran — in narrow columns that fit the page without horizontal scrolling; the long identifiers
(scene and run ids, model, weights) stay in the frame for the provenance below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from app.aoi import AOI
from app.tasks import task_label
from inference.errors import TerraLensError

#: Columns shown, in order (the frame holds more: see :func:`runs_frame`).
KEY_COLUMNS: tuple[str, ...] = (
    "Task", "Outputs", "Settings", "Acquired", "AOI km²", "Status", "Created (UTC)",
)


def _aoi_km2(geometry: Any) -> float | None:
    try:
        return round(AOI(geometry).area_km2, 2)
    except TerraLensError:
        return None


def _outputs(run: Any) -> str:
    outputs = run.request.params_dict.get("outputs")
    if outputs:
        return ", ".join(str(o) for o in outputs)
    return ", ".join(run.layer_names)


def _settings(run: Any) -> str:
    params = run.request.params_dict
    parts = [str(params["size"])] if params.get("size") else []
    if "timesteps" in params:
        parts.append(f"{params['timesteps']} steps")
    if "seed" in params:
        parts.append(f"seed {params['seed']}")
    return " · ".join(parts)


def _status(run: Any) -> str:
    return "untrained" if run.untrained else "stored"


def run_label(run: Any) -> str:
    """One line telling a run from the others (the run chooser): task, outputs, settings,
    acquisition date, AOI area, creation time."""
    area = _aoi_km2(run.request.aoi)
    parts = [task_label(run.request.task), _outputs(run), _settings(run),
             run.datetime.strftime("%Y-%m-%d") if run.datetime else "",
             f"{area:,.2f} km²" if area is not None else "",
             f"run {run.created:%Y-%m-%d %H:%M} UTC"]
    return " · ".join(p for p in parts if p)


def runs_frame(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per stored run: :data:`KEY_COLUMNS`, then Scene, Model, Weights and Run id."""
    return pd.DataFrame({
        "Task": [task_label(r.request.task) for r in runs],
        "Outputs": [_outputs(r) for r in runs],
        "Settings": [_settings(r) for r in runs],
        "Acquired": [r.datetime.strftime("%Y-%m-%d") if r.datetime else "" for r in runs],
        "AOI km²": [_aoi_km2(r.request.aoi) for r in runs],
        "Status": [_status(r) for r in runs],
        "Created (UTC)": [r.created.strftime("%Y-%m-%d %H:%M") for r in runs],
        "Scene": [r.request.scene_id for r in runs],
        "Model": [r.request.model for r in runs],
        "Weights": [r.request.weights for r in runs],
        "Run id": [r.id for r in runs],
    })


#: Pixel widths of the shown columns: together about 870 px, inside the page's content width
#: at 1400 px (sidebar open), so nothing scrolls sideways.
COLUMN_WIDTHS: dict[str, int] = {
    "Task": 100, "Outputs": 190, "Settings": 170, "Acquired": 95, "AOI km²": 80,
    "Status": 90, "Created (UTC)": 140,
}


def show_runs_table(runs: Sequence[Any]) -> None:
    """The table of :func:`runs_frame`, showing only :data:`KEY_COLUMNS` (sized to fit)."""
    column = st.column_config
    helps = {"Outputs": "Generated layers (or the task's outputs)",
             "Settings": "Model size, diffusion timesteps, seed",
             "Acquired": "Date of the input scene",
             "Status": "Every listed run is stored; 'untrained' marks random weights"}
    config: dict[str, Any] = {
        name: column.TextColumn(width=COLUMN_WIDTHS[name], help=helps.get(name))
        for name in KEY_COLUMNS if name != "AOI km²"
    }
    config["AOI km²"] = column.NumberColumn(width=COLUMN_WIDTHS["AOI km²"], format="%.2f")
    st.dataframe(runs_frame(runs), hide_index=True, width="stretch", column_order=KEY_COLUMNS,
                 column_config=config)
