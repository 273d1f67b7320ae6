"""The Layers page's *Reality check* panel: run the check, show its metrics and plots.

Per continuous layer a 2-D histogram of generated against real values (with the 1:1 line),
per class map the confusion matrix, both as Altair charts; a clear message for every layer
without a counterpart; the metrics as JSON and CSV downloads.
"""

from __future__ import annotations

import json
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.metrics import histogram2d
from app.reality import DEFAULT_S1_DAYS, check_run, checkable_layers
from app.reality_report import (
    DIFF_PREFIX,
    REAL_PREFIX,
    metrics_rows,
    rows_to_csv,
    save_report,
    stored_report,
)
from app.runs import RunStore
from app.ui import layers_view, widgets
from app.ui.state import W

#: Metrics shown in the table of continuous layers, with their labels.
_CONTINUOUS = (("bias", "bias"), ("mae", "MAE"), ("rmse", "RMSE"), ("pearson_r", "r"),
               ("ssim", "SSIM"), ("within_1std", "within ±1 std"), ("pixels", "pixels"))


def metrics_frame(report: dict[str, Any]) -> pd.DataFrame:
    """One row per compared band of continuous layers: the headline metrics."""
    rows = []
    for entry in report.get("layers", []):
        if entry.get("message") or entry.get("kind") != "continuous":
            continue
        for band, m in entry["metrics"].items():
            rows.append({"layer": entry["layer"], "band": band,
                         **{label: m.get(key) for key, label in _CONTINUOUS}})
    return pd.DataFrame(rows)


def histogram_chart(generated: np.ndarray, real: np.ndarray, title: str) -> alt.Chart | None:
    """A 2-D histogram (real on x, generated on y) as an Altair heat map."""
    hist = histogram2d(generated, real, bins=40)
    if not hist["edges"]:
        return None
    edges = np.asarray(hist["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    counts = np.asarray(hist["counts"])
    ri, gi = np.nonzero(counts)
    frame = pd.DataFrame({"real": centres[ri], "generated": centres[gi],
                          "pixels": counts[ri, gi]})
    heat = alt.Chart(frame, title=title).mark_rect().encode(
        x=alt.X("real:Q", bin=alt.Bin(extent=[edges[0], edges[-1]], maxbins=40),
                title="real"),
        y=alt.Y("generated:Q", bin=alt.Bin(extent=[edges[0], edges[-1]], maxbins=40),
                title="generated"),
        color=alt.Color("sum(pixels):Q", title="pixels", scale=alt.Scale(type="log")),
    )
    line = alt.Chart(pd.DataFrame({"real": [edges[0], edges[-1]],
                                   "generated": [edges[0], edges[-1]]})).mark_line(
        color="black", strokeDash=[4, 4]).encode(x="real:Q", y="generated:Q")
    return heat + line


def confusion_chart(metrics: dict[str, Any], title: str) -> alt.Chart:
    """The confusion matrix (rows real, columns generated) as an Altair heat map."""
    names = metrics["names"]
    rows = [{"real": names[i], "generated": names[j], "pixels": int(v)}
            for i, row in enumerate(metrics["confusion"]) for j, v in enumerate(row)]
    frame = pd.DataFrame(rows)
    base = alt.Chart(frame, title=title).encode(
        x=alt.X("generated:N", sort=names), y=alt.Y("real:N", sort=names))
    return base.mark_rect().encode(color=alt.Color("pixels:Q")) + base.mark_text(
        fontSize=10).encode(text="pixels:Q")


def render(run: Any, settings: Any) -> None:
    """The panel: a button to (re)run the check, then its results."""
    layers = layers_view.run_layers(run)
    if not checkable_layers(layers):
        return
    st.subheader("Reality check")
    st.caption("How close are the generated [G] layers to real measurements? Real "
               "counterparts from the catalog ([R]) are read onto the run's grid and compared "
               "inside the AOI; [D] layers show G − R.")
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    days = c1.number_input("Sentinel-1 window (± days)", 0, 365, DEFAULT_S1_DAYS,
                           key=W.REALITY_DAYS)
    if c2.button("Check against real data", key=W.REALITY_RUN, icon=":material/fact_check:"):
        with widgets.guard("Checking against real data"), st.spinner("Reading real data …"):
            report = check_run(run, stac_url=settings.stac_url, s1_days=int(days),
                               timeout_s=settings.stac_timeout_s,
                               has_pc_key=bool(settings.pc_subscription_key))
            save_report(RunStore(settings.runs_dir), run, report)
            st.rerun()
    stored = stored_report(run)
    if stored is None:
        st.info("Not checked yet: press the button to compare with real data.")
        return
    st.caption(f"Checked {stored.get('created', '')[:19]} UTC on {stored.get('stac_url', '')} "
               f"(Sentinel-1 within ±{stored.get('s1_days')} days).")
    for entry in stored.get("layers", []):
        if entry.get("message"):
            st.warning(f"{entry['layer']}: {entry['message']}")
    frame = metrics_frame(stored)
    if not frame.empty:
        st.dataframe(frame, hide_index=True, width="stretch")
    for entry in stored.get("layers", []):
        if entry.get("message"):
            continue
        name = entry["layer"]
        if entry.get("kind") == "classes":
            for band, m in entry["metrics"].items():
                st.markdown(f"**{name}**: overall accuracy {m['overall_accuracy'] or 0:.3f}, "
                            f"kappa {m['kappa'] if m['kappa'] is not None else 'n/a'}, "
                            f"{m['pixels']} pixels")
                st.altair_chart(confusion_chart(m, f"{name} {band}: real (rows) vs generated"),
                                width="stretch")
            continue
        real = layers.get(f"{REAL_PREFIX}{name}")
        generated = layers.get(name)
        diff = layers.get(f"{DIFF_PREFIX}{name}")
        if real is None or generated is None or diff is None:
            continue
        for band in entry["metrics"]:
            valid = np.isfinite(diff.sel(band=band).values)
            chart = histogram_chart(np.where(valid, generated.sel(band=band).values, np.nan),
                                    real.sel(band=band).values,
                                    f"{name} {band}: generated vs real")
            if chart is not None:
                st.altair_chart(chart, width="stretch")
    d1, d2 = st.columns(2)
    d1.download_button("Metrics (JSON)", data=json.dumps(stored, indent=1),
                       file_name=f"{run.id}_reality.json", mime="application/json",
                       key=W.REALITY_JSON, on_click="ignore", icon=":material/download:")
    d2.download_button("Metrics (CSV)", data=rows_to_csv(metrics_rows(stored)),
                       file_name=f"{run.id}_reality.csv", mime="text/csv",
                       key=W.REALITY_CSV, on_click="ignore", icon=":material/download:")
