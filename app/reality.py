"""How close is ``[G]`` to real? A run's generated layers against real measurements.

For every generated layer of a run the real counterpart over the run's AOI is found on the same
STAC catalog and read onto the run's grid (rasterio's warper: bilinear for continuous values,
nearest for classes; each item's COG in its own CRS, tiles mosaicked, GCP-georeferenced radar
scenes warped through their GCPs):

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

Pixels are compared inside the AOI where both layers hold data; :mod:`app.metrics` computes the
numbers. A :class:`RealityReport` holds, per layer, the metrics, or the reason no counterpart
was found ("no Sentinel-1 GRD acquisition within 12 days of 2022-06-15"), plus the ``[R]`` real
layers and the ``[D]`` difference layers (G − R; for classes 1 where they agree, 0 where not),
which :func:`save_report` stores with the run.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from pystac_client.exceptions import APIError
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject

from app.aoi import AOI
from app.catalog import open_catalog
from app.colors import CLASS_NODATA
from app.metrics import class_metrics, continuous_metrics
from app.rasters import COG_URL_ENV
from app.scenes import aoi_mask
from app.signing import HrefSigner, is_planetary_computer
from app.transport import short_error
from inference.errors import AssetAccessError, CatalogError, InvalidRequestError, TerraLensError
from inference.modalities import LULC_CLASSES, MODALITY_INFO, S1_BANDS, Modality

if TYPE_CHECKING:
    from app.runs import RunStore
    from app.stored_run import Run

#: Default search window (± days around the scene) for Sentinel-1 counterparts.
DEFAULT_S1_DAYS = 12
DEM_COLLECTION = "cop-dem-glo-30"
LULC_COLLECTION = "io-lulc-annual-v02"
S1_COLLECTIONS = {Modality.S1GRD: "sentinel-1-grd", Modality.S1RTC: "sentinel-1-rtc"}
#: Esri/IO annual land-cover codes of TerraMind's classes 1..9, in order (used when the
#: collection does not list ``classification:classes``).
IO_LULC_CODES: tuple[int, ...] = (1, 2, 4, 5, 7, 8, 9, 10, 11)
#: Layer kinds of the results, as in the raster contract's ``kind`` attr.
KIND_REALITY = "reality"
KIND_DIFFERENCE = "difference"
#: Source-name prefixes of the real and difference layers in the run store.
REAL_PREFIX = "R_"
DIFF_PREFIX = "D_"
#: Files of the metrics beside the run's COGs.
METRICS_JSON = "reality_metrics.json"
METRICS_CSV = "reality_metrics.csv"
#: STAC Item property holding the metrics.
ITEM_PROPERTY = "terralens:reality"
#: Most items read for one counterpart (DEM tiles over a large AOI, same-day S1 frames).
MAX_ITEMS = 16
#: Classes compared for LULC (no data, 0, is left out).
LULC_LABELS: tuple[int, ...] = tuple(c.index for c in LULC_CLASSES if c.index > 0)
_CHECKED = (Modality.DEM, Modality.LULC, Modality.S1GRD, Modality.S1RTC, Modality.NDVI)
_REFUSED = re.compile(r"\b(401|403)\b|AuthenticationFailed|Signature|expired", re.IGNORECASE)


class CounterpartMissingError(TerraLensError):
    """No real counterpart of a generated layer could be found (the message says why)."""


@dataclass(frozen=True)
class Grid:
    """The run's grid: CRS, transform, shape and the AOI polygon on it."""

    crs: Any
    transform: Any
    height: int
    width: int
    inside: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def of(cls, da: xr.DataArray, aoi: AOI) -> Grid:
        """The grid of a run layer, with the AOI rasterised on it."""
        return cls(da.rio.crs, da.rio.transform(), int(da.sizes["y"]), int(da.sizes["x"]),
                   aoi_mask(da, aoi))

    def empty(self) -> np.ndarray:
        """A float32 ``[H, W]`` array of NaN on this grid."""
        return np.full((self.height, self.width), np.nan, dtype=np.float32)


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


# -- Reading real data onto the run grid ----------------------------------------------------------
def read_onto_grid(hrefs: Sequence[str], grid: Grid, *, resampling: Resampling,
                   signer: HrefSigner | None = None) -> np.ndarray:
    """Warp one band of each GeoTIFF onto ``grid`` and mosaic them (first with data wins).

    Each file is read in its own CRS (geotransform or GCPs); only the source windows over the
    grid are read. Source nodata (and NaN) becomes NaN.

    Returns:
        float32 ``[H, W]``, NaN where no file has data.

    Raises:
        AssetAccessError: a file cannot be read (access refused even after re-signing, or
            unreachable).
    """
    out = grid.empty()
    for href in hrefs:
        part = _warp_one(href, grid, resampling, signer)
        fill = np.isnan(out) & np.isfinite(part)
        out[fill] = part[fill]
    return out


def _warp_one(href: str, grid: Grid, resampling: Resampling,
              signer: HrefSigner | None) -> np.ndarray:
    def attempt() -> np.ndarray:
        url = signer(href) if signer is not None else href
        dst = grid.empty()
        with rasterio.Env(**COG_URL_ENV), rasterio.open(url) as ds:
            nodata = ds.nodata
            reproject(
                source=rasterio.band(ds, 1), destination=dst, src_nodata=nodata,
                dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan,
                resampling=resampling,
            )
        return dst

    try:
        return attempt()
    except RasterioError as err:
        if signer is None or not signer.active or not _REFUSED.search(str(err)):
            raise AssetAccessError(
                f"cannot read the real layer {href!r} ({short_error(err)}); check that the "
                "catalog's assets are reachable from the TerraLens server") from err
    signer.refresh()
    try:
        return attempt()
    except RasterioError as err:
        raise AssetAccessError(
            f"reading {href!r} was refused even after re-signing ({short_error(err)}); try "
            "again in a minute or set PC_SDK_SUBSCRIPTION_KEY") from err


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


# -- One counterpart per modality -----------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
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


def _real_dem(ctx: _Context, grid: Grid) -> tuple[np.ndarray, Counterpart]:
    items = _search(ctx.stac_url, ctx.timeout_s, DEM_COLLECTION, ctx.aoi)[:MAX_ITEMS]
    if not items:
        raise CounterpartMissingError(
            f"no {DEM_COLLECTION} (Copernicus DEM GLO-30) tile covers the AOI on the catalog")
    values = read_onto_grid([_href(i, "data") for i in items], grid,
                            resampling=Resampling.bilinear, signer=ctx.signer)
    return values, Counterpart(DEM_COLLECTION, tuple(i["id"] for i in items))


def _real_lulc(ctx: _Context, grid: Grid) -> tuple[np.ndarray, Counterpart]:
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


def _real_s1(ctx: _Context, grid: Grid, modality: Modality) -> tuple[np.ndarray, Counterpart]:
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


def _real_ndvi(ctx: _Context, grid: Grid) -> tuple[np.ndarray, Counterpart]:
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


# -- The check ------------------------------------------------------------------------------------
def _layer_da(values: np.ndarray, template: xr.DataArray, bands: Sequence[str],
              attrs: Mapping[str, Any]) -> xr.DataArray:
    data = values if values.ndim == 3 else values[None]
    da = xr.DataArray(data, dims=("band", "y", "x"),
                      coords={"band": list(bands), "y": template["y"].values,
                              "x": template["x"].values}, attrs=dict(attrs))
    return da.rio.write_crs(template.rio.crs).rio.write_transform(template.rio.transform())


def _attrs(check_kind: str, modality: Modality, counterpart: Counterpart, generated: str,
           **extra: Any) -> dict[str, Any]:
    info = MODALITY_INFO[modality]
    return {"modality": modality.value, "units": info.units, "kind": check_kind,
            "synthetic": False, "compares": generated, "collection": counterpart.collection,
            "counterpart_items": " ".join(counterpart.item_ids),
            "counterpart_datetime": counterpart.datetime or "", **extra}


def _compare(ctx: _Context, name: str, generated: xr.DataArray, modality: Modality
             ) -> LayerCheck:
    grid = Grid.of(generated, ctx.aoi)
    classes = modality is Modality.LULC
    check = LayerCheck(name, modality.value, "classes" if classes else "continuous")
    readers: dict[Modality, Callable[[], tuple[np.ndarray, Counterpart]]] = {
        Modality.DEM: lambda: _real_dem(ctx, grid),
        Modality.LULC: lambda: _real_lulc(ctx, grid),
        Modality.S1GRD: lambda: _real_s1(ctx, grid, Modality.S1GRD),
        Modality.S1RTC: lambda: _real_s1(ctx, grid, Modality.S1RTC),
        Modality.NDVI: lambda: _real_ndvi(ctx, grid),
    }
    try:
        real, counterpart = readers[modality]()
    except TerraLensError as err:
        check.message = str(err)
        return check
    check.counterpart = counterpart
    info = MODALITY_INFO[modality]
    bands = [str(b) for b in np.atleast_1d(generated["band"].values)]
    real = real if real.ndim == 3 else real[None]
    if classes:
        gen = np.asarray(generated.values[0]).astype(np.uint8)
        ref = real[0]
        valid = grid.inside & np.isin(ref, LULC_LABELS) & (gen != CLASS_NODATA)
        names = [c.name for c in LULC_CLASSES if c.index in LULC_LABELS]
        check.metrics[bands[0]] = class_metrics(gen, ref, LULC_LABELS, names, valid)
        ref_out = np.where(grid.inside, ref, CLASS_NODATA).astype(np.uint8)
        agree = np.where(valid, (gen == ref).astype(np.uint8), CLASS_NODATA).astype(np.uint8)
        all_names = json.dumps([c.name for c in LULC_CLASSES])
        check.real = _layer_da(ref_out[None], generated, bands, _attrs(
            KIND_REALITY, modality, counterpart, name, class_names=all_names,
            long_name=f"Real {info.long_name.lower()} ({counterpart.collection})"))
        check.difference = _layer_da(agree[None], generated, bands, {
            **_attrs(KIND_DIFFERENCE, modality, counterpart, name,
                     long_name=f"Agreement of generated and real {info.long_name.lower()}"),
            "modality": "AGREEMENT", "units": "class",
            "class_names": json.dumps(["disagree", "agree"])})
        return check
    if real.shape[0] != len(bands):
        check.message = (f"the real counterpart has {real.shape[0]} band(s), the generated "
                         f"layer {len(bands)} ({bands!r})")
        check.counterpart = None
        return check
    gen_all = np.asarray(generated.values, dtype=np.float32)
    ref_out = np.where(grid.inside[None], real, np.nan).astype(np.float32)
    diff = np.full(gen_all.shape, np.nan, dtype=np.float32)
    for i, band in enumerate(bands):
        valid = grid.inside & np.isfinite(gen_all[i]) & np.isfinite(real[i])
        check.metrics[band] = continuous_metrics(gen_all[i], real[i], valid)
        diff[i][valid] = gen_all[i][valid] - real[i][valid]
    extra: dict[str, Any] = {}
    if modality is Modality.S1GRD:
        extra = {"calibrated": False, "units": "dB (uncalibrated, 20·log10 DN)"}
    check.real = _layer_da(ref_out, generated, bands, _attrs(
        KIND_REALITY, modality, counterpart, name, **extra,
        long_name=f"Real {info.long_name[0].lower()}{info.long_name[1:]} "
                  f"({counterpart.collection})"))
    check.difference = _layer_da(diff, generated, bands, _attrs(
        KIND_DIFFERENCE, modality, counterpart, name,
        long_name=f"Generated minus real {info.long_name[0].lower()}{info.long_name[1:]}"))
    return check


def checkable_layers(layers: Mapping[str, xr.DataArray]) -> dict[str, Modality]:
    """The generated layers of a run that have a real counterpart, with their modality."""
    out: dict[str, Modality] = {}
    for name, da in layers.items():
        is_stack = da.dtype.kind == "f" and da.sizes.get("band", 1) > len(S1_BANDS)
        if str(da.attrs.get("kind")) != "generated" or is_stack:
            continue  # probability stacks
        try:
            modality = Modality(str(da.attrs.get("modality") or name))
        except ValueError:
            continue
        if modality in _CHECKED:
            out[name] = modality
    return out


def check_run(run: Run, *, stac_url: str, s1_days: int = DEFAULT_S1_DAYS,
              timeout_s: float = 20.0, has_pc_key: bool = False,
              signer: HrefSigner | None = None) -> RealityReport:
    """Compare every generated layer of ``run`` with its real counterpart.

    Args:
        run: A stored run.
        stac_url: The catalog to find the counterparts on (the run's own, normally).
        s1_days: Search window for Sentinel-1, ± days around the scene (0..365).
        timeout_s: Time-out per catalog request and per HTTP read, in seconds.
        has_pc_key: Whether a Planetary Computer subscription key is configured (RTC).
        signer: Href signer (default: one for ``stac_url``).

    Returns:
        The report; a missing counterpart (or a catalog/read failure for one layer) is a
        message on that layer, the other layers are still compared.

    Raises:
        InvalidRequestError: a bad window, or the run has no generated layer to check.
    """
    if isinstance(s1_days, bool) or not isinstance(s1_days, int) or not 0 <= s1_days <= 365:
        raise InvalidRequestError(f"the Sentinel-1 window must be 0..365 days, got {s1_days!r}")
    layers = {name: run.load_layer(name) for name in run.layer_names
              if not name.startswith((REAL_PREFIX, DIFF_PREFIX))}
    targets = checkable_layers(layers)
    if not targets:
        raise InvalidRequestError(
            f"run {run.id!r} has no generated DEM, LULC, S1GRD, S1RTC or NDVI layer to check "
            "against real data")
    ctx = _Context(run, AOI(run.request.aoi), stac_url, timeout_s, s1_days, has_pc_key,
                   signer or HrefSigner(stac_url, timeout_s=min(timeout_s, 10.0)))
    checks = [_compare(ctx, name, layers[name], modality) for name, modality in targets.items()]
    return RealityReport(run.id, stac_url, s1_days, checks)


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
