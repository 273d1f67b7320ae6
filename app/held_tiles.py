"""Rasters the app holds besides its runs, served as map tiles: the Search page's scene
preview and the layers added on the Layers page (uploaded GeoTIFFs, COG URL windows, catalog
scenes).

Such a raster lives in the analyst's session as an array, not in the run store. To reach the
browser as tiles (:mod:`app.tiles`, ``/tiles/held/<token>/...``) it is written once as a
Cloud-Optimised GeoTIFF into a folder of this process and registered under a random token.
The token → file table is the only way to a file: a request names a token, never a path, and a
token the table does not hold is a 404. The table is bounded (entries and bytes on disk, least
recently used dropped first, its file deleted); a page asks for its raster again on each rerun
(:meth:`HeldRasters.hold`, a dictionary lookup when still held), so a dropped raster comes
back under a new token.

What is held is already bounded where it enters the app: uploads and URL windows by
``TERRALENS_MAX_READ_PIXELS`` (:func:`app.rasters.read_layer`), scenes by the AOI limits.
"""

from __future__ import annotations

import atexit
import re
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import xarray as xr
from rasterio.errors import RasterioError

from app.colors import Style
from app.layers import DisplayLayer
from app.map_rasters import TileOverlay
from app.rasters import write_cog
from app.tiles import NATIVE_ZOOM_EXTRA, TileNotFoundError, TileStyle, layer_id
from inference.errors import RunStoreError

#: Rasters held at once.
MAX_HELD = 48
#: Bytes of held COGs on disk at once.
MAX_HELD_BYTES = 3 * 1024**3
#: Bytes of held PNG images (e.g. the Geolocate page's density grid) in memory at once.
MAX_IMAGE_BYTES = 32 * 1024**2
#: What a token looks like (``secrets.token_urlsafe(18)``); anything else is refused unread.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{24}$")

Bounds = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class HeldRaster:
    """One held raster.

    Attributes:
        token: Its name in tile URLs.
        path: The COG written for it (inside the holder's folder).
        layers: Its display layers by :func:`app.tiles.layer_id`.
        band_index: Band name → 1-based band index in the COG.
        bounds: ``((south, west), (north, east))`` in degrees.
        native_zoom: The Web Mercator zoom whose pixels match the raster's resolution.
        size: Bytes on disk.
    """

    token: str
    path: Path
    layers: dict[str, DisplayLayer]
    band_index: dict[str, int]
    bounds: Bounds
    native_zoom: int
    size: int

    def url_template(self, layer: DisplayLayer, *, base_url_path: str = "",
                     style: Style | None = None) -> str:
        """The Leaflet URL template of one of its layers (drawn with ``style``)."""
        if layer_id(layer) not in self.layers:
            raise TileNotFoundError(f"the held raster has no layer {layer.name!r}")
        base = base_url_path.strip("/")
        prefix = f"/{base}" if base else ""
        query = urlencode(TileStyle.of(style or layer.style).query())
        return (f"{prefix}/tiles/held/{self.token}/{layer_id(layer)}/{{z}}/{{x}}/{{y}}.png"
                + (f"?{query}" if query else ""))


class HeldRasters:
    """The bounded token → COG table of one process.

    Args:
        folder: Where the COGs go (created; default: a temporary folder removed at exit).
        max_entries: Rasters held at once.
        max_bytes: Bytes of COGs on disk at once (the newest raster is kept even when larger).
    """

    def __init__(self, folder: str | Path | None = None, *, max_entries: int = MAX_HELD,
                 max_bytes: int = MAX_HELD_BYTES) -> None:
        if folder is None:
            folder = tempfile.mkdtemp(prefix="terralens-held-")
            atexit.register(shutil.rmtree, folder, True)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._by_token: OrderedDict[str, HeldRaster] = OrderedDict()
        self._by_key: dict[str, str] = {}
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._image_keys: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_token)

    @property
    def disk_bytes(self) -> int:
        """Bytes of the held COGs."""
        with self._lock:
            return sum(h.size for h in self._by_token.values())

    def hold(self, key: str, da: xr.DataArray, layers: Sequence[DisplayLayer]) -> HeldRaster:
        """Hold ``da`` (written once as a COG) for the tiles of ``layers``.

        Args:
            key: What ``da`` is (e.g. an added layer's source name, which carries a content
                hash): the same key returns the raster already held, without writing.
            da: The raster (``band``/``y``/``x`` with a CRS, the raster contract).
            layers: Its display layers (their bands must be bands of ``da``).

        Raises:
            InvalidRequestError: ``da`` does not follow the raster contract.
            RunStoreError: the COG cannot be written or read back.
        """
        with self._lock:
            token = self._by_key.get(key)
            if token is not None and token in self._by_token:
                self._by_token.move_to_end(token)
                return self._by_token[token]
        held = self._write(da, layers)
        with self._lock:
            self._by_token[held.token] = held
            self._by_key[key] = held.token
            self._evict()
        return held

    def get(self, token: str) -> HeldRaster:
        """The raster held under ``token``.

        Raises:
            TileNotFoundError: no raster is held under that token.
        """
        if not TOKEN.match(str(token)):
            raise TileNotFoundError(f"no raster is held under {token!r}")
        with self._lock:
            held = self._by_token.get(token)
            if held is None:
                raise TileNotFoundError(f"no raster is held under {token!r}")
            self._by_token.move_to_end(token)
            return held

    def hold_image(self, key: str, png: bytes) -> str:
        """Hold a small PNG image (drawn whole on a map, e.g. a density grid); its token.

        The same ``key`` returns the same token while the image is held. Images are kept in
        memory within :data:`MAX_IMAGE_BYTES` and :attr:`max_entries`, oldest dropped first.
        """
        with self._lock:
            token = self._image_keys.get(key)
            if token is not None and token in self._images:
                self._images.move_to_end(token)
                return token
            token = secrets.token_urlsafe(18)
            self._images[token] = bytes(png)
            self._image_keys[key] = token
            total = sum(len(v) for v in self._images.values())
            while len(self._images) > 1 and (len(self._images) > self.max_entries
                                             or total > MAX_IMAGE_BYTES):
                dropped, data = self._images.popitem(last=False)
                total -= len(data)
                for k in [k for k, t in self._image_keys.items() if t == dropped]:
                    del self._image_keys[k]
            return token

    def image(self, token: str) -> bytes:
        """The PNG held under ``token``.

        Raises:
            TileNotFoundError: no image is held under that token.
        """
        with self._lock:
            png = self._images.get(str(token)) if TOKEN.match(str(token)) else None
            if png is None:
                raise TileNotFoundError(f"no image is held under {token!r}")
            self._images.move_to_end(token)
            return png

    def _write(self, da: xr.DataArray, layers: Sequence[DisplayLayer]) -> HeldRaster:
        from rio_tiler.io import Reader

        token = secrets.token_urlsafe(18)
        path = self.folder / f"{token}.tif"
        bands = [str(b) for b in np.atleast_1d(da["band"].values)] if "band" in da.coords \
            else ["1"]
        band_index = {b: i + 1 for i, b in enumerate(bands)}
        kept = {layer_id(layer): layer for layer in layers
                if all(b in band_index for b in layer.bands)}
        write_cog(da, path)
        try:
            with Reader(str(path)) as src:
                west, south, east, north = src.get_geographic_bounds("EPSG:4326")
                native = int(src.maxzoom)
        except RasterioError as err:
            path.unlink(missing_ok=True)
            raise RunStoreError(f"cannot read back the held raster: {err}") from err
        return HeldRaster(token=token, path=path, layers=kept, band_index=band_index,
                          bounds=((float(south), float(west)), (float(north), float(east))),
                          native_zoom=native, size=path.stat().st_size)

    def _evict(self) -> None:
        total = sum(h.size for h in self._by_token.values())
        while len(self._by_token) > 1 and (len(self._by_token) > self.max_entries
                                           or total > self.max_bytes):
            token, dropped = self._by_token.popitem(last=False)
            total -= dropped.size
            for key in [k for k, t in self._by_key.items() if t == token]:
                del self._by_key[key]
            dropped.path.unlink(missing_ok=True)


_HELD: HeldRasters | None = None
_HELD_LOCK = threading.Lock()


def held_rasters() -> HeldRasters:
    """The process's held rasters (shared by the pages and the tile route)."""
    global _HELD
    with _HELD_LOCK:
        if _HELD is None:
            _HELD = HeldRasters()
        return _HELD


def held_overlay(held: HeldRaster, layer: DisplayLayer, opacity: float, *,
                 base_url_path: str = "", name: str | None = None) -> TileOverlay:
    """One layer of a held raster as a map tile layer, drawn with ``layer``'s style.

    Args:
        held: The held raster.
        layer: One of its display layers (with the stretch / ramp to draw).
        opacity: 0..1.
        base_url_path: Streamlit's ``server.baseUrlPath``.
        name: The layer's name on the map (default ``layer.name``).
    """
    return TileOverlay(name=name or layer.name, opacity=float(opacity), bounds=held.bounds,
                       max_native_zoom=held.native_zoom + NATIVE_ZOOM_EXTRA,
                       url=held.url_template(layer, base_url_path=base_url_path,
                                             style=layer.style))


def held_image_url(png: bytes, *, base_url_path: str = "",
                   holder: HeldRasters | None = None) -> str:
    """The URL a map loads ``png`` from (held by the app, keyed by its content)."""
    import hashlib

    holder = held_rasters() if holder is None else holder
    token = holder.hold_image(f"png|{hashlib.sha1(png).hexdigest()}", png)
    base = base_url_path.strip("/")
    return f"{'/' + base if base else ''}/tiles/held/{token}.png"
