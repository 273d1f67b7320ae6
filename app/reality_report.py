"""The result of a reality check: per layer the metrics or why there are none, the ``[R]`` and
``[D]`` layers, its table form, and how it is stored with the run (layers, Item property, JSON
and CSV files).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import xarray as xr

from app.counterparts import Counterpart

if TYPE_CHECKING:
    from app.runs import RunStore
    from app.stored_run import Run

#: Source-name prefixes of the real and difference layers in the run store.
REAL_PREFIX = "R_"
DIFF_PREFIX = "D_"
#: Files of the metrics beside the run's COGs.
METRICS_JSON = "reality_metrics.json"
METRICS_CSV = "reality_metrics.csv"
#: STAC Item property holding the metrics.
ITEM_PROPERTY = "terralens:reality"


@dataclass
class LayerCheck:
    """The comparison of one generated layer (or why there is none).

    Attributes:
        layer: Source name of the generated layer in the run (``"DEM"``).
        modality: Its modality.
        kind: ``"continuous"`` or ``"classes"``.
        counterpart: The real data read, or ``None`` when missing.
        metrics: Metrics by band (``{"VV": {...}, "VH": {...}}``; class maps under their band).
        message: Why there is no comparison (empty when there is one).
        real: The ``[R]`` layer on the run grid.
        difference: The ``[D]`` layer (G − R, or agreement for classes).
    """

    layer: str
    modality: str
    kind: str
    counterpart: Counterpart | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    message: str = ""
    real: xr.DataArray | None = field(default=None, repr=False)
    difference: xr.DataArray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the layer was compared."""
        return self.counterpart is not None and not self.message

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no arrays)."""
        return {"layer": self.layer, "modality": self.modality, "kind": self.kind,
                "counterpart": self.counterpart.to_dict() if self.counterpart else None,
                "metrics": self.metrics, "message": self.message}


@dataclass
class RealityReport:
    """Every generated layer of a run against its real counterpart."""

    run_id: str
    stac_url: str
    s1_days: int
    checks: list[LayerCheck]
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict (what the Item, the JSON file and the CLI hold)."""
        return {"run_id": self.run_id, "stac_url": self.stac_url, "s1_days": self.s1_days,
                "created": self.created, "layers": [c.to_dict() for c in self.checks]}

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self) -> str:
        """The metrics as CSV rows (see :func:`metrics_rows`)."""
        return rows_to_csv(metrics_rows(self.to_dict()))

    def layers(self) -> dict[str, xr.DataArray]:
        """The ``[R]`` and ``[D]`` layers by source name (``R_DEM``, ``D_DEM``...)."""
        out: dict[str, xr.DataArray] = {}
        for check in self.checks:
            if check.real is not None:
                out[f"{REAL_PREFIX}{check.layer}"] = check.real
            if check.difference is not None:
                out[f"{DIFF_PREFIX}{check.layer}"] = check.difference
        return out



# -- Table form -----------------------------------------------------------------------------------
_CSV_FIELDS = ("layer", "band", "collection", "items", "metric", "class", "value", "message")


def metrics_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (layer, band, metric[, class]) of a report dict (:meth:`RealityReport.to_dict`).

    Missing counterparts give one row with the message; confusion matrices are left out (they
    are in the JSON).
    """
    rows: list[dict[str, Any]] = []
    for entry in report.get("layers", []):
        counterpart = entry.get("counterpart") or {}
        base = {"layer": entry.get("layer", ""), "collection": counterpart.get("collection", ""),
                "items": " ".join(counterpart.get("items", [])), "message": ""}
        if entry.get("message"):
            rows.append({**base, "band": "", "metric": "", "class": "", "value": "",
                         "message": entry["message"]})
            continue
        for band, metrics in (entry.get("metrics") or {}).items():
            for name, value in metrics.items():
                if name in ("confusion", "labels", "names"):
                    continue
                if name == "per_class":
                    for cls in value:
                        for key in ("iou", "f1"):
                            rows.append({**base, "band": band, "metric": key,
                                         "class": cls["name"], "value": cls[key]})
                    continue
                rows.append({**base, "band": band, "metric": name, "class": "",
                             "value": value})
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of :func:`metrics_rows` as CSV text (empty cells for ``None``)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in _CSV_FIELDS})
    return buffer.getvalue()



# -- Stored with the run --------------------------------------------------------------------------
def save_report(store: RunStore, run: Run, report: RealityReport) -> Run:
    """Store the ``[R]``/``[D]`` layers, the metrics (Item property, JSON and CSV) with the run.

    Layers of an earlier check that this one did not produce are removed.
    """
    new = report.layers()
    stale = [name for name in run.layer_names
             if name.startswith((REAL_PREFIX, DIFF_PREFIX)) and name not in new]
    return store.update(
        run.id, new, properties={ITEM_PROPERTY: report.to_dict()},
        files={METRICS_JSON: report.to_json().encode("utf-8"),
               METRICS_CSV: report.to_csv().encode("utf-8")},
        remove=stale,
    )


def stored_report(run: Run) -> dict[str, Any] | None:
    """The metrics of the run's last reality check (from its Item), if any."""
    value = run.item.properties.get(ITEM_PROPERTY)
    return dict(value) if isinstance(value, Mapping) else None
