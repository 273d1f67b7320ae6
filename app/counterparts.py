"""The real counterpart of each generated modality: which collection, which items, read how.

=========  =========================================================================
DEM        Copernicus DEM GLO-30 (``cop-dem-glo-30``, asset ``data``, metres)
LULC       Esri/IO annual land cover (``io-lulc-annual-v02``, asset ``data``) of the
           scene's year, its codes mapped onto TerraMind's classes by name from the
           collection's ``classification:classes`` (default 1,2,4,5,7,8,9,10,11 → 1..9)
S1GRD      the nearest ``sentinel-1-grd`` acquisition within ±N days (vv/vh amplitude DN,
           uncalibrated: 20·log10 DN)
S1RTC      the nearest ``sentinel-1-rtc`` acquisition within ±N days (gamma0 → dB); on
           Planetary Computer this needs a subscription key
NDVI       the NDVI of the run's own input scene, (B08 − B04) / (B08 + B04)
=========  =========================================================================

Each is searched on the run's STAC catalog and read onto the run's grid
(:func:`app.run_grid.read_onto_grid`); when none is found, :class:`CounterpartMissingError`
says why.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pystac_client.exceptions import APIError
from rasterio.warp import Resampling, reproject

from app.aoi import AOI
from app.catalog import open_catalog
from app.colors import CLASS_NODATA
from app.run_grid import Grid, read_onto_grid
from app.signing import HrefSigner, is_planetary_computer
from app.transport import short_error
from inference.errors import CatalogError, TerraLensError
from inference.modalities import LULC_CLASSES, Modality

DEM_COLLECTION = "cop-dem-glo-30"
LULC_COLLECTION = "io-lulc-annual-v02"
S1_COLLECTIONS = {Modality.S1GRD: "sentinel-1-grd", Modality.S1RTC: "sentinel-1-rtc"}
#: Esri/IO annual land-cover codes of TerraMind's classes 1..9, in order (used when the
#: collection does not list ``classification:classes``).
IO_LULC_CODES: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 9, 10, 11)
#: Most items read for one counterpart (DEM tiles over a large AOI, same-day S1 frames).
MAX_ITEMS = 16


class CounterpartMissingError(TerraLensError):
    """No real counterpart of a generated layer could be found (the message says why)."""


@dataclass(frozen=True)
class Counterpart:
    """Where the real layer came from."""

    collection: str
    item_ids: tuple[str, ...]
    datetime: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"collection": self.collection, "items": list(self.item_ids),
                "datetime": self.datetime, "note": self.note}



def _search(stac_url: str, timeout_s: float, collection: str, aoi: AOI,
            datetime: str | None = None) -> list[dict[str, Any]]:
    client = open_catalog(stac_url, timeout_s)
    kwargs: dict[str, Any] = {"collections": [collection], "intersects": aoi.geometry,
                              "max_items": 200, "limit": 100}
    if datetime:
        kwargs["datetime"] = datetime
    try:
        return [dict(i) for i in client.search(**kwargs).items_as_dicts()]
    except APIError as err:
        raise CatalogError(f"searching {collection!r} on {stac_url!r} failed "
                           f"({short_error(err)})") from err


def _href(item: Mapping[str, Any], asset: str) -> str:
    assets = item.get("assets") or {}
    entry = assets.get(asset) or assets.get(asset.upper())
    if not isinstance(entry, Mapping) or not isinstance(entry.get("href"), str):
        raise CounterpartMissingError(
            f"item {item.get('id')!r} of {item.get('collection')!r} has no {asset!r} asset")
    return str(entry["href"])


def _when(item: Mapping[str, Any]) -> dt.datetime | None:
    props = item.get("properties") or {}
    raw = props.get("datetime") or props.get("start_datetime")
    if not isinstance(raw, str):
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def lulc_code_map(collection: Mapping[str, Any] | None) -> dict[int, int]:
    """Esri/IO code → TerraMind class, by class name from the collection's
    ``classification:classes`` (``item_assets.data`` or ``summaries``); the default table
    :data:`IO_LULC_CODES` fills what the collection does not name."""
    mapping = {code: index for index, code in enumerate(IO_LULC_CODES, start=1)}
    if not collection:
        return mapping
    classes: Any = ((collection.get("item_assets") or {}).get("data") or {}).get(
        "classification:classes") or (collection.get("summaries") or {}).get(
        "classification:classes")
    if not isinstance(classes, list):
        return mapping
    ours = {_norm(c.name): c.index for c in LULC_CLASSES if c.index > 0}
    found: dict[int, int] = {}
    for entry in classes:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("value"), int):
            continue
        for key in ("name", "description", "title"):
            index = ours.get(_norm(str(entry.get(key, ""))))
            if index is not None:
                found[int(entry["value"])] = index
                break
    if found:
        mapping = {code: index for code, index in mapping.items()
                   if index not in found.values()}
        mapping.update(found)
    return mapping


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower().replace("_", " "))


@dataclass(frozen=True)
class CounterpartQuery:
    """What finding a counterpart needs: the run, its AOI, the catalog and its limits."""


    run: Any
    aoi: AOI
    stac_url: str
    timeout_s: float
    s1_days: int
    has_pc_key: bool
    signer: HrefSigner


def _scene_time(run: Any) -> dt.datetime:
    when = run.datetime or run.created
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def real_dem(ctx: CounterpartQuery, grid: Grid) -> tuple[np.ndarray, Counterpart]:
    """The Copernicus DEM GLO-30 tiles over the AOI, bilinear onto ``grid`` (metres)."""
    items = _search(ctx.stac_url, ctx.timeout_s, DEM_COLLECTION, ctx.aoi)[:MAX_ITEMS]
    if not items:
        raise CounterpartMissingError(
            f"no {DEM_COLLECTION} (Copernicus DEM GLO-30) tile covers the AOI on the catalog")
    values = read_onto_grid([_href(i, "data") for i in items], grid,
                            resampling=Resampling.bilinear, signer=ctx.signer)
    return values, Counterpart(DEM_COLLECTION, tuple(i["id"] for i in items))


def real_lulc(ctx: CounterpartQuery, grid: Grid) -> tuple[np.ndarray, Counterpart]:
    """The Esri/IO land cover of the scene's year, nearest onto ``grid``, as TerraMind classes."""
    year = _scene_time(ctx.run).year
    items = _search(ctx.stac_url, ctx.timeout_s, LULC_COLLECTION, ctx.aoi,
                    f"{year}-01-01T00:00:00Z/{year}-12-31T23:59:59Z")
    items = [i for i in items if (_when(i) or dt.datetime.min.replace(tzinfo=dt.UTC)).year
             == year][:MAX_ITEMS] or items[:MAX_ITEMS]
    if not items:
        raise CounterpartMissingError(
            f"no {LULC_COLLECTION} land-cover map for {year} (the scene's year) over the AOI")
    collection: dict[str, Any] | None = None
    try:
        found = open_catalog(ctx.stac_url, ctx.timeout_s).get_collection(LULC_COLLECTION)
        collection = found.to_dict() if found is not None else None
    except (APIError, KeyError, ValueError):
        pass  # the default code table applies
    codes = read_onto_grid([_href(i, "data") for i in items], grid,
                           resampling=Resampling.nearest, signer=ctx.signer)
    mapped = np.full(codes.shape, CLASS_NODATA, dtype=np.uint8)
    for code, index in lulc_code_map(collection).items():
        mapped[codes == code] = index
    return mapped, Counterpart(LULC_COLLECTION, tuple(i["id"] for i in items), str(year),
                               note="Esri/IO codes mapped onto TerraMind's classes by name")


def real_s1(ctx: CounterpartQuery, grid: Grid, modality: Modality,
            ) -> tuple[np.ndarray, Counterpart]:
    """The nearest Sentinel-1 GRD/RTC acquisition within ± ``s1_days``, in dB on ``grid``."""
    collection = S1_COLLECTIONS[modality]
    label = "RTC" if modality is Modality.S1RTC else "GRD"
    if modality is Modality.S1RTC and is_planetary_computer(ctx.stac_url) and not ctx.has_pc_key:
        raise CounterpartMissingError(
            "Sentinel-1 RTC on Planetary Computer needs a subscription key: set "
            "PC_SDK_SUBSCRIPTION_KEY (or PC_SDK_SUBSCRIPTION_KEY_FILE) and check again")
    when = _scene_time(ctx.run)
    day = when.date()
    window = dt.timedelta(days=ctx.s1_days)
    start, end = day - window, day + window
    found = _search(ctx.stac_url, ctx.timeout_s, collection, ctx.aoi,
                    f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59Z")
    timed = [(t, i) for i in found if (t := _when(i)) is not None]
    if not timed:
        raise CounterpartMissingError(
            f"no Sentinel-1 {label} acquisition within {ctx.s1_days} days of "
            f"{day.isoformat()} over the AOI ({collection})")
    nearest = min(timed, key=lambda ti: (abs(ti[0] - when), ti[1]["id"]))[0]
    items = [i for t, i in timed if t.date() == nearest.date()][:MAX_ITEMS]
    bands = []
    for pol in ("vv", "vh"):
        raw = read_onto_grid([_href(i, pol) for i in items], grid,
                             resampling=Resampling.bilinear, signer=ctx.signer)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = 20.0 if modality is Modality.S1GRD else 10.0
            bands.append(np.where(raw > 0, factor * np.log10(raw), np.nan).astype(np.float32))
    note = ("uncalibrated GRD amplitude as 20·log10(DN): compare patterns (r, SSIM), not "
            "levels" if modality is Modality.S1GRD else "gamma0 as 10·log10")
    delta = (nearest.date() - day).days
    return np.stack(bands), Counterpart(
        collection, tuple(i["id"] for i in items), nearest.isoformat(),
        note=f"{note}; acquired {delta:+d} day(s) from the scene")


def real_ndvi(ctx: CounterpartQuery, grid: Grid) -> tuple[np.ndarray, Counterpart]:
    """The NDVI of the run's own input scene, bilinear onto ``grid``."""
    if ctx.run.input_name is None:
        raise CounterpartMissingError(
            "the run did not keep its input scene, so there is no measured NDVI to compare; "
            "run the generation again")
    scene = ctx.run.load_layer(ctx.run.input_name)
    names = [str(b) for b in scene["band"].values]
    if not {"B04", "B08"} <= set(names):
        raise CounterpartMissingError(
            f"the run's input has no B04/B08 bands (it has {names!r}): no measured NDVI")
    b04 = scene.sel(band="B04").values.astype(np.float64)
    b08 = scene.sel(band="B08").values.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.where(b04 + b08 > 0, (b08 - b04) / (b08 + b04), np.nan).astype(np.float32)
    src = grid.empty()
    reproject(ndvi, src, src_transform=scene.rio.transform(), src_crs=scene.rio.crs,
              src_nodata=np.nan, dst_transform=grid.transform, dst_crs=grid.crs,
              dst_nodata=np.nan, resampling=Resampling.bilinear)
    return src, Counterpart("input", (str(scene.attrs.get("scene_id", ctx.run.request.scene_id)),),
                            str(scene.attrs.get("datetime") or ""),
                            note="NDVI of the input scene's own B04/B08")


def read_counterpart(ctx: CounterpartQuery, grid: Grid, modality: Modality,
                     ) -> tuple[np.ndarray, Counterpart]:
    """The real counterpart of ``modality`` on ``grid`` and where it came from.

    Raises:
        TerraLensError: none found (:class:`CounterpartMissingError`), or the catalog or a file
            cannot be read.
    """
    if modality is Modality.DEM:
        return real_dem(ctx, grid)
    if modality is Modality.LULC:
        return real_lulc(ctx, grid)
    if modality in S1_COLLECTIONS:
        return real_s1(ctx, grid, modality)
    if modality is Modality.NDVI:
        return real_ndvi(ctx, grid)
    raise CounterpartMissingError(f"no real counterpart is known for {modality.value!r}")
