"""A run's STAC metadata: the Item written to ``item.json`` and the store's Catalog.

Each layer is an asset with STAC 1.1 ``bands`` (name, unit, nodata, data type), the projection
extension and, for class maps, ``classification:classes``; the Item carries the request and the
provenance, ``processing:software``, and a ``derived_from`` link to the source scene. Other
files a run keeps (vector exports, tables) are assets too, with their media type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pystac
import shapely.geometry
import xarray as xr

from app.colors import CLASS_NODATA
from app.rasters import class_names
from app.run_request import RunRequest

#: Name under which a run keeps its model input (``input.tif``).
INPUT_LAYER = "input"
ITEM_FILE = "item.json"
CATALOG_FILE = "catalog.json"


def parse_datetime(value: Any) -> dt.datetime | None:
    """An ISO time (or datetime) as an aware UTC-defaulted datetime; ``None`` when absent or
    unparsable."""
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


def layer_asset(name: str, da: xr.DataArray) -> pystac.Asset:
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
FILE_MEDIA_TYPES = {
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
    "csv": "text/csv",
    "json": "application/json",
}


def raster_assets(item: pystac.Item) -> list[str]:
    """The Item's assets that are layers (COGs), in order."""
    return [k for k, a in item.assets.items() if a.media_type == pystac.MediaType.COG]


def file_asset(file_name: str) -> dict[str, Any]:
    """The Item asset of a non-raster file of a run (a vector export or a table)."""
    suffix = file_name.rpartition(".")[2]
    return {"href": f"./{file_name}", "type": FILE_MEDIA_TYPES[suffix],
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



def item_dict(run_id: str, request: RunRequest, layers: Mapping[str, xr.DataArray],
              provenance: Mapping[str, Any], created: dt.datetime) -> dict[str, Any]:
    """The STAC Item of a run as written to its ``item.json``: geometry = AOI, datetime = scene
    time (from the provenance or the layers, else ``created``), properties = request and
    provenance, one asset per layer, links to the store's catalog and the source scene."""
    attrs_time = next((da.attrs.get("datetime") for da in layers.values()
                       if da.attrs.get("datetime")), None)
    scene_time = parse_datetime(provenance.get("datetime")) or parse_datetime(attrs_time)
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
        item.add_asset(name, layer_asset(name, da))
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


def catalog_dict(run_folders: Iterable[str]) -> dict[str, Any]:
    """The store's ``catalog.json``: a STAC Catalog linking the Item of each run folder."""
    links: list[dict[str, Any]] = [
        {"rel": "root", "href": f"./{CATALOG_FILE}", "type": "application/json"},
    ]
    links += [{"rel": "item", "href": f"./{name}/{ITEM_FILE}", "type": "application/geo+json"}
              for name in run_folders]
    return {
        "type": "Catalog", "stac_version": pystac.get_stac_version(), "id": "terralens-runs",
        "description": "TerraLens runs: TerraMind outputs as COGs with their provenance.",
        "links": links,
    }
