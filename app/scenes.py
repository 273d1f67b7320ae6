"""Read the AOI window of a scene with odc-stac into the TerraLens raster contract.

Sentinel-2 L2A: the 12 bands TerraMind expects (:data:`S2L2A_BANDS`) at 10 m in the scene's UTM
CRS, float32 DN with nodata as NaN and the +1000 DN offset of processing baselines ≥ 04.00
removed (``offset_applied``), clipped at 0. The SCL band is read on the same grid to report the
AOI's cloud share. Sentinel-1 RTC: VV and VH gamma0 in dB (10·log10; non-positive → NaN).

Same-day items (adjacent tiles) are mosaicked (``groupby="solar_day"``). Assets are signed right
before reading on Planetary Computer (:class:`app.signing.HrefSigner`); an access refusal (HTTP
401/403, i.e. an expired SAS token) re-signs once and then raises
:class:`~inference.errors.AssetAccessError`.

The output keeps the whole AOI bounding box (a rectangle, as models need); shares are computed
over the pixels inside the AOI polygon only.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pystac
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.errors import RasterioError
from rasterio.features import geometry_mask

from app.aoi import AOI
from app.catalog import Collection, SceneSummary, aoi_coverage_percent
from app.settings import DEFAULT_MAX_READ_PIXELS
from app.signing import HrefSigner
from app.transport import check_seconds
from inference.errors import AssetAccessError, InvalidAOIError, SceneError
from inference.modalities import (
    MODALITY_INFO,
    S1_BANDS,
    S2_BOA_ADD_OFFSET,
    S2_OFFSET_BASELINE,
    S2L2A_BANDS,
    SCL_CLOUDY,
    SCL_NODATA,
    Modality,
)

#: Output pixel size in metres.
DEFAULT_RESOLUTION_M = 10.0
#: A scene read (every band, tile and retry) gives up after this many per-request time-outs.
READ_DEADLINE_FACTOR = 15.0
#: Bands read per collection (S2: the 12 model bands and SCL).
_READ_BANDS = {"sentinel-2-l2a": len(S2L2A_BANDS) + 1, "sentinel-1-rtc": len(S1_BANDS)}
#: Stretch (DN) used for true-colour previews.
RGB_STRETCH = (0.0, 3000.0)
#: Bands of the true-colour preview, in R, G, B order.
RGB_BANDS = ("B04", "B03", "B02")

_REFUSED = re.compile(
    r"\b(401|403)\b|AuthenticationFailed|AuthorizationFailure|AuthorizationPermissionMismatch"
    r"|Signature (not valid|fields not well formed)|expired",
    re.IGNORECASE,
)


def baseline_has_offset(baseline: str | None) -> bool:
    """Whether a Sentinel-2 processing baseline (e.g. ``"04.00"``) carries the +1000 DN offset."""
    if not baseline:
        return False
    try:
        return float(baseline) >= float(S2_OFFSET_BASELINE)
    except ValueError:
        return str(baseline) >= S2_OFFSET_BASELINE


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone containing (lon, lat)."""
    zone = min(int((lon + 180.0) // 6.0) + 1, 60)
    return (32600 if lat >= 0 else 32700) + zone


def _item_epsg(item: Mapping[str, Any]) -> int | None:
    """EPSG from ``proj:code``/``proj:epsg`` on the item or, failing that, on a data asset."""
    holders: list[Mapping[str, Any]] = [item.get("properties") or {}]
    holders += [a for a in (item.get("assets") or {}).values() if isinstance(a, Mapping)]
    for holder in holders:
        code = holder.get("proj:code")
        if isinstance(code, str) and code.upper().startswith("EPSG:"):
            try:
                return int(code.split(":", 1)[1])
            except ValueError:
                continue
        epsg = holder.get("proj:epsg")
        if isinstance(epsg, int) and not isinstance(epsg, bool):
            return epsg
    return None


def _as_item_dicts(items: Sequence[Mapping[str, Any] | SceneSummary]) -> list[dict[str, Any]]:
    if isinstance(items, Mapping | SceneSummary):
        items = [items]
    out: list[dict[str, Any]] = []
    for item in items:
        raw = item.item if isinstance(item, SceneSummary) else item
        if not isinstance(raw, Mapping) or not raw.get("id"):
            raise SceneError(f"not a STAC Item: {raw!r:.120}")
        out.append(dict(raw))
    if not out:
        raise SceneError("no scene given: pick a scene from the search results first")
    return out


def _collection_of(items: list[dict[str, Any]]) -> Collection:
    names = {str(i.get("collection") or "") for i in items}
    if len(names) != 1:
        raise SceneError(f"the items come from several collections {sorted(names)!r}: pick one")
    name = names.pop()
    try:
        collection = Collection(name)
    except ValueError as err:
        raise SceneError(
            f"collection {name!r} cannot be loaded; use sentinel-2-l2a or sentinel-1-rtc"
        ) from err
    if collection is Collection.SENTINEL_1_GRD:
        raise SceneError(
            "sentinel-1-grd scenes are in radar geometry and cannot be windowed to an AOI: "
            "search sentinel-1-rtc instead"
        )
    return collection


def _choose_crs(items: list[dict[str, Any]], aoi: AOI) -> CRS:
    """The CRS of the item covering most of the AOI (else the AOI's UTM zone)."""
    ranked: dict[int, float] = {}
    for item in items:
        epsg = _item_epsg(item)
        geometry = item.get("geometry")
        if epsg is not None and isinstance(geometry, Mapping):
            ranked[epsg] = ranked.get(epsg, 0.0) + aoi_coverage_percent(geometry, aoi) + 1e-6
    if ranked:
        epsg = max(ranked, key=lambda code: ranked[code])
        try:
            return CRS.from_epsg(epsg)
        except CRSError as err:
            raise SceneError(
                f"the scene declares its grid as EPSG:{epsg} (proj:epsg / proj:code), a code "
                "PROJ does not know: the item is malformed; pick another scene"
            ) from err
    lon, lat = aoi.centroid
    return CRS.from_epsg(utm_epsg(lon, lat))


def _check_overlap(items: list[dict[str, Any]], aoi: AOI) -> None:
    footprints = []
    for item in items:
        geometry = item.get("geometry")
        if not isinstance(geometry, Mapping):
            raise SceneError(f"item {item['id']!r} has no geometry: it cannot be windowed")
        footprints.append(shapely.geometry.shape(geometry))
    if not shapely.union_all(footprints).intersects(aoi.shape):
        ids = [i["id"] for i in items]
        raise SceneError(
            f"the AOI (bbox {tuple(round(v, 5) for v in aoi.bbox)!r}) lies outside scene(s) "
            f"{ids!r}: pick a scene whose footprint covers the AOI"
        )


def _geobox(aoi: AOI, crs: CRS, resolution: float) -> Any:
    from odc.geo.geobox import GeoBox

    to_crs = Transformer.from_crs(4326, crs, always_xy=True)
    geom = shapely.transform(aoi.shape, to_crs.transform, interleaved=False)
    return GeoBox.from_bbox(geom.bounds, crs=crs.to_string(), resolution=resolution), geom


def _rasterise(geom: Any, shape: tuple[int, int], transform: Any) -> np.ndarray:
    """True for the pixels whose centre is inside ``geom`` (all it touches when that is none)."""
    mapping = [shapely.geometry.mapping(geom)]
    inside: np.ndarray = ~geometry_mask(mapping, out_shape=shape, transform=transform,
                                        all_touched=False)
    if not inside.any():  # AOI thinner than a pixel: use the pixels it touches
        inside = ~geometry_mask(mapping, out_shape=shape, transform=transform, all_touched=True)
    return inside


def aoi_mask(scene: xr.DataArray, aoi: AOI) -> np.ndarray:
    """The AOI polygon rasterised on the grid of a loaded window: ``[y, x]`` bool, True inside.

    The window covers the AOI's bounding box; a drawn polygon (or a lon/lat rectangle, which
    is a slightly rotated shape in UTM) leaves pixels outside it. Inference runs only the chips
    touching the AOI and masks outputs outside it with this.
    """
    crs = CRS.from_user_input(scene.rio.crs)
    to_crs = Transformer.from_crs(4326, crs, always_xy=True)
    geom = shapely.transform(aoi.shape, to_crs.transform, interleaved=False)
    return _rasterise(geom, (scene.sizes["y"], scene.sizes["x"]), scene.rio.transform())


def _keep_hrefs(item: dict[str, Any]) -> dict[str, Any]:
    """The item without its ``self`` link when every asset href is already absolute.

    pystac resolves hrefs against the ``self`` link, which turns an absolute local path such as
    ``/data/B04.tif`` served by an http catalog into ``http://host/data/B04.tif``.
    """
    hrefs = [a.get("href", "") for a in (item.get("assets") or {}).values()
             if isinstance(a, Mapping)]
    if all(isinstance(h, str) and (h.startswith("/") or "://" in h) for h in hrefs):
        links = [link for link in item.get("links") or [] if link.get("rel") != "self"]
        return {**item, "links": links}
    return item


def check_window(shape_yx: tuple[int, int], bands: int, resolution: float,
                 max_pixels: int) -> None:
    """Refuse a scene window of more than ``max_pixels`` values before it is read.

    Raises:
        InvalidAOIError: bands × height × width exceeds ``max_pixels``; the message gives the
            window, the limit and what to do.
    """
    height, width = (int(v) for v in shape_yx)
    values = bands * height * width
    if values > max_pixels:
        km2 = height * width * resolution**2 / 1e6
        raise InvalidAOIError(
            f"the scene window over this AOI's bounding box is {width:,} × {height:,} px at "
            f"{resolution:g} m ({km2:,.1f} km²) × {bands} bands = {values:,} values, more than "
            f"the limit of {int(max_pixels):,} (TERRALENS_MAX_READ_PIXELS): split the area into "
            "parts that lie close together and load each, or draw a smaller box"
        )


def _is_refused(err: BaseException) -> bool:
    return bool(_REFUSED.search(str(err)))


def _read(
    items: list[dict[str, Any]],
    bands: list[str],
    gbox: Any,
    signer: HrefSigner,
    timeout_s: float,
) -> Any:
    """odc.stac.load with signing, bounded GDAL HTTP settings and one re-sign on refusal.

    Each GDAL request gives up after ``timeout_s`` in all (``GDAL_HTTP_TIMEOUT`` bounds the
    whole transfer; a transfer slower than 1 kB/s for ``timeout_s`` is cut too); the read as a
    whole gives up after ``READ_DEADLINE_FACTOR × timeout_s``.
    """
    import odc.stac

    ids = [i["id"] for i in items]
    deadline_s = READ_DEADLINE_FACTOR * timeout_s

    def load_now() -> Any:
        stac_items = [pystac.Item.from_dict(_keep_hrefs(i)) for i in items]
        with rasterio.Env(
            GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
            GDAL_HTTP_TIMEOUT=str(max(1, int(timeout_s))),
            GDAL_HTTP_CONNECTTIMEOUT=str(max(1, min(int(timeout_s), 5))),
            GDAL_HTTP_LOW_SPEED_TIME=str(max(1, int(timeout_s))),
            GDAL_HTTP_LOW_SPEED_LIMIT="1024",
            GDAL_HTTP_MAX_RETRY="2",
            GDAL_HTTP_RETRY_DELAY="0.5",
        ):
            return odc.stac.load(
                stac_items,
                bands=bands,
                geobox=gbox,
                groupby="solar_day",
                patch_url=signer if signer.active else None,
                fail_on_error=True,
            )

    def load() -> Any:
        # GDAL cannot be interrupted; the read runs in a worker that is left to its own
        # (bounded) time-outs when the deadline passes, and the caller gets the answer now.
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="terralens-read")
        try:
            return pool.submit(load_now).result(timeout=deadline_s)
        except concurrent.futures.TimeoutError as err:
            raise AssetAccessError(
                f"reading scene {ids!r} did not finish within {deadline_s:g} s (the overall "
                "deadline, 15 × TERRALENS_STAC_TIMEOUT): the asset server is too slow or does "
                "not answer; try again later or a smaller area"
            ) from err
        finally:
            pool.shutdown(wait=False)

    try:
        return load()
    except (KeyError, ValueError) as err:
        raise SceneError(
            f"scene {ids!r} lacks what TerraLens needs ({_short(err)}); bands asked: {bands!r}"
        ) from err
    except RasterioError as err:
        if not (signer.active and _is_refused(err)):
            hint = (
                "access was refused: the catalog may need credentials"
                if _is_refused(err) else "check that the asset exists and is reachable"
            )
            raise AssetAccessError(
                f"could not read scene {ids!r} ({_short(err)}); {hint}"
            ) from err
    # Refused on Planetary Computer: the SAS token expired (≈45 min) or was revoked.
    signer.refresh()
    try:
        return load()
    except RasterioError as err:
        if _is_refused(err):
            raise AssetAccessError(
                f"reading scene {ids!r} was refused even after re-signing ({_short(err)}): "
                "the SAS token expired or is not accepted; try again in a minute or set "
                "PC_SDK_SUBSCRIPTION_KEY"
            ) from err
        raise AssetAccessError(f"could not read scene {ids!r} ({_short(err)})") from err
    except (KeyError, ValueError) as err:  # pragma: no cover - same items loaded once already
        raise SceneError(f"scene {ids!r} cannot be loaded ({_short(err)})") from err


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _single_time(ds: xr.Dataset, ids: list[str]) -> xr.Dataset:
    if ds.sizes.get("time", 1) != 1:
        days = [str(t)[:10] for t in ds["time"].values]
        raise SceneError(
            f"items {ids!r} were acquired on {len(days)} different days {days!r}: load one "
            "day at a time"
        )
    return ds.isel(time=0) if "time" in ds.dims else ds


def _float(band: xr.DataArray) -> np.ndarray:
    """float32 values with the band's nodata as NaN."""
    values = band.values.astype(np.float32)
    nodata = band.attrs.get("nodata")
    if nodata is not None and not (isinstance(nodata, float) and np.isnan(nodata)):
        values[band.values == nodata] = np.nan
    return values


def _shares(aoi_mask: np.ndarray, valid: np.ndarray, cloudy: np.ndarray | None) -> tuple[
    float, float
]:
    n_in = int(aoi_mask.sum())
    n_valid = int((valid & aoi_mask).sum())
    valid_share = n_valid / n_in if n_in else 0.0
    if cloudy is None or n_valid == 0:
        return 0.0, valid_share
    return int((cloudy & valid & aoi_mask).sum()) / n_valid, valid_share


def load_scene(
    items: Sequence[Mapping[str, Any] | SceneSummary],
    aoi: AOI,
    *,
    stac_url: str,
    resolution: float = DEFAULT_RESOLUTION_M,
    timeout_s: float = 20.0,
    signer: HrefSigner | None = None,
    subscription_key: str | None = None,
    max_pixels: int = DEFAULT_MAX_READ_PIXELS,
) -> xr.DataArray:
    """Read the AOI window of one acquisition (one or more same-day tiles).

    The window's size is checked before anything is read: bands × height × width at
    ``resolution`` must not exceed ``max_pixels``.

    Args:
        items: STAC Item dicts (or :class:`SceneSummary`) of one collection and one day.
        aoi: The area of interest; the output covers its bounding box in the scene's CRS.
        stac_url: Catalog the items came from (decides whether assets are signed).
        resolution: Output pixel size in metres (10 for TerraMind).
        timeout_s: Time-out for HTTP reads and SAS-token requests, in seconds.
        signer: Href signer to use (default: one for ``stac_url`` with ``subscription_key``).
        subscription_key: The Planetary Computer key (``Settings.pc_subscription_key``).
        max_pixels: Most pixel values read (``Settings.max_read_pixels``).

    Returns:
        ``DataArray`` (band, y, x), float32, NaN as nodata, CRS written with rioxarray, and
        attrs per the raster contract plus ``aoi_cloud_share`` and ``aoi_valid_share`` (0..1).

    Raises:
        SceneError: items of several days/collections, AOI outside the scene, or only nodata
            inside the AOI.
        InvalidAOIError: the window over the AOI's bounding box holds more than ``max_pixels``.
        AssetAccessError: an asset cannot be read or signed (expired SAS token included), or
            the read did not finish within its deadline.
    """
    timeout_s = check_seconds(timeout_s, "the read time-out")
    raw = _as_item_dicts(items)
    collection = _collection_of(raw)
    _check_overlap(raw, aoi)
    ids = [i["id"] for i in raw]
    signer = signer or HrefSigner(stac_url, subscription_key=subscription_key,
                                  timeout_s=min(timeout_s, 10.0))
    crs = _choose_crs(raw, aoi)
    gbox, aoi_in_crs = _geobox(aoi, crs, resolution)
    check_window(gbox.shape.yx, _READ_BANDS[collection.value], resolution, max_pixels)
    inside = _rasterise(aoi_in_crs, gbox.shape.yx, gbox.affine)

    attrs: dict[str, Any] = {}
    if collection is Collection.SENTINEL_2_L2A:
        offsets = {S2_BOA_ADD_OFFSET if baseline_has_offset(
            (i.get("properties") or {}).get("s2:processing_baseline")) else 0 for i in raw}
        if len(offsets) > 1:
            raise SceneError(
                f"items {ids!r} mix processing baselines before and after "
                f"{S2_OFFSET_BASELINE} (different DN offsets): load one tile at a time"
            )
        offset = offsets.pop()
        ds = _single_time(_read(raw, [*S2L2A_BANDS, "SCL"], gbox, signer, timeout_s), ids)
        stack = np.stack([_float(ds[b]) for b in S2L2A_BANDS])
        if offset:
            stack -= offset
        np.clip(stack, 0.0, None, out=stack)  # NaN stays NaN
        scl = ds["SCL"].values
        valid = ~np.isin(scl, sorted(SCL_NODATA)) & np.all(np.isfinite(stack), axis=0)
        cloudy = np.isin(scl, sorted(SCL_CLOUDY))
        cloud_share, valid_share = _shares(inside, valid, cloudy)
        modality, band_names = Modality.S2L2A, list(S2L2A_BANDS)
        attrs["offset_applied"] = int(offset)
        baselines = sorted({str((i.get("properties") or {}).get("s2:processing_baseline"))
                            for i in raw})
        attrs["processing_baseline"] = ",".join(baselines)
    else:
        ds = _single_time(_read(raw, ["vv", "vh"], gbox, signer, timeout_s), ids)
        linear = np.stack([_float(ds["vv"]), _float(ds["vh"])])
        with np.errstate(divide="ignore", invalid="ignore"):
            stack = np.where(linear > 0, 10.0 * np.log10(linear), np.nan).astype(np.float32)
        valid = np.all(np.isfinite(stack), axis=0)
        cloud_share, valid_share = _shares(inside, valid, None)
        modality, band_names = Modality.S1RTC, list(S1_BANDS)
        attrs["offset_applied"] = 0
    if valid_share == 0.0:
        raise SceneError(
            f"scene {ids!r} holds no valid pixels inside the AOI (all nodata): pick another "
            "scene or move the AOI"
        )
    info = MODALITY_INFO[modality]
    times = sorted(str((i.get("properties") or {}).get("datetime")) for i in raw)
    attrs.update({
        "modality": modality.value,
        "units": info.units,
        "long_name": info.long_name,
        "kind": "input",
        "synthetic": False,
        "scene_id": "+".join(ids),
        "collection": collection.value,
        "datetime": times[0],
        "aoi_cloud_share": float(cloud_share),
        "aoi_valid_share": float(valid_share),
        "resolution_m": float(resolution),
    })
    da = xr.DataArray(
        stack.astype(np.float32, copy=False),
        dims=("band", "y", "x"),
        coords={"band": band_names, "y": ds["y"].values, "x": ds["x"].values},
        attrs=attrs,
        name=modality.value,
    )
    da = da.rio.write_crs(crs)
    return da.rio.write_transform(gbox.affine)


def true_colour_rgb(
    da: xr.DataArray, stretch: tuple[float, float] = RGB_STRETCH
) -> np.ndarray:
    """An 8-bit true-colour image (H, W, 3) from B04/B03/B02 with a linear stretch.

    Args:
        da: An S2L2A array from :func:`load_scene` (DN, offset removed).
        stretch: (low, high) DN mapped to 0 and 255.

    Raises:
        SceneError: the array lacks one of B04, B03, B02.
    """
    names = [str(b) for b in da["band"].values] if "band" in da.coords else []
    missing = [b for b in RGB_BANDS if b not in names]
    if missing:
        raise SceneError(f"a true-colour preview needs bands {RGB_BANDS!r}; missing {missing!r}")
    low, high = stretch
    if not high > low:
        raise SceneError(f"the stretch must have high > low, got {stretch!r}")
    rgb = np.stack([da.sel(band=b).values.astype(np.float32) for b in RGB_BANDS], axis=-1)
    scaled = (rgb - low) / (high - low) * 255.0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
