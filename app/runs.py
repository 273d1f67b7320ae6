"""The run store: every run is a folder of Cloud-Optimised GeoTIFFs plus a STAC Item.

A :class:`RunRequest` (scene, AOI, task, parameters, model, weights) is normalised once and
hashed into a content :attr:`~RunRequest.key`; the run folder is named by that key, so the same
request is answered from the store at once (:meth:`RunStore.find`). Layout::

    <root>/catalog.json            STAC Catalog linking every run's item (browsable by STAC tools)
    <root>/<key>/item.json         STAC Item: geometry = AOI, datetime = scene time,
                                   properties = request + provenance, one asset per GeoTIFF
    <root>/<key>/<layer>.tif       one COG per layer (app.rasters.write_cog)
    <root>/<key>/input.tif         the model input, when saved

Runs are written atomically: into ``<root>/.tmp-<key>-<pid>-<random>``, every file fsync'ed,
then renamed to ``<root>/<key>``. The first writer wins: a run is never replaced by a second
save of the same request (that save keeps the published run and drops its own copy), so a
reader never sees a half-written or half-replaced run. A half-written run (a ``.tmp-*`` folder,
or a folder without ``item.json``) is never listed, found or opened, and
:meth:`RunStore.sweep` removes the temporary folders of writers that died.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import shapely.geometry
import xarray as xr

from app.aoi import geojson_geometry
from app.colors import CLASS_NODATA
from app.rasters import class_names, jsonable, read_layer, write_cog
from inference.errors import InvalidRequestError, RunStoreError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: Name under which a run keeps its model input (``input.tif``).
INPUT_LAYER = "input"
ITEM_FILE = "item.json"
CATALOG_FILE = "catalog.json"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
_LAYER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_RESERVED = frozenset({"item", "catalog", "readme"})
#: Decimal places kept of AOI coordinates in the key (1e-9° ≈ 0.1 mm).
_COORD_DECIMALS = 9


# -- The request ----------------------------------------------------------------------------------
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


# -- A stored run ---------------------------------------------------------------------------------
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
        return _raster_assets(self.item)

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


# -- The store ------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync directories; the rename is still atomic
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _parse_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str) and value.strip():
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


#: STAC extensions every run Item uses (projection of each asset, classes of class maps,
#: the software that made it).
PROJECTION_EXTENSION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION_EXTENSION = (
    "https://stac-extensions.github.io/classification/v2.0.0/schema.json")
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


def _class_entries(da: xr.DataArray, names: list[str]) -> list[dict[str, Any]]:
    """``classification:classes`` of a class map: value, name, and the map's colour."""
    from app.colors import lulc_classes, prediction_classes

    entries = lulc_classes() if str(da.attrs.get("modality", "")) == "LULC" else (
        prediction_classes(names))
    colours = {e.value: e.colour for e in entries}
    out = []
    for value, name in enumerate(names):
        entry: dict[str, Any] = {"value": value, "name": name}
        colour = colours.get(value)
        if colour:
            entry["color_hint"] = colour.lstrip("#").upper()
        out.append(entry)
    return out


def _asset(name: str, da: xr.DataArray) -> pystac.Asset:
    """A layer's asset: STAC 1.1 ``bands`` (name, unit, nodata, data type), projection,
    ``classification:classes`` for class maps, and whether it is synthetic."""
    attrs = da.attrs
    classes = class_names(da)
    transform = da.rio.transform()
    epsg = da.rio.crs.to_epsg()
    is_class_map = da.dtype in (np.uint8, np.bool_)
    data_type, nodata = ("uint8", CLASS_NODATA) if is_class_map else ("float32", "nan")
    unit = str(attrs.get("units", ""))
    bands = []
    for band in np.atleast_1d(da["band"].values):
        entry: dict[str, Any] = {"name": str(band), "data_type": data_type, "nodata": nodata}
        if unit:
            entry["unit"] = unit
        bands.append(entry)
    extra: dict[str, Any] = {
        "terralens:kind": str(attrs.get("kind", "input")),
        "terralens:modality": str(attrs.get("modality", name)),
        "terralens:synthetic": bool(attrs.get("synthetic", False)),
        "bands": bands,
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:wkt2": None if epsg else da.rio.crs.to_wkt(),
        "proj:shape": [int(da.sizes["y"]), int(da.sizes["x"])],
        "proj:transform": [transform.a, transform.b, transform.c,
                           transform.d, transform.e, transform.f],
    }
    if classes:
        extra["classification:classes"] = _class_entries(da, classes)
    roles = ["data", "input"] if name == INPUT_LAYER else ["data"]
    if extra["terralens:synthetic"]:
        roles.append("synthetic")
    return pystac.Asset(
        href=f"./{name}.tif", media_type=pystac.MediaType.COG,
        title=str(attrs.get("long_name", name)), roles=roles,
        extra_fields={k: v for k, v in extra.items() if v is not None},
    )


#: Media types of the files a run may keep beside its COGs.
_FILE_MEDIA_TYPES = {
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
    "csv": "text/csv",
    "json": "application/json",
}


def _raster_assets(item: pystac.Item) -> list[str]:
    """The Item's assets that are layers (COGs), in order."""
    return [k for k, a in item.assets.items() if a.media_type == pystac.MediaType.COG]


def _file_asset(file_name: str) -> dict[str, Any]:
    """The Item asset of a non-raster file of a run (a vector export or a table)."""
    suffix = file_name.rpartition(".")[2]
    return {"href": f"./{file_name}", "type": _FILE_MEDIA_TYPES[suffix],
            "title": file_name, "roles": ["data"] if suffix != "csv" else ["metadata"]}


def _software(provenance: Mapping[str, Any]) -> dict[str, str]:
    """``processing:software``: TerraLens' version and terratorch's when a model ran."""
    import importlib.metadata

    try:
        software = {"terralens": importlib.metadata.version("terralens")}
    except importlib.metadata.PackageNotFoundError:
        software = {"terralens": "unknown"}
    if provenance.get("terratorch_version"):
        software["terratorch"] = str(provenance["terratorch_version"])
    return software


_WRITER_PID = re.compile(r"-(\d+)-[0-9a-f]{8}$")


def _writer_pid(name: str) -> int | None:
    match = _WRITER_PID.search(name)
    return int(match.group(1)) if match else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



class RunStore:
    """A folder of runs (see the module docstring for the layout).

    Args:
        root: The store's folder; created when missing.

    Raises:
        RunStoreError: the folder cannot be created.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunStoreError(
                f"cannot create the run store at {str(self.root)!r} ({err}); set "
                "TERRALENS_DATA_DIR to a writable folder"
            ) from err

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # -- reading --
    def _read_run(self, folder: Path) -> Run:
        item_path = folder / ITEM_FILE
        try:
            data = json.loads(item_path.read_text(encoding="utf-8"))
            item = pystac.Item.from_dict(data, preserve_dict=False)
            props = item.properties
            request = RunRequest.from_dict(props["terralens:request"])
            created = _parse_datetime(props.get("created"))
        except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as err:
            raise RunStoreError(
                f"run {folder.name!r} in {str(self.root)!r} is unreadable ({err}); delete the "
                "folder or re-run the request"
            ) from err
        if created is None:
            raise RunStoreError(f"run {folder.name!r} has no valid 'created' time")
        missing = [k for k in _raster_assets(item) if not (folder / f"{k}.tif").is_file()]
        missing += [k for k in item.assets if k not in _raster_assets(item)
                    and not (folder / k).is_file()]
        if missing:
            raise RunStoreError(f"run {folder.name!r} is incomplete: missing layers {missing!r}")
        return Run(id=folder.name, path=folder, created=created, request=request, item=item)

    def _folder(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise RunStoreError(
                f"{run_id!r} is not a run id (letters, digits, '_' or '-', as listed by the store)"
            )
        return self.root / run_id

    def open(self, run_id: str) -> Run:
        """The run with this id.

        Raises:
            RunStoreError: no such run, or it is incomplete or unreadable.
        """
        folder = self._folder(run_id)
        if not (folder / ITEM_FILE).is_file():
            raise RunStoreError(
                f"no run {run_id!r} in {str(self.root)!r}; pick one from the Runs page or "
                "start it again"
            )
        return self._read_run(folder)

    def find(self, request: RunRequest) -> Run | None:
        """The stored run answering ``request``, or ``None`` (one file read, no scan)."""
        folder = self.root / request.key
        if not (folder / ITEM_FILE).is_file():
            return None
        try:
            run = self._read_run(folder)
        except RunStoreError as err:
            log.warning("ignoring unreadable run %s: %s", folder, err)
            return None
        return run if run.request == request else None

    def list_runs(self) -> list[Run]:
        """Every complete run, newest first (unreadable folders are skipped with a warning)."""
        runs = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not (folder / ITEM_FILE).is_file():
                continue
            try:
                runs.append(self._read_run(folder))
            except RunStoreError as err:
                log.warning("skipping run folder %s: %s", folder, err)
        return sorted(runs, key=lambda r: (r.created, r.id), reverse=True)

    # -- writing --
    def save(
        self,
        request: RunRequest,
        layers: Mapping[str, xr.DataArray],
        *,
        provenance: Mapping[str, Any],
        input_layer: xr.DataArray | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Run:
        """Store a run atomically; a run already stored for the same request is kept and
        returned (first writer wins).

        Args:
            request: The request the layers answer.
            layers: Output rasters by name (``"S1GRD"``, ``"LULC"``...), raster contract.
            provenance: Model, weights, timesteps, seed, scene id, offset applied, flags...
                (JSON-able values; ``datetime`` is the scene time and becomes the Item's).
            input_layer: The model input (e.g. the S2L2A scene) to keep as ``input.tif``.
            files: Other files of the run by file name (vector exports, tables), written
                beside the COGs and listed as assets of the Item.

        Returns:
            The stored run.

        Raises:
            InvalidRequestError: no layers, a bad layer name or a raster off the contract.
            RunStoreError: the files cannot be written.
        """
        if not isinstance(request, RunRequest):
            raise InvalidRequestError(f"request must be a RunRequest, got {request!r}")
        if not layers:
            raise InvalidRequestError("a run needs at least one layer to save")
        all_layers = dict(layers)
        for name in all_layers:
            if not isinstance(name, str) or not _LAYER_NAME.match(name) or \
                    name.lower() in _RESERVED or name == INPUT_LAYER:
                raise InvalidRequestError(
                    f"layer name {name!r} cannot be a file name; use letters, digits, '_', "
                    f"'-' or '.' (and not {sorted(_RESERVED | {INPUT_LAYER})!r})"
                )
        if input_layer is not None:
            all_layers[INPUT_LAYER] = input_layer
        extra_files = dict(files or {})
        for file_name in extra_files:
            stem, _, suffix = file_name.rpartition(".")
            if not _LAYER_NAME.match(file_name) or suffix not in _FILE_MEDIA_TYPES or \
                    stem.lower() in _RESERVED:
                raise InvalidRequestError(
                    f"run file name {file_name!r} is not allowed; use letters, digits, '_', "
                    f"'-' or '.' and one of {sorted(_FILE_MEDIA_TYPES)!r}")
        for name, da in all_layers.items():
            if not isinstance(da, xr.DataArray):
                raise InvalidRequestError(f"layer {name!r} must be an xarray.DataArray, "
                                          f"got {type(da).__name__}")
        prov = {str(k): jsonable(v) for k, v in provenance.items()}
        created = dt.datetime.now(dt.UTC)
        run_id = request.key
        existing = self.find(request)
        if existing is not None:
            return existing  # first writer wins
        tmp = self.root / f"{TMP_PREFIX}{run_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            for name, da in all_layers.items():
                _fsync_file(write_cog(da, tmp / f"{name}.tif"))
            for file_name, data in extra_files.items():
                (tmp / file_name).write_bytes(data)
                _fsync_file(tmp / file_name)
            item = self._item(run_id, request, all_layers, prov, created)
            for file_name in extra_files:
                item["assets"][file_name] = _file_asset(file_name)
            item_path = tmp / ITEM_FILE
            item_path.write_text(json.dumps(item, indent=1), encoding="utf-8")
            _fsync_file(item_path)
            _fsync_dir(tmp)
            published = self._publish(tmp, self.root / run_id)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RunStoreError(
                f"cannot save run {run_id!r} in {str(self.root)!r} ({err}); check free disk "
                "space and permissions"
            ) from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if published:
            self._write_catalog()
        return self.open(run_id)

    def _publish(self, tmp: Path, final: Path) -> bool:
        """Rename a finished folder into place, unless a complete run already holds the name
        (first writer wins: the copy is dropped). A folder of that name without ``item.json``
        (left by hand, or by an older version) is moved away first.

        Returns:
            True when this copy was published.
        """
        for _ in range(3):
            try:
                os.rename(tmp, final)
                _fsync_dir(self.root)
                return True
            except OSError:
                if not final.exists():
                    raise
                if (final / ITEM_FILE).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return False
                trash = self.root / f"{TRASH_PREFIX}{final.name}-{os.getpid()}-" \
                    f"{uuid.uuid4().hex[:8]}"
                try:
                    os.rename(final, trash)
                except FileNotFoundError:
                    continue  # another writer moved it first
                shutil.rmtree(trash, ignore_errors=True)
        raise RunStoreError(f"could not publish run {final.name!r}: the folder keeps reappearing")

    def sweep(self) -> list[str]:
        """Remove temporary and trash folders whose writer process is gone.

        Names carry the writer's process id (``.tmp-<key>-<pid>-<random>``); a folder of a live
        process is left alone, as is one whose name carries no id.

        Returns:
            The names removed.
        """
        removed = []
        for path in self.root.iterdir():
            if not path.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                continue
            pid = _writer_pid(path.name)
            if pid is None or process_alive(pid):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
            log.info("swept %s left by process %d", path, pid)
        return removed

    def _item(self, run_id: str, request: RunRequest, layers: Mapping[str, xr.DataArray],
              provenance: Mapping[str, Any], created: dt.datetime) -> dict[str, Any]:
        attrs_time = next((da.attrs.get("datetime") for da in layers.values()
                           if da.attrs.get("datetime")), None)
        scene_time = _parse_datetime(provenance.get("datetime")) or _parse_datetime(attrs_time)
        geometry = request.aoi
        synthetic = bool(provenance.get("synthetic", False)) or any(
            bool(da.attrs.get("synthetic", False)) for da in layers.values()
        )
        properties = {
            "title": f"TerraLens {request.task} run on {request.scene_id}",
            "created": created.isoformat(),
            "terralens:key": request.key,
            "terralens:task": request.task,
            "terralens:scene_id": request.scene_id,
            "terralens:model": request.model,
            "terralens:weights": request.weights,
            "terralens:synthetic": synthetic,
            "terralens:untrained": bool(provenance.get("untrained", False)),
            "terralens:request": request.to_dict(),
            "terralens:provenance": dict(provenance),
            "processing:software": _software(provenance),
        }
        item = pystac.Item(
            id=run_id, geometry=geometry, bbox=list(shapely.geometry.shape(geometry).bounds),
            datetime=scene_time or created, properties=properties,
            stac_extensions=[PROJECTION_EXTENSION, CLASSIFICATION_EXTENSION,
                             PROCESSING_EXTENSION],
        )
        for name, da in layers.items():
            item.add_asset(name, _asset(name, da))
        data = item.to_dict(include_self_link=False, transform_hrefs=False)
        data["links"] = [
            {"rel": "root", "href": f"../{CATALOG_FILE}", "type": "application/json"},
            {"rel": "parent", "href": f"../{CATALOG_FILE}", "type": "application/json"},
        ]
        if provenance.get("scene_href"):
            data["links"].append({"rel": "derived_from", "href": str(provenance["scene_href"]),
                                  "type": "application/geo+json",
                                  "title": f"Source scene {request.scene_id}"})
        return data

    def update(
        self,
        run_id: str,
        layers: Mapping[str, xr.DataArray],
        *,
        properties: Mapping[str, Any] | None = None,
        files: Mapping[str, bytes] | None = None,
        remove: Iterable[str] = (),
    ) -> Run:
        """Add layers, files and Item properties to a stored run (e.g. a reality check).

        The request, and so the run id, stay the same. Each file is written under a temporary
        name and renamed into place, then ``item.json`` is replaced atomically (with an
        ``updated`` time); the run's outputs are never touched.

        Args:
            run_id: The run.
            layers: New or replacing layers by name (raster contract).
            properties: Item properties to set.
            files: Other files by file name (as in :meth:`save`).
            remove: Names of added layers to drop (their assets and COGs).

        Raises:
            RunStoreError: no such run, or the files cannot be written.
            InvalidRequestError: a bad layer or file name, or a name that is an output of the
                run itself.
        """
        run = self.open(run_id)
        originals = {k for k, a in run.item.assets.items() if a.extra_fields.get(
            "terralens:kind") in ("input", "generated", "prediction")}
        for name in [*layers, *remove]:
            if not isinstance(name, str) or not _LAYER_NAME.match(name) or \
                    name.lower() in _RESERVED or name == INPUT_LAYER or name in originals:
                raise InvalidRequestError(f"layer name {name!r} cannot be added to run {run_id!r}")
        for file_name in files or {}:
            stem, _, suffix = file_name.rpartition(".")
            if not _LAYER_NAME.match(file_name) or suffix not in _FILE_MEDIA_TYPES or \
                    stem.lower() in _RESERVED:
                raise InvalidRequestError(f"run file name {file_name!r} is not allowed")
        item = json.loads((run.path / ITEM_FILE).read_text(encoding="utf-8"))
        tag = uuid.uuid4().hex[:8]
        try:
            for name, da in layers.items():
                tmp = run.path / f"{TMP_PREFIX}{name}-{tag}.tif"
                _fsync_file(write_cog(da, tmp))
                os.replace(tmp, run.path / f"{name}.tif")
                item["assets"][name] = _asset(name, da).to_dict()
            for file_name, data in (files or {}).items():
                tmp = run.path / f"{TMP_PREFIX}{file_name}-{tag}"
                tmp.write_bytes(data)
                _fsync_file(tmp)
                os.replace(tmp, run.path / file_name)
                item["assets"][file_name] = _file_asset(file_name)
            item["properties"].update({str(k): jsonable(v) for k, v in
                                       (properties or {}).items()})
            item["properties"]["updated"] = dt.datetime.now(dt.UTC).isoformat()
            for name in remove:
                item["assets"].pop(name, None)
            tmp_item = run.path / f"{TMP_PREFIX}{ITEM_FILE}-{tag}"
            tmp_item.write_text(json.dumps(item, indent=1), encoding="utf-8")
            _fsync_file(tmp_item)
            os.replace(tmp_item, run.path / ITEM_FILE)
            for name in remove:
                (run.path / f"{name}.tif").unlink(missing_ok=True)
            _fsync_dir(run.path)
        except OSError as err:
            for leftover in run.path.glob(f"{TMP_PREFIX}*-{tag}*"):
                leftover.unlink(missing_ok=True)
            raise RunStoreError(f"cannot update run {run_id!r} ({err}); check free disk space "
                                "and permissions") from err
        return self.open(run_id)

    def delete(self, run_id: str) -> None:
        """Remove a run (it disappears from listings at once, then its files are deleted).

        Raises:
            RunStoreError: no such run, or it cannot be removed.
        """
        folder = self._folder(run_id)
        if not folder.is_dir():
            raise RunStoreError(f"no run {run_id!r} in {str(self.root)!r} to delete")
        trash = self.root / f"{TRASH_PREFIX}{run_id}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, trash)
        except OSError as err:
            raise RunStoreError(f"cannot delete run {run_id!r}: {err}") from err
        shutil.rmtree(trash, ignore_errors=True)
        self._write_catalog()

    def _write_catalog(self) -> None:
        """Rewrite ``catalog.json`` (atomically) from the runs on disk."""
        links: list[dict[str, Any]] = [
            {"rel": "root", "href": f"./{CATALOG_FILE}", "type": "application/json"},
        ]
        for folder in sorted(self.root.iterdir()):
            if not folder.name.startswith(".") and (folder / ITEM_FILE).is_file():
                links.append({"rel": "item", "href": f"./{folder.name}/{ITEM_FILE}",
                              "type": "application/geo+json"})
        catalog = {
            "type": "Catalog", "stac_version": pystac.get_stac_version(), "id": "terralens-runs",
            "description": "TerraLens runs: TerraMind outputs as COGs with their provenance.",
            "links": links,
        }
        tmp = self.root / f"{TMP_PREFIX}{CATALOG_FILE}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(catalog, indent=1), encoding="utf-8")
            os.replace(tmp, self.root / CATALOG_FILE)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("could not update %s: %s", self.root / CATALOG_FILE, err)
