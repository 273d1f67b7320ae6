"""XYZ map tiles (EPSG:3857 PNGs) rendered from a stored run's COGs, served on the app's port.

The Layers page shows a run's layers as Leaflet tile layers whose URLs point here
(:func:`tile_url_template`); ``app/ui/main.py`` mounts :func:`tile_routes` on Streamlit's own
server (``st.App(routes=...)``), so there is no second server or port.

A tile is read with rio-tiler from the layer's Cloud-Optimised GeoTIFF (GDAL picks the COG's
overviews at low zooms, full 10 m pixels when zoomed in), coloured with the same tables as
legends and exports (:func:`app.colors.colourise`), and encoded as an RGBA PNG (alpha 0 where
there is no data).

Only runs in the store are served: the request names a run id (checked by
:class:`app.runs.RunStore`) and a layer id (one of the run's display layers); the file path
always comes from the store, never from the request. Rendered tiles are kept in a bounded LRU
cache and sent with long-lived HTTP cache headers (URLs carry the run's creation time, so a
re-saved run gets new URLs).
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import numpy as np
from PIL import Image
from rasterio.errors import RasterioError

from app.colors import CLASS_NODATA, RAMPS, Style, StyleKind, colourise
from app.layers import DisplayLayer, display_layers_for
from app.runs import RunStore
from app.stored_run import Run
from inference.errors import InvalidRequestError, RunStoreError, TerraLensError

log = logging.getLogger(__name__)

#: Path of the tile route (Starlette syntax), relative to the server's base URL path.
TILE_PATH = "/tiles/{run_id}/{layer_id}/{z:int}/{x:int}/{y:int}.png"
#: Path of the tiles of a raster the app holds (:mod:`app.held_tiles`): a token, never a path.
HELD_TILE_PATH = "/tiles/held/{token}/{layer_id}/{z:int}/{x:int}/{y:int}.png"
#: Path of a whole PNG image the app holds (e.g. a density grid), by token.
HELD_IMAGE_PATH = "/tiles/held/{token}.png"
#: Tile size in pixels.
TILE_SIZE = 256
#: Zoom levels served beyond rio-tiler's native zoom of a COG (whose pixels are at most as fine
#: as the data's): tiles there show each 10 m pixel as a crisp block.
OVERZOOM = 4
#: Zoom levels above the native zoom that the map asks tiles for (Leaflet scales beyond).
NATIVE_ZOOM_EXTRA = 2
#: Largest zoom ever served.
MAX_ZOOM = 22
#: Bytes of rendered PNGs kept in memory (least recently used dropped first).
CACHE_BYTES = 64 * 1024 * 1024
#: Runs whose display layers (styles) are kept in memory.
RUNS_KEPT = 8
#: ``Cache-Control`` of a tile (URLs are versioned by the run's creation time).
CACHE_CONTROL = "public, max-age=86400"

_SLUG = re.compile(r"[^a-z0-9]+")


class TileNotFoundError(TerraLensError, LookupError):
    """No such run, layer or tile (answered with HTTP 404)."""


class HeldLookup(Protocol):
    """What the tile service needs of :class:`app.held_tiles.HeldRasters` (kept as a protocol:
    that module builds on this one)."""

    def get(self, token: str) -> Any:
        """The held raster under ``token`` (raises :class:`TileNotFoundError`)."""

    def image(self, token: str) -> bytes:
        """The held PNG under ``token`` (raises :class:`TileNotFoundError`)."""


def layer_id(layer: DisplayLayer) -> str:
    """URL-safe id of a display layer within its run: ``"[G] S1GRD-VV"`` → ``"g-s1grd-vv"``."""
    return _SLUG.sub("-", layer.name.lower()).strip("-") or "layer"


@dataclass(frozen=True)
class TileStyle:
    """Overrides of a layer's colouring carried in the tile URL's query string.

    Attributes:
        vmin: Value drawn with the low end of the ramp (continuous and RGB layers).
        vmax: Value drawn with the high end of the ramp.
        ramp: Name of a ramp in :data:`app.colors.RAMPS` (continuous layers).
    """

    vmin: float | None = None
    vmax: float | None = None
    ramp: str | None = None

    def __post_init__(self) -> None:
        for name in ("vmin", "vmax"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidRequestError(f"{name} must be a finite number, got {value!r}")
        if self.vmin is not None and self.vmax is not None and not self.vmax > self.vmin:
            raise InvalidRequestError(
                f"the stretch must grow from low to high, got {self.vmin!r}..{self.vmax!r}"
            )
        if self.ramp is not None and self.ramp not in RAMPS:
            raise InvalidRequestError(
                f"unknown colour ramp {self.ramp!r}; choose one of {sorted(RAMPS)}"
            )

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> TileStyle:
        """Parse ``vmin``/``vmax``/``ramp`` from a query string (other keys are ignored).

        Raises:
            InvalidRequestError: a value is not a number or not a known ramp.
        """
        values: dict[str, float | None] = {}
        for name in ("vmin", "vmax"):
            raw = query.get(name)
            try:
                values[name] = None if raw in (None, "") else float(raw)
            except ValueError as err:
                raise InvalidRequestError(f"{name} must be a number, got {raw!r}") from err
        return cls(vmin=values["vmin"], vmax=values["vmax"], ramp=query.get("ramp") or None)

    @classmethod
    def of(cls, style: Style) -> TileStyle:
        """The overrides that reproduce ``style`` (classes have none)."""
        if style.kind is StyleKind.CLASSES:
            return cls()
        ramp = style.ramp if style.kind is StyleKind.CONTINUOUS else None
        return cls(vmin=float(style.vmin), vmax=float(style.vmax), ramp=ramp)

    def apply(self, style: Style) -> Style:
        """``style`` with these overrides (class maps keep their colours)."""
        if style.kind is StyleKind.CLASSES:
            return style
        vmin = style.vmin if self.vmin is None else self.vmin
        vmax = style.vmax if self.vmax is None else self.vmax
        ramp = self.ramp if (self.ramp and style.kind is StyleKind.CONTINUOUS) else style.ramp
        try:
            return replace(style, vmin=vmin, vmax=vmax, ramp=ramp)
        except InvalidRequestError:
            raise
        except ValueError as err:  # pragma: no cover - Style validates with InvalidRequestError
            raise InvalidRequestError(str(err)) from err

    def query(self) -> dict[str, str]:
        """The query-string parameters (``repr`` of floats round-trips exactly)."""
        out: dict[str, str] = {}
        if self.vmin is not None:
            out["vmin"] = repr(float(self.vmin))
        if self.vmax is not None:
            out["vmax"] = repr(float(self.vmax))
        if self.ramp:
            out["ramp"] = self.ramp
        return out


def run_version(run: Run) -> str:
    """A version tag of a run's content for tile URLs (its creation time)."""
    return f"{run.created.timestamp():.0f}"


def tile_url_template(run: Run, layer: DisplayLayer, *, base_url_path: str = "",
                      style: Style | None = None) -> str:
    """The Leaflet URL template (``.../{z}/{x}/{y}.png?...``) of one run layer.

    Args:
        run: A stored run.
        layer: One of its display layers.
        base_url_path: Streamlit's ``server.baseUrlPath`` (``""`` for none).
        style: The style to draw with (default: the layer's own).
    """
    base = base_url_path.strip("/")
    prefix = f"/{base}" if base else ""
    params = {"v": run_version(run), **TileStyle.of(style or layer.style).query()}
    return (f"{prefix}/tiles/{run.id}/{layer_id(layer)}/{{z}}/{{x}}/{{y}}.png?"
            f"{urlencode(params)}")


#: Most colours a tile may have to go as a palette PNG (8-bit indices).
PALETTE_COLOURS = 256


def _png(rgba: np.ndarray) -> bytes:
    """A PNG of an ``(h, w, 4)`` uint8 tile, lossless either way: with at most 256 distinct
    RGBA colours (a class layer, or a continuous one through a 256-step ramp) a palette PNG
    with the alpha in its tRNS chunk, a third to a half the bytes of RGBA; else RGBA."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    colours, index = np.unique(rgba.view(np.uint32).reshape(-1), return_inverse=True)
    buffer = io.BytesIO()
    if len(colours) <= PALETTE_COLOURS:
        image = Image.fromarray(index.astype(np.uint8).reshape(rgba.shape[:2]), mode="P")
        image.putpalette(colours.view(np.uint8).tobytes(), rawmode="RGBA")
        image.save(buffer, format="PNG", compress_level=6)
    else:
        Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


#: A fully transparent tile (outside the layer's extent).
EMPTY_TILE = _png(np.zeros((TILE_SIZE, TILE_SIZE, 4), dtype=np.uint8))


@dataclass(frozen=True)
class _RunLayers:
    run: Run
    layers: dict[str, DisplayLayer]
    band_index: dict[str, dict[str, int]]  # source → band name → 1-based index


class _LRU:
    """A byte-bounded, thread-safe least-recently-used cache."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[Any, ...], value: bytes) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._items[key] = value
            self.bytes += len(value)
            while self.bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._items)


class TileService:
    """Renders tiles of the runs in one store.

    Args:
        runs_dir: The run store's folder (:attr:`app.settings.Settings.runs_dir`).
        cache_bytes: Memory for rendered tiles.
        held: The rasters the app holds besides its runs (:mod:`app.held_tiles`), served under
            :data:`HELD_TILE_PATH`.
    """

    def __init__(self, runs_dir: str | Path, *, cache_bytes: int = CACHE_BYTES,
                 held: HeldLookup | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.held = held
        self.cache = _LRU(cache_bytes)
        self._runs: OrderedDict[str, _RunLayers] = OrderedDict()
        self._lock = threading.Lock()

    def _run_layers(self, run_id: str) -> _RunLayers:
        try:
            run = RunStore(self.runs_dir).open(run_id)
        except RunStoreError as err:
            raise TileNotFoundError(str(err)) from err
        key = f"{run.id}|{run.created.isoformat()}"
        with self._lock:
            cached = self._runs.get(key)
            if cached is not None:
                self._runs.move_to_end(key)
                return cached
        rasters = run.load_layers(load=False)
        layers = {layer_id(layer): layer for layer in display_layers_for(rasters)}
        bands = {
            name: {str(b): i + 1 for i, b in enumerate(np.atleast_1d(da["band"].values))}
            for name, da in rasters.items()
        }
        entry = _RunLayers(run, layers, bands)
        with self._lock:
            self._runs[key] = entry
            while len(self._runs) > RUNS_KEPT:
                self._runs.popitem(last=False)
        return entry

    def render(self, run_id: str, layer: str, z: int, x: int, y: int,
               style: TileStyle | None = None) -> bytes:
        """One 256 × 256 RGBA PNG tile.

        Args:
            run_id: A run id of the store.
            layer: A :func:`layer_id` of that run.
            z: Zoom level (0 .. the data's native zoom + :data:`OVERZOOM`).
            x: Tile column (0 .. 2**z - 1).
            y: Tile row (0 .. 2**z - 1, from the north).
            style: Stretch / ramp overrides.

        Returns:
            PNG bytes; a transparent tile outside the layer's extent.

        Raises:
            TileNotFoundError: unknown run or layer, or a zoom/column/row out of range.
            InvalidRequestError: the style overrides do not fit the layer.
        """
        style = style or TileStyle()
        if not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
            raise TileNotFoundError(f"there is no tile {z}/{x}/{y}")
        entry = self._run_layers(run_id)
        display = entry.layers.get(layer)
        if display is None:
            raise TileNotFoundError(
                f"run {run_id!r} has no layer {layer!r}; it has {sorted(entry.layers)!r}"
            )
        drawn = style.apply(display.style)
        key = (entry.run.id, entry.run.created, layer, z, x, y, drawn)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        path = entry.run.layer_path(display.source)
        indexes = tuple(entry.band_index[display.source][b] for b in display.bands)
        try:
            png = render_file_tile(path, indexes, z, x, y, drawn, what=layer)
        except RasterioError as err:
            raise RunStoreError(f"cannot read {path.name} of run {run_id!r}: {err}") from err
        self.cache.put(key, png)
        return png

    def render_held(self, token: str, layer: str, z: int, x: int, y: int,
                    style: TileStyle | None = None) -> bytes:
        """One tile of a raster the app holds (:mod:`app.held_tiles`), like :meth:`render`.

        Raises:
            TileNotFoundError: no raster is held under ``token``, it has no such layer, or the
                zoom/column/row is out of range.
            InvalidRequestError: the style overrides do not fit the layer.
        """
        style = style or TileStyle()
        if not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
            raise TileNotFoundError(f"there is no tile {z}/{x}/{y}")
        if self.held is None:
            raise TileNotFoundError("this server holds no rasters besides its runs")
        held = self.held.get(token)
        display = held.layers.get(layer)
        if display is None:
            raise TileNotFoundError(f"the held raster has no layer {layer!r}; it has "
                                    f"{sorted(held.layers)!r}")
        drawn = style.apply(display.style)
        key = ("held", held.token, layer, z, x, y, drawn)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        indexes = tuple(held.band_index[b] for b in display.bands)
        try:
            png = render_file_tile(held.path, indexes, z, x, y, drawn, what=layer)
        except RasterioError as err:
            raise TileNotFoundError(f"the held raster {layer!r} is gone: {err}") from err
        self.cache.put(key, png)
        return png


def render_file_tile(path: Path, indexes: tuple[int, ...], z: int, x: int, y: int,
                     style: Style, *, what: str = "layer") -> bytes:
    """One 256 × 256 PNG tile of bands ``indexes`` (1-based) of the COG at ``path``.

    The path always comes from the server's own tables (a run store, the held rasters),
    never from a request.

    Raises:
        TileNotFoundError: ``z`` is finer than the file holds (native zoom + :data:`OVERZOOM`).
        RasterioError: the file cannot be read.
    """
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    with Reader(str(path)) as src:
        if z > src.maxzoom + OVERZOOM:
            raise TileNotFoundError(
                f"zoom {z} is finer than layer {what!r} holds (at most {src.maxzoom + OVERZOOM})"
            )
        try:
            image = src.tile(x, y, z, tilesize=TILE_SIZE, indexes=indexes,
                             resampling_method="nearest", reproject_method="nearest")
        except TileOutsideBounds:
            return EMPTY_TILE
    return _png(tile_rgba(image.data, image.mask, style))


def tile_rgba(data: np.ndarray, mask: np.ndarray, style: Style) -> np.ndarray:
    """Colour a tile's bands (``(bands, y, x)``) with ``style``; ``mask`` 0 = no data."""
    valid = np.asarray(mask) > 0
    if style.kind is StyleKind.CLASSES:
        values = np.where(valid, data[0], CLASS_NODATA).astype(np.int64)
    else:
        floats = data.astype(np.float64)
        values = np.where(valid, floats, np.nan)
        if style.kind is not StyleKind.RGB:
            values = values[0]
    rgba = colourise(values, style)
    rgba[..., 3] = np.where(valid, rgba[..., 3], 0)
    return rgba


# -- Starlette routes (mounted by app/ui/main.py through st.App(routes=...)) ----------------------
def tile_routes(service_for: Callable[[], TileService], base_url_path: str = "") -> list[Any]:
    """The tile routes for ``st.App(routes=...)``: run layers and held rasters.

    Args:
        service_for: Returns the :class:`TileService` to use (read per request, so the run store
            follows the settings).
        base_url_path: Streamlit's ``server.baseUrlPath`` (Streamlit does not prefix user
            routes itself).
    """
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def answer(request: Request, render: Callable[..., bytes], owner: str) -> Response:
        p = request.path_params
        try:
            style = TileStyle.from_query(request.query_params)
            png = await run_in_threadpool(render, str(p[owner]), str(p["layer_id"]),
                                          int(p["z"]), int(p["x"]), int(p["y"]), style)
        except TileNotFoundError as err:
            return PlainTextResponse(str(err), status_code=404)
        except InvalidRequestError as err:
            return PlainTextResponse(str(err), status_code=400)
        except TerraLensError as err:
            log.warning("tile %s failed: %s", request.url.path, err)
            return PlainTextResponse(str(err), status_code=500)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": CACHE_CONTROL})

    async def tile(request: Request) -> Response:
        return await answer(request, service_for().render, "run_id")

    async def held_tile(request: Request) -> Response:
        return await answer(request, service_for().render_held, "token")

    async def held_image(request: Request) -> Response:
        held = service_for().held
        try:
            if held is None:
                raise TileNotFoundError("this server holds no images")
            png = held.image(str(request.path_params["token"]))
        except TileNotFoundError as err:
            return PlainTextResponse(str(err), status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})

    base = base_url_path.strip("/")
    prefix = f"/{base}" if base else ""
    return [Route(f"{prefix}{HELD_TILE_PATH}", held_tile, methods=["GET"]),
            Route(f"{prefix}{HELD_IMAGE_PATH}", held_image, methods=["GET"]),
            Route(f"{prefix}{TILE_PATH}", tile, methods=["GET"])]


_NATIVE: OrderedDict[tuple[str, str], tuple[tuple[tuple[float, float], tuple[float, float]], int]]
_NATIVE = OrderedDict()


def layer_extent(run: Run, source: str) -> tuple[tuple[tuple[float, float], tuple[float, float]],
                                                 int]:
    """Where a run raster's tiles exist and how fine they get.

    Returns:
        ``(((south, west), (north, east)), native zoom)``: the raster's EPSG:4326 bounds and
        the zoom whose pixels match its resolution (Leaflet's ``maxNativeZoom``).
    """
    from rio_tiler.io import Reader

    key = (str(run.layer_path(source)), run.created.isoformat())
    if key not in _NATIVE:
        try:
            with Reader(key[0]) as src:
                west, south, east, north = src.get_geographic_bounds("EPSG:4326")
                _NATIVE[key] = (((float(south), float(west)), (float(north), float(east))),
                                int(src.maxzoom))
        except RasterioError as err:
            raise RunStoreError(f"cannot read {source} of run {run.id!r}: {err}") from err
        while len(_NATIVE) > 256:
            _NATIVE.popitem(last=False)
    return _NATIVE[key]
