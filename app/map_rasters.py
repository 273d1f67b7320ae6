"""The part of a map that changes while the analyst works: basemap, raster layers, the
inspector's marker and the swipe comparison.

streamlit-folium keys its component by the hash of the map's script, so any change to that
script re-mounts the map and loses the view. The Layers page therefore builds a *fixed* map
(:func:`app.maps.build_map`: AOI, tools, offline outline) and hands everything that changes to
``st_folium(feature_group_to_add=raster_group(...))``: the component then swaps this group in
place, the view stays where the analyst left it, and a toggle sends a few kilobytes of tile URL
templates instead of images (tiles come from :mod:`app.tiles`, cached by the browser).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import folium
from folium.template import Template

from app.map_tools import Basemap
from inference.errors import InvalidRequestError

#: Pane of the raster layers: above the basemap tiles (200), below vectors (400).
RASTER_PANE = "terralensRasters"
#: Style of the pixel inspector's marker.
MARKER_STYLE = {"radius": 7, "color": "#ff3d7f", "weight": 3, "fill": True,
                "fillColor": "#ffffff", "fillOpacity": 0.6}


@dataclass(frozen=True)
class TileOverlay:
    """One raster layer as a Leaflet tile layer.

    Attributes:
        name: Display name (unique on the map).
        url: URL template with ``{z}``, ``{x}``, ``{y}`` (see :func:`app.tiles.tile_url_template`).
        opacity: 0..1.
        bounds: ``((south, west), (north, east))`` in degrees: no tile is asked for outside.
        max_native_zoom: Finest zoom the server renders from data; Leaflet scales beyond it.
    """

    name: str
    url: str
    opacity: float
    bounds: tuple[tuple[float, float], tuple[float, float]]
    max_native_zoom: int

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.opacity) <= 1.0:
            raise InvalidRequestError(
                f"opacity of {self.name!r} must be between 0 and 1, got {self.opacity!r}"
            )


@dataclass(frozen=True)
class ImageLayer:
    """A raster with no tile source (e.g. a layer the analyst added) as an inline PNG."""

    name: str
    data_url: str
    opacity: float
    bounds: tuple[tuple[float, float], tuple[float, float]]


class RasterGroup(folium.FeatureGroup):
    """A Leaflet feature group holding the changing layers (see the module docstring)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            var {{ this.get_name() }} = (function () {
                var map = {{ this._parent.get_name() }};
                if (!map.getPane({{ this.pane|tojson }})) {
                    var pane = map.createPane({{ this.pane|tojson }});
                    pane.style.zIndex = 350;
                    pane.style.pointerEvents = "none";
                }
                var group = L.featureGroup();
                var rasters = {};
                {% if this.basemap %}
                L.tileLayer({{ this.basemap.url|tojson }}, {{ this.basemap_options|tojson }})
                    .addTo(group);
                {% endif %}
                {% for layer in this.tiles %}
                rasters[{{ layer.name|tojson }}] = L.tileLayer({{ layer.url|tojson }},
                    {{ this.tile_options[loop.index0]|tojson }}).addTo(group);
                {% endfor %}
                {% for layer in this.images %}
                rasters[{{ layer.name|tojson }}] = L.imageOverlay({{ layer.data_url|tojson }},
                    {{ layer.bounds|tojson }}, {{ this.image_options[loop.index0]|tojson }})
                    .addTo(group);
                {% endfor %}
                {% if this.marker %}
                L.circleMarker({{ this.marker|tojson }}, {{ this.marker_style|tojson }})
                    .addTo(group);
                {% endif %}
                var compare = null;
                {% if this.compare %}
                group.on("add", function () {
                    compare = L.control.sideBySide(rasters[{{ this.compare[0]|tojson }}],
                                                   rasters[{{ this.compare[1]|tojson }}])
                        .addTo(map);
                    window.terralensCompare = compare;
                });
                {% endif %}
                group.on("remove", function () {
                    if (compare) { map.removeControl(compare); compare = null; }
                });
                window.terralensRasters = rasters;
                return group;
            })();
        {% endmacro %}
        """
    )

    def __init__(self, *, basemap: Basemap | None, tiles: Sequence[TileOverlay],
                 images: Sequence[ImageLayer], marker: tuple[float, float] | None,
                 compare: tuple[str, str] | None) -> None:
        super().__init__(name="TerraLens layers", control=False)
        self._name = "FeatureGroup"  # streamlit-folium names the group by this
        self.pane = RASTER_PANE
        self.basemap = basemap if basemap is not None and basemap.url else None
        self.basemap_options = {
            "attribution": basemap.attribution if basemap else "", "maxZoom": 22,
            "maxNativeZoom": basemap.max_native_zoom if basemap else 19, "zIndex": 0,
            "subdomains": "abcd",
        }
        self.tiles = list(tiles)
        self.images = list(images)
        order = {name: i for i, name in enumerate([*(t.name for t in tiles),
                                                    *(i.name for i in images)])}
        self.tile_options = [
            {"opacity": float(t.opacity), "pane": RASTER_PANE, "zIndex": order[t.name] + 1,
             "bounds": [list(t.bounds[0]), list(t.bounds[1])], "maxNativeZoom":
             int(t.max_native_zoom), "maxZoom": 22, "tileSize": 256, "className":
             "terralens-raster", "attribution": ""}
            for t in self.tiles
        ]
        self.image_options = [
            {"opacity": float(i.opacity), "pane": RASTER_PANE, "interactive": False,
             "zIndex": order[i.name] + 1, "className": "terralens-raster"}
            for i in self.images
        ]
        self.marker = list(marker) if marker is not None else None
        self.marker_style = {**MARKER_STYLE, "interactive": False}
        self.compare = list(compare) if compare is not None else None


def raster_group(*, basemap: Basemap | None = None, tiles: Sequence[TileOverlay] = (),
                 images: Sequence[ImageLayer] = (), marker: tuple[float, float] | None = None,
                 compare: tuple[str, str] | None = None) -> RasterGroup:
    """The changing layers of a map, bottom to top, for ``st_folium(feature_group_to_add=...)``.

    Args:
        basemap: The basemap tiles (``None`` or an offline entry: only the offline outline).
        tiles: Raster tile layers, bottom to top.
        images: Inline image layers drawn above the tile layers, bottom to top.
        marker: ``(lat, lon)`` of the pixel inspector's point, or ``None``.
        compare: Names of two layers to compare with a swipe divider (left, right).

    Raises:
        InvalidRequestError: duplicate names or a comparison of unknown layers.
    """
    names = [t.name for t in tiles] + [i.name for i in images]
    if len(set(names)) != len(names):
        raise InvalidRequestError(f"layer names must be unique, got {names!r}")
    if compare is not None and (len(compare) != 2 or compare[0] == compare[1]
                                or any(n not in names for n in compare)):
        raise InvalidRequestError(
            f"compare needs two different layer names among {names!r}, got {compare!r}"
        )
    return RasterGroup(basemap=basemap, tiles=tiles, images=images, marker=marker,
                       compare=compare)
