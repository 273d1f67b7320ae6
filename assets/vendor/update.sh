#!/usr/bin/env bash
# Re-create the vendored map libraries under assets/vendor/ from pinned npm packages.
#
# TerraLens maps must render offline and in air-gapped deployments, so folium's CDN links are
# replaced by these files, served by Streamlit's static file serving at /app/static/vendor/...
# (app/static is a symlink to assets/). Only the dist files a browser needs are kept, with each
# package's licence. Run from anywhere:  bash assets/vendor/update.sh
set -euo pipefail

LEAFLET_VERSION=1.9.4
LEAFLET_DRAW_VERSION=1.0.4
SIDE_BY_SIDE_VERSION=2.2.0
# 3.x: its Nominatim geocoder rejects on network errors (2.x answers "nothing found"), which
# lets the map tell "offline" from "no such place". 3.x supports Leaflet ^1.6.0.
GEOCODER_VERSION=3.3.1
FULLSCREEN_VERSION=5.3.3
MEASURE_VERSION=3.1.0
MOUSE_POSITION_VERSION=1.2.0
# Natural Earth land and country borders as TopoJSON (the offline fallback basemap), and the
# client that turns TopoJSON into GeoJSON in the browser.
WORLD_ATLAS_VERSION=2.0.2
TOPOJSON_CLIENT_VERSION=3.1.0

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm pack --silent \
    "leaflet@${LEAFLET_VERSION}" \
    "leaflet-draw@${LEAFLET_DRAW_VERSION}" \
    "leaflet-side-by-side@${SIDE_BY_SIDE_VERSION}" \
    "leaflet-control-geocoder@${GEOCODER_VERSION}" \
    "leaflet.fullscreen@${FULLSCREEN_VERSION}" \
    "leaflet-measure@${MEASURE_VERSION}" \
    "leaflet-mouse-position@${MOUSE_POSITION_VERSION}" \
    "world-atlas@${WORLD_ATLAS_VERSION}" \
    "topojson-client@${TOPOJSON_CLIENT_VERSION}" >/dev/null
for pkg in leaflet leaflet-draw leaflet-side-by-side leaflet-control-geocoder leaflet.fullscreen \
           leaflet-measure leaflet-mouse-position world-atlas topojson-client; do
    mkdir -p "$pkg"
    tar -xzf "$pkg"-[0-9]*.tgz -C "$pkg" --strip-components=1
done

# --- Leaflet: the library, its stylesheet and the control/marker images it references.
dst="$HERE/leaflet"
rm -rf "$dst" && mkdir -p "$dst/images"
cp leaflet/dist/leaflet.js leaflet/dist/leaflet.css "$dst/"
cp leaflet/dist/images/*.png "$dst/images/"
cp leaflet/LICENSE "$dst/LICENSE"

# --- Leaflet.draw: the npm package ships no licence file; its package.json says MIT and the
# dist banner names the copyright holders, which the LICENSE below records.
dst="$HERE/leaflet-draw"
rm -rf "$dst" && mkdir -p "$dst/images"
cp leaflet-draw/dist/leaflet.draw.js leaflet-draw/dist/leaflet.draw.css "$dst/"
cp leaflet-draw/dist/images/spritesheet.png leaflet-draw/dist/images/spritesheet-2x.png \
   leaflet-draw/dist/images/spritesheet.svg "$dst/images/"
license="$(node -p "require('./leaflet-draw/package.json').license")"
[ "$license" = "MIT" ] || { echo "leaflet-draw licence changed to $license" >&2; exit 1; }
cat > "$dst/LICENSE" <<'LICENSE_TEXT'
Leaflet.draw 1.0.4 (npm package leaflet-draw), https://github.com/Leaflet/Leaflet.draw
Released under the MIT licence (package.json "license": "MIT").

Copyright (c) 2012-2017, Jacob Toye, Jon West, Smartrak, Leaflet

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
LICENSE_TEXT

# --- leaflet-side-by-side: npm ships only the CommonJS source (built with browserify upstream).
# Wrap it for a plain <script> tag: `require('leaflet')` is the global L, the CSS requires are
# served as separate stylesheets.
dst="$HERE/leaflet-side-by-side"
rm -rf "$dst" && mkdir -p "$dst"
{
    echo "/* leaflet-side-by-side ${SIDE_BY_SIDE_VERSION} (MIT, Gregor MacLennan / Digital Democracy),"
    echo "   wrapped for a plain <script> tag by assets/vendor/update.sh. */"
    echo "(function () {"
    echo "var module = { exports: {} };"
    echo "var require = function (name) { return name === 'leaflet' ? window.L : {}; };"
    cat leaflet-side-by-side/index.js
    echo "})();"
} > "$dst/leaflet-side-by-side.js"
cp leaflet-side-by-side/layout.css leaflet-side-by-side/range.css \
   leaflet-side-by-side/range-icon.png "$dst/"
cp leaflet-side-by-side/LICENSE "$dst/LICENSE"

# --- leaflet-control-geocoder: the UMD build (sets L.Control.Geocoder / L.Control.geocoder for
# a plain <script> tag) and its stylesheet, whose icons are inline data: URLs (no images).
dst="$HERE/leaflet-control-geocoder"
rm -rf "$dst" && mkdir -p "$dst"
cp leaflet-control-geocoder/dist/Control.Geocoder.js leaflet-control-geocoder/dist/Control.Geocoder.css \
   "$dst/"
cp leaflet-control-geocoder/LICENSE "$dst/LICENSE"

# --- leaflet.fullscreen: the UMD build (sets L.Control.FullScreen for a plain <script> tag);
# its icons are inline SVG data: URLs.
dst="$HERE/leaflet-fullscreen"
rm -rf "$dst" && mkdir -p "$dst"
cp leaflet.fullscreen/dist/Control.FullScreen.umd.js leaflet.fullscreen/dist/Control.FullScreen.css \
   "$dst/"
cp leaflet.fullscreen/LICENSE.md "$dst/LICENSE"

# --- leaflet-measure: distance and area measurement (English build) and its icons.
dst="$HERE/leaflet-measure"
rm -rf "$dst" && mkdir -p "$dst/assets"
cp leaflet-measure/dist/leaflet-measure.js leaflet-measure/dist/leaflet-measure.css "$dst/"
cp leaflet-measure/dist/assets/*.png "$dst/assets/"
cp leaflet-measure/LICENSE "$dst/LICENSE"

# --- Leaflet.MousePosition: the cursor's coordinates in a corner of the map.
dst="$HERE/leaflet-mouse-position"
rm -rf "$dst" && mkdir -p "$dst"
cp leaflet-mouse-position/src/L.Control.MousePosition.js \
   leaflet-mouse-position/src/L.Control.MousePosition.css "$dst/"
cp leaflet-mouse-position/MIT-LICENCE.txt "$dst/LICENSE"

# --- world-atlas: Natural Earth 1:50m countries (land = their union, borders = shared arcs).
dst="$HERE/world-atlas"
rm -rf "$dst" && mkdir -p "$dst"
cp world-atlas/countries-50m.json "$dst/"
cp world-atlas/LICENSE "$dst/LICENSE"

# --- topojson-client: TopoJSON → GeoJSON in the browser (sets the global `topojson`).
dst="$HERE/topojson-client"
rm -rf "$dst" && mkdir -p "$dst"
cp topojson-client/dist/topojson-client.min.js "$dst/"
cp topojson-client/LICENSE "$dst/LICENSE"

cat > "$HERE/VERSIONS.txt" <<VERSIONS_TEXT
leaflet ${LEAFLET_VERSION}
leaflet-draw ${LEAFLET_DRAW_VERSION}
leaflet-side-by-side ${SIDE_BY_SIDE_VERSION}
leaflet-control-geocoder ${GEOCODER_VERSION}
leaflet.fullscreen ${FULLSCREEN_VERSION}
leaflet-measure ${MEASURE_VERSION}
leaflet-mouse-position ${MOUSE_POSITION_VERSION}
world-atlas ${WORLD_ATLAS_VERSION}
topojson-client ${TOPOJSON_CLIENT_VERSION}
VERSIONS_TEXT
echo "vendored: $(tr '\n' ' ' < "$HERE/VERSIONS.txt")"
