"""Basemaps, the offline fallback basemap and the map tools every TerraLens map carries.

* :data:`BASEMAPS` — imagery, OpenStreetMap, light and dark tiles; a site's own tile server
  (``TERRALENS_BASEMAP_URL``) comes first when configured (:func:`basemap_choices`).
* :class:`OfflineBasemap` — Natural Earth 1:50m land and country borders (npm ``world-atlas``,
  vendored), drawn below every basemap: when tiles cannot load (offline, air-gapped), the map
  still shows where you are.
* :class:`MapTools` — fullscreen (leaflet.fullscreen), distance/area measurement
  (leaflet-measure) and the cursor's coordinates (Leaflet.MousePosition).

Every script, stylesheet and data file is vendored under ``assets/vendor/`` (no CDN).
"""

from __future__ import annotations

from dataclasses import dataclass

from branca.element import MacroElement
from folium.elements import JSCSSMixin
from folium.template import Template

from inference.errors import InvalidRequestError

FULLSCREEN_JS = "vendor/leaflet-fullscreen/Control.FullScreen.umd.js"
FULLSCREEN_CSS = "vendor/leaflet-fullscreen/Control.FullScreen.css"
MEASURE_JS = "vendor/leaflet-measure/leaflet-measure.js"
MEASURE_CSS = "vendor/leaflet-measure/leaflet-measure.css"
MOUSE_POSITION_JS = "vendor/leaflet-mouse-position/L.Control.MousePosition.js"
MOUSE_POSITION_CSS = "vendor/leaflet-mouse-position/L.Control.MousePosition.css"
TOPOJSON_JS = "vendor/topojson-client/topojson-client.min.js"
WORLD_ATLAS = "vendor/world-atlas/countries-50m.json"
#: Every vendored file the tools and the offline basemap load, relative to the static root.
TOOL_FILES = (FULLSCREEN_JS, FULLSCREEN_CSS, MEASURE_JS, MEASURE_CSS, MOUSE_POSITION_JS,
              MOUSE_POSITION_CSS, TOPOJSON_JS, WORLD_ATLAS)

#: Pane of the offline basemap: below Leaflet's tile pane (200), so any basemap covers it.
OFFLINE_PANE = "terralensOffline"
OFFLINE_NAME = "Offline (Natural Earth)"
SITE_BASEMAP = "Site basemap"


@dataclass(frozen=True)
class Basemap:
    """One basemap: a tile URL template (``None`` = only the offline outline) and its credit."""

    url: str | None
    attribution: str
    max_native_zoom: int = 19


_OSM = '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
#: Basemaps by the name the analyst picks. Tiles are images, not scripts: offline they do not
#: load and the offline outline shows through.
BASEMAPS: dict[str, Basemap] = {
    "Imagery": Basemap(
        "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/"
        "{z}/{y}/{x}",
        "Tiles &copy; Esri, Maxar, Earthstar Geographics and the GIS User Community", 18),
    "OpenStreetMap": Basemap("https://tile.openstreetmap.org/{z}/{x}/{y}.png", _OSM),
    "Light": Basemap("https://{s}.basemaps.cartocdn.com/light_all/{z}/{x}/{y}.png",
                     f"{_OSM} &copy; <a href=\"https://carto.com/attributions\">CARTO</a>", 20),
    "Dark": Basemap("https://{s}.basemaps.cartocdn.com/dark_all/{z}/{x}/{y}.png",
                    f"{_OSM} &copy; <a href=\"https://carto.com/attributions\">CARTO</a>", 20),
    OFFLINE_NAME: Basemap(None, "Natural Earth"),
}


def basemap_choices(site_url: str | None = None) -> dict[str, Basemap]:
    """The basemaps to offer: a site's own tile server first (when set), then :data:`BASEMAPS`.

    Args:
        site_url: ``TERRALENS_BASEMAP_URL``, an XYZ template with ``{z}``, ``{x}`` and ``{y}``.

    Raises:
        InvalidRequestError: the site URL is not an http(s) XYZ template.
    """
    if not site_url:
        return dict(BASEMAPS)
    if not site_url.startswith(("http://", "https://", "/")) or not all(
        f"{{{k}}}" in site_url for k in "zxy"
    ):
        raise InvalidRequestError(
            "TERRALENS_BASEMAP_URL must be an http(s) tile URL with {z}, {x} and {y}, got "
            f"{site_url!r}"
        )
    return {SITE_BASEMAP: Basemap(site_url, "Site basemap"), **BASEMAPS}


def _urls(static_url: str, *files: str) -> list[str]:
    return [f"{static_url.rstrip('/')}/{f}" for f in files]


class OfflineBasemap(JSCSSMixin, MacroElement):
    """Natural Earth land and borders below the basemap, fetched from the vendored TopoJSON.

    A fetch that fails leaves the map as it was (the dark map background); nothing is thrown.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            (function () {
                var map = {{ this._parent.get_name() }};
                var pane = map.createPane({{ this.pane|tojson }});
                pane.style.zIndex = 150;
                pane.style.pointerEvents = "none";
                fetch({{ this.data_url|tojson }}).then(function (r) {
                    if (!r.ok) { throw new Error("HTTP " + r.status); }
                    return r.json();
                }).then(function (topo) {
                    var land = topojson.feature(topo, topo.objects.countries);
                    var borders = topojson.mesh(topo, topo.objects.countries,
                                                function (a, b) { return a !== b; });
                    var layer = L.layerGroup([
                        L.geoJSON(land, {pane: {{ this.pane|tojson }}, interactive: false,
                            style: {stroke: false, fillColor: "#3a4552", fillOpacity: 1}}),
                        L.geoJSON(borders, {pane: {{ this.pane|tojson }}, interactive: false,
                            style: {color: "#8c99a6", weight: 0.8, opacity: 0.9}})
                    ]).addTo(map);
                    window.terralensOffline = layer;
                }).catch(function (err) {
                    console.warn("TerraLens offline basemap unavailable:", err);
                });
            })();
        {% endmacro %}
        """
    )

    def __init__(self, static_url: str) -> None:
        super().__init__()
        self._name = "TerraLensOfflineBasemap"
        self.pane = OFFLINE_PANE
        (self.data_url,) = _urls(static_url, WORLD_ATLAS)
        self.default_js = [("topojson_client", _urls(static_url, TOPOJSON_JS)[0])]
        self.default_css = []


class MapTools(JSCSSMixin, MacroElement):
    """Fullscreen button, distance/area measurement and the cursor's lat/lon."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
            (function () {
                var map = {{ this._parent.get_name() }};
                new L.Control.FullScreen({position: "topleft", title: "Full screen",
                                          titleCancel: "Leave full screen"}).addTo(map);
                L.control.measure({position: "topleft", primaryLengthUnit: "kilometers",
                                   secondaryLengthUnit: "meters", primaryAreaUnit: "hectares",
                                   secondaryAreaUnit: "sqmeters",
                                   activeColor: "#ffb000", completedColor: "#3fa7d6"})
                    .addTo(map);
                L.control.mousePosition({position: "bottomright", separator: ", ",
                                         emptyString: "", numDigits: 5,
                                         prefix: "lat, lon"}).addTo(map);
            })();
        {% endmacro %}
        """
    )

    def __init__(self, static_url: str) -> None:
        super().__init__()
        self._name = "TerraLensMapTools"
        js = _urls(static_url, FULLSCREEN_JS, MEASURE_JS, MOUSE_POSITION_JS)
        css = _urls(static_url, FULLSCREEN_CSS, MEASURE_CSS, MOUSE_POSITION_CSS)
        self.default_js = [("leaflet_fullscreen", js[0]), ("leaflet_measure", js[1]),
                           ("leaflet_mouse_position", js[2])]
        self.default_css = [("leaflet_fullscreen_css", css[0]), ("leaflet_measure_css", css[1]),
                            ("leaflet_mouse_position_css", css[2])]
