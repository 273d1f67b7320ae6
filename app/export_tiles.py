"""A site's XYZ tile server as the basemap of a map export, when it answers in time.

Map exports work offline (Natural Earth, :mod:`app.natural_earth`); when the site configured
its own tile server (``TERRALENS_BASEMAP_URL``, :func:`app.map_tools.basemap_choices`) the
export tries it: a few tiles over the map's extent, each with a short time-out, the whole
attempt capped. Any failure gives ``None`` and the export falls back to Natural Earth.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from app.natural_earth import EARTH_RADIUS_M

log = logging.getLogger(__name__)

TILE_PX = 256
#: Most tiles one export fetches, and the time (seconds) the whole attempt may take.
MAX_TILES = 24
TIMEOUT_S = 2.0
BUDGET_S = 6.0
_WORLD = 2 * math.pi * EARTH_RADIUS_M
_ORIGIN = _WORLD / 2


@dataclass(frozen=True)
class Mosaic:
    """Tiles stitched into one RGB image.

    Attributes:
        image: ``uint8`` array ``(h, w, 3)``.
        extent: ``(x0, x1, y0, y1)`` of the image in EPSG:3857 metres.
        zoom: The tiles' zoom level.
    """

    image: np.ndarray
    extent: tuple[float, float, float, float]
    zoom: int


def tile_range(extent: tuple[float, float, float, float], zoom: int
               ) -> tuple[int, int, int, int]:
    """``(first column, last column, first row, last row)`` of the XYZ tiles over ``extent``."""
    size = _WORLD / 2**zoom
    x0, x1, y0, y1 = extent
    last = 2**zoom - 1
    col0 = min(last, max(0, math.floor((x0 + _ORIGIN) / size)))
    col1 = min(last, max(0, math.floor((x1 + _ORIGIN) / size)))
    row0 = min(last, max(0, math.floor((_ORIGIN - y1) / size)))
    row1 = min(last, max(0, math.floor((_ORIGIN - y0) / size)))
    return col0, col1, row0, row1


def choose_zoom(extent: tuple[float, float, float, float], width_px: int,
                max_zoom: int = 19) -> int:
    """The zoom whose tiles draw ``extent`` about ``width_px`` wide, within :data:`MAX_TILES`."""
    span = max(extent[1] - extent[0], 1.0)
    zoom = max(0, min(max_zoom, round(math.log2(width_px * _WORLD / (TILE_PX * span)))))
    while zoom > 0:
        col0, col1, row0, row1 = tile_range(extent, zoom)
        if (col1 - col0 + 1) * (row1 - row0 + 1) <= MAX_TILES:
            break
        zoom -= 1
    return zoom


def fetch_mosaic(url: str, extent: tuple[float, float, float, float], *, width_px: int,
                 timeout_s: float = TIMEOUT_S, budget_s: float = BUDGET_S) -> Mosaic | None:
    """The tiles of ``url`` over ``extent`` as one image, or ``None`` if any tile fails.

    Args:
        url: XYZ template with ``{z}``, ``{x}``, ``{y}`` (``{s}`` becomes ``a``); only
            absolute http(s) URLs are fetched.
        extent: ``(x0, x1, y0, y1)`` in EPSG:3857 metres.
        width_px: About how wide the mosaic should be.
        timeout_s: Time-out of each tile request (seconds).
        budget_s: Time the whole attempt may take (seconds).
    """
    import requests

    if not url.startswith(("http://", "https://")):
        return None
    zoom = choose_zoom(extent, width_px)
    col0, col1, row0, row1 = tile_range(extent, zoom)
    canvas = np.zeros(((row1 - row0 + 1) * TILE_PX, (col1 - col0 + 1) * TILE_PX, 3), np.uint8)
    deadline = time.monotonic() + budget_s
    try:
        with requests.Session() as session:
            for row in range(row0, row1 + 1):
                for col in range(col0, col1 + 1):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"tile server slower than {budget_s:g} s")
                    tile_url = url.replace("{s}", "a").format(z=zoom, x=col, y=row)
                    response = session.get(tile_url, timeout=min(timeout_s, left))
                    response.raise_for_status()
                    with Image.open(io.BytesIO(response.content)) as tile:
                        rgb = np.asarray(tile.convert("RGB").resize((TILE_PX, TILE_PX)))
                    r, c = (row - row0) * TILE_PX, (col - col0) * TILE_PX
                    canvas[r:r + TILE_PX, c:c + TILE_PX] = rgb
    except (requests.RequestException, OSError, UnidentifiedImageError, ValueError,
            KeyError, IndexError) as err:
        log.info("site basemap unavailable for the export (%s); using Natural Earth", err)
        return None
    size = _WORLD / 2**zoom
    extent_out = (col0 * size - _ORIGIN, (col1 + 1) * size - _ORIGIN,
                  _ORIGIN - (row1 + 1) * size, _ORIGIN - row0 * size)
    return Mosaic(image=canvas, extent=extent_out, zoom=zoom)
