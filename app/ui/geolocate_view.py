"""What the Geolocate page needs besides widgets: prompts, the results map, the density grid.

The density "heatmap" is drawn as a PNG image overlay (loaded from the app's own server, see
:func:`app.held_tiles.held_image_url`), binned on a Web Mercator grid so that its
rows line up with the base map: ``folium.plugins.HeatMap`` loads its script from a CDN, which
breaks the map offline.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from inference.errors import InvalidRequestError
from inference.modalities import LULC_CLASSES

#: Classes offered in the land-cover prompt (no "No data", no "Clouds").
PROMPT_CLASSES = tuple(c for c in LULC_CLASSES if c.name not in {"No data", "Clouds"})
#: Latitude limit of Web Mercator, degrees.
MERCATOR_LAT = 85.0511287798
#: Density grid size (columns; rows follow from the square Mercator world).
DENSITY_COLUMNS = 180
#: Density colours, low to high (alpha ramps up with density).
DENSITY_RGB = ((255, 237, 160), (254, 178, 76), (240, 59, 32), (128, 0, 38))
_HALF_WORLD_M = 20037508.342789244


def composition(percent_by_class: Mapping[str, float]) -> dict[int, float]:
    """LULC class index → share (0..1) from slider percentages by class name.

    Raises:
        InvalidRequestError: the percentages do not add up to 100 (±0.5), or all are zero.
    """
    total = float(sum(percent_by_class.values()))
    if abs(total - 100.0) > 0.5:
        raise InvalidRequestError(
            f"The land-cover shares add up to {total:g}%, not 100%: adjust the sliders."
        )
    index = {c.name: c.index for c in LULC_CLASSES}
    return {index[name]: pct / 100.0 for name, pct in percent_by_class.items() if pct > 0}


def _mercator_y(lat: np.ndarray) -> np.ndarray:
    lat = np.clip(lat, -MERCATOR_LAT, MERCATOR_LAT)
    return _HALF_WORLD_M / math.pi * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))


def density_png(samples: np.ndarray, columns: int = DENSITY_COLUMNS
                ) -> tuple[bytes, tuple[tuple[float, float], tuple[float, float]]] | None:
    """A transparent PNG of sample density on a Web Mercator grid, and its EPSG:4326 bounds.

    Args:
        samples: ``[k, 2]`` (lon, lat) degrees.
        columns: Grid columns over the world (rows: the same, Mercator is square).

    Returns:
        (PNG bytes, ((south, west), (north, east))), or ``None`` when there are no samples.
    """
    if samples is None or len(samples) == 0:
        return None
    x = np.asarray(samples[:, 0], dtype=float) / 180.0 * _HALF_WORLD_M
    y = _mercator_y(np.asarray(samples[:, 1], dtype=float))
    edges = np.linspace(-_HALF_WORLD_M, _HALF_WORLD_M, columns + 1)
    counts, _, _ = np.histogram2d(y, x, bins=(edges, edges))
    counts = counts[::-1]  # row 0 = north
    # A light 3×3 blur so single samples read as spots, then normalise to the densest cell.
    padded = np.pad(counts, 1)
    blurred = np.zeros_like(counts)
    for i in range(3):
        for j in range(3):
            blurred += padded[i : i + columns, j : j + columns]
    level = blurred / blurred.max()
    stops = np.asarray(DENSITY_RGB, dtype=float)
    pos = level * (len(stops) - 1)
    low = np.clip(np.floor(pos).astype(int), 0, len(stops) - 2)
    frac = (pos - low)[..., None]
    rgb = stops[low] * (1 - frac) + stops[low + 1] * frac
    alpha = np.where(level > 0, 90 + 165 * level, 0)
    rgba = np.dstack([rgb, alpha]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue(), ((-MERCATOR_LAT, -180.0), (MERCATOR_LAT, 180.0))


def results_map(samples: np.ndarray, true_lonlat: Sequence[float] | None,
                *, static_url: str, image_url: Callable[[bytes], str] | None = None) -> Any:
    """A world map: the density grid, every valid sample as a point, the true centre if known.

    Built on :func:`app.maps.build_map`, so it uses the vendored Leaflet and no CDN script.

    Args:
        samples: ``[k, 2]`` (lon, lat) degrees.
        true_lonlat: The scene's true centre, if known.
        static_url: Where the vendored assets are served.
        image_url: Where the browser loads the density PNG from (e.g.
            :func:`app.held_tiles.held_image_url`); default: inlined as a data URL.
    """
    import base64

    import folium

    from app.maps import add_layers, build_map

    centre = ((float(true_lonlat[1]), float(true_lonlat[0])) if true_lonlat
              else (20.0, 0.0))
    fmap = build_map(center=centre, zoom=2, static_url=static_url)
    layers: list[Any] = []
    density = density_png(samples)
    if density is not None:
        png, bounds = density
        overlay = folium.raster_layers.ImageOverlay(
            image="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            bounds=[list(bounds[0]), list(bounds[1])], opacity=0.8, name="Sample density",
            interactive=False,
        )
        if image_url is not None:  # folium would read a relative URL as a file
            overlay.url = image_url(png)
        layers.append(overlay)
    points = folium.FeatureGroup(name="Samples")
    for lon, lat in np.asarray(samples, dtype=float).reshape(-1, 2):
        folium.CircleMarker([float(lat), float(lon)], radius=3, color="#ffffff", weight=1,
                            fill=True, fill_color="#3fa7d6", fill_opacity=0.9,
                            tooltip=f"{lat:.3f}, {lon:.3f}").add_to(points)
    layers.append(points)
    if true_lonlat:
        layers.append(folium.Marker(
            [float(true_lonlat[1]), float(true_lonlat[0])], tooltip="True scene centre",
            icon=folium.DivIcon(html='<div class="terralens-true-centre" '
                                'style="font-size:22px;color:#ff3d7f">✚</div>')))
    add_layers(fmap, *layers)
    return fmap


def summary_table(stats: Mapping[str, Any]) -> pd.DataFrame:
    """The run's numbers as a two-column table (what, value)."""
    rows: list[tuple[str, str]] = [
        ("Samples drawn", str(stats["n"])),
        ("Valid coordinates", str(stats["valid"])),
        ("Invalid (not plotted)", str(stats["invalid"]) + (
            " — " + ", ".join(f"{k}: {v}" for k, v in stats["invalid_reasons"].items())
            if stats.get("invalid_reasons") else "")),
    ]
    if stats.get("centroid_lonlat"):
        lon, lat = stats["centroid_lonlat"]
        rows.append(("Centroid (lat, lon)", f"{lat:.3f}, {lon:.3f}"))
        rows.append(("Median distance to centroid", f"{stats['median_km_to_centroid']:,.0f} km"))
    if "true_lonlat" in stats:
        lon, lat = stats["true_lonlat"]
        rows.append(("True scene centre (lat, lon)", f"{lat:.4f}, {lon:.4f}"))
        for key, label in (("median_km", "Median distance to the true centre"),
                           ("nearest_km", "Nearest sample to the true centre")):
            value = stats.get(key)
            rows.append((label, "n/a" if value is None else f"{value:,.0f} km"))
        for km, share in (stats.get("share_within_km") or {}).items():
            rows.append((f"Samples within {int(km):,} km",
                         "n/a" if share is None else f"{100 * share:.0f}%"))
    return pd.DataFrame(rows, columns=["", "Value"])
