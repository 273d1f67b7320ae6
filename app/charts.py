"""Charts of a layer's statistics (Altair / Vega-Lite, which Streamlit draws natively).

Axes are numeric: a histogram's bins sit at their values (S1 dB from −30 to 0, NDVI across 0,
DEM in metres), never sorted as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import numpy as np
import pandas as pd


def histogram_frame(stats: Mapping[str, Any]) -> pd.DataFrame:
    """A continuous layer's histogram: ``start``/``end``/``centre`` of each bin (floats, in
    the layer's units) and its ``pixels``, in value order."""
    edges = np.asarray(stats.get("bin_edges", []), dtype=float)
    counts = list(stats.get("counts", []))
    if edges.size < 2:
        return pd.DataFrame({"start": [], "end": [], "centre": [], "pixels": []})
    return pd.DataFrame({"start": edges[:-1], "end": edges[1:],
                         "centre": (edges[:-1] + edges[1:]) / 2, "pixels": counts})


def histogram_chart(stats: Mapping[str, Any], axis_title: str) -> alt.Chart:
    """A histogram with a numeric value axis (bins drawn from their start to their end)."""
    frame = histogram_frame(stats)
    return (
        alt.Chart(frame)
        .mark_bar(color="#3fa7d6")
        .encode(
            x=alt.X("start:Q", bin="binned", title=axis_title),
            x2="end:Q",
            y=alt.Y("pixels:Q", title="pixels"),
            tooltip=[alt.Tooltip("start:Q", format=".4g", title="from"),
                     alt.Tooltip("end:Q", format=".4g", title="to"), "pixels:Q"],
        )
        .properties(height=220)
    )


def class_frame(stats: Mapping[str, Any]) -> pd.DataFrame:
    """Class areas of a class map (present classes only): name, colour, km², % of valid."""
    rows = [c for c in stats.get("classes", []) if c["pixels"] > 0]
    return pd.DataFrame({
        "Class": [c["name"] for c in rows],
        "colour": [c["colour"] or "#888888" for c in rows],
        "Area km²": [float(c["area_km2"]) for c in rows],
        "% of AOI": [float(c["percent"]) for c in rows],
    })


def class_chart(stats: Mapping[str, Any]) -> alt.Chart:
    """Horizontal bars of class areas in the classes' own colours, largest first."""
    frame = class_frame(stats)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("Class:N", sort="-x", title=None),
            x=alt.X("Area km²:Q", title="area (km²)"),
            color=alt.Color("colour:N", scale=None, legend=None),
            tooltip=["Class:N", alt.Tooltip("Area km²:Q", format=".4f"),
                     alt.Tooltip("% of AOI:Q", format=".1f")],
        )
        .properties(height=max(80, 24 * len(frame)))
    )
