"""Reading real rasters onto a run's grid (rasterio's warper), for comparing them pixel by pixel.

Each GeoTIFF is read in its own CRS (geotransform or GCPs, e.g. Sentinel-1 GRD) and warped onto
the run's grid; only the source windows over the grid are read, and several files are mosaicked
(first with data wins). A read refused because a signed URL expired is re-signed once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject

from app.aoi import AOI
from app.rasters import COG_URL_ENV
from app.scenes import aoi_mask
from app.signing import HrefSigner
from app.transport import short_error
from inference.errors import AssetAccessError

_REFUSED = re.compile(r"\b(401|403)\b|AuthenticationFailed|Signature|expired", re.IGNORECASE)


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
