"""A run's request: everything that determines its result, normalised once and hashed.

A :class:`RunRequest` (scene, AOI, task, parameters, model, weights) is normalised in its
constructor and hashed into a content :attr:`~RunRequest.key`; the run store names a run's
folder by that key (:mod:`app.runs`), so the same request is answered from the store at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.aoi import geojson_geometry
from app.rasters import jsonable
from inference.errors import InvalidRequestError

#: Decimal places kept of AOI coordinates in the key (1e-9° ≈ 0.1 mm).
_COORD_DECIMALS = 9

def _round_coords(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_round_coords(v) for v in obj]
    if isinstance(obj, (int, float, np.number)) and not isinstance(obj, bool):
        return round(float(obj), _COORD_DECIMALS)
    raise InvalidRequestError(f"GeoJSON coordinates must be numbers, got {obj!r}")


def _normalise_geometry(value: Any) -> dict[str, Any]:
    aoi = geojson_geometry(value, what="aoi")
    if "coordinates" not in aoi:
        raise InvalidRequestError(f"aoi of type {aoi['type']!r} has no coordinates")
    return {"type": str(aoi["type"]), "coordinates": _round_coords(aoi["coordinates"])}


def _freeze_value(key: str, value: Any) -> Any:
    value = jsonable(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and all(
        v is None or isinstance(v, (str, int, float, bool)) for v in value
    ):
        return tuple(value)
    raise InvalidRequestError(
        f"parameter {key!r} must be a number, string, boolean or list of those, got {value!r}"
    )


def _normalise_params(params: Any) -> tuple[tuple[str, Any], ...]:
    if params is None:
        return ()
    items: Iterable[Any] = params.items() if isinstance(params, Mapping) else params
    try:
        raw = [(k, v) for k, v in items]
    except (TypeError, ValueError) as err:
        raise InvalidRequestError(
            f"params must be a dict or (name, value) pairs, got {params!r}"
        ) from err
    pairs: dict[str, Any] = {}
    for k, v in raw:
        if not isinstance(k, str) or not k:
            raise InvalidRequestError(f"parameter names must be non-empty strings, got {k!r}")
        pairs[k] = _freeze_value(k, v)
    return tuple(sorted(pairs.items()))


@dataclass(frozen=True)
class RunRequest:
    """Everything that determines a run's result; its :attr:`key` names the run.

    Loose input is normalised in the constructor: ``aoi`` may be a GeoJSON geometry or Feature
    (dict or text) or an ``app.aoi.AOI`` and becomes a plain geometry dict (coordinates rounded
    to 1e-9°); ``params`` may be a dict or (name, value) pairs and becomes sorted pairs, with
    list values as tuples.

    Attributes:
        scene_id: STAC item id of the input scene.
        aoi: GeoJSON geometry (EPSG:4326).
        task: What ran, e.g. ``"generate"``, ``"water"``, ``"geolocate"``.
        params: Sorted ``(name, value)`` pairs (outputs, timesteps, seed...).
        model: Model name, e.g. ``"terramind_v1_base_generate"``.
        weights: Weights source, e.g. ``"hub:ibm-esa-geospatial/TerraMind-1.0-base"``.
    """

    scene_id: str
    aoi: Any
    task: str
    params: Any = ()
    model: str = ""
    weights: str = ""

    def __post_init__(self) -> None:
        for name in ("scene_id", "task"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequestError(f"RunRequest.{name} must be a non-empty string, "
                                          f"got {value!r}")
        for name in ("model", "weights"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequestError(
                    f"RunRequest.{name} must be a string, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "scene_id", self.scene_id.strip())
        object.__setattr__(self, "task", self.task.strip())
        object.__setattr__(self, "aoi", _normalise_geometry(self.aoi))
        object.__setattr__(self, "params", _normalise_params(self.params))

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def params_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the form stored in the run's STAC Item)."""
        return {
            "scene_id": self.scene_id,
            "aoi": self.aoi,
            "task": self.task,
            "params": self.params_dict,
            "model": self.model,
            "weights": self.weights,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRequest:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                scene_id=data["scene_id"], aoi=data["aoi"], task=data["task"],
                params=data.get("params", {}), model=data.get("model", ""),
                weights=data.get("weights", ""),
            )
        except KeyError as err:
            raise InvalidRequestError(f"a stored run request lacks {err.args[0]!r}") from err

    @property
    def canonical_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the text the key hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """First 16 hex digits of the SHA-256 of :attr:`canonical_json`."""
        return hashlib.sha256(self.canonical_json.encode("utf-8")).hexdigest()[:16]
