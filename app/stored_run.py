"""A run as the store holds it: its folder, its request and its STAC Item.

:class:`Run` reads; only :class:`app.runs.RunStore` writes. A ``Run`` is only ever made of a
complete folder (every layer of its Item on disk).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pystac
import xarray as xr

from app.aoi import AOI
from app.rasters import read_layer
from app.run_item import INPUT_LAYER, raster_assets
from app.run_request import RunRequest
from inference.errors import RunStoreError


@dataclass(frozen=True)
class Run:
    """One complete run in the store.

    Attributes:
        id: Run id (the request key; also the folder name).
        path: The run folder.
        created: When the run was saved (UTC).
        request: The request it answers.
        item: Its STAC Item.
    """

    id: str
    path: Path
    created: dt.datetime
    request: RunRequest
    item: pystac.Item = field(compare=False, repr=False)

    def __hash__(self) -> int:
        return hash((self.id, self.created))

    @cached_property
    def aoi(self) -> AOI:
        """The request's AOI as the frozen value (built once per run)."""
        return AOI(self.request.aoi)

    @property
    def provenance(self) -> dict[str, Any]:
        """Model, weights, timesteps, seed, scene, offset, flags... as saved."""
        return dict(self.item.properties.get("terralens:provenance", {}))

    @property
    def synthetic(self) -> bool:
        """Whether any layer of the run is synthetic (generated)."""
        return bool(self.item.properties.get("terralens:synthetic", False))

    @property
    def untrained(self) -> bool:
        """Whether the run used untrained weights."""
        return bool(self.item.properties.get("terralens:untrained", False))

    @property
    def datetime(self) -> dt.datetime | None:
        """Acquisition time of the input scene."""
        return self.item.datetime

    @property
    def _rasters(self) -> list[str]:
        return raster_assets(self.item)

    @property
    def layer_names(self) -> list[str]:
        """Names of the output layers (the input is :attr:`input_name`)."""
        return [k for k in self._rasters if k != INPUT_LAYER]

    @property
    def input_name(self) -> str | None:
        """``"input"`` when the run kept its input, else ``None``."""
        return INPUT_LAYER if INPUT_LAYER in self._rasters else None

    @property
    def files(self) -> dict[str, Path]:
        """The run's other files (vector exports, tables) by file name."""
        return {k: self.path / k for k in self.item.assets if k not in self._rasters}

    @property
    def title(self) -> str:
        """One line for lists: task, scene and creation time."""
        return f"{self.request.task} · {self.request.scene_id} · {self.created:%Y-%m-%d %H:%M} UTC"

    def layer_path(self, name: str) -> Path:
        """The GeoTIFF of one layer."""
        if name not in self._rasters:
            raise RunStoreError(
                f"run {self.id!r} has no layer {name!r}; it has {self._rasters!r}"
            )
        return self.path / f"{name}.tif"

    def load_layer(self, name: str, *, load: bool = True) -> xr.DataArray:
        """One layer as a ``band``/``y``/``x`` DataArray with its attrs restored."""
        return read_layer(self.layer_path(name), load=load)

    def load_layers(self, *, include_input: bool = True, load: bool = True,
                    ) -> dict[str, xr.DataArray]:
        """Every layer by name (the input under ``"input"`` when kept and asked for)."""
        names = self._rasters if include_input else self.layer_names
        return {name: self.load_layer(name, load=load) for name in names}
