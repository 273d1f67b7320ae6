"""What the Search page shows, as plain functions: AOI parsing, the results table, the map.

Kept out of ``pages/1_Search.py`` so the page stays widgets and layout, and so the parsing and
table logic can be tested without a browser.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
import streamlit as st

from app.aoi import AOI
from app.catalog import Collection, SceneSummary, SearchRequest
from app.escaping import markdown_code, markdown_text
from app.ui import widgets
from inference.errors import InvalidAOIError, TerraLensError

logger = logging.getLogger("terralens.search")

#: Shown under a catalog error: what the analyst (or operator) can check.
CATALOG_HINT = (
    "Catalog: {url}. Check that this STAC API is reachable from the server (network, proxy, "
    "VPN), that the URL points to the API root, or set `TERRALENS_STAC_URL` to another catalog."
)

_COLLECTION_LABELS = {
    Collection.SENTINEL_2_L2A.value: "Sentinel-2 L2A (optical)",
    Collection.SENTINEL_1_RTC.value: "Sentinel-1 RTC (radar)",
    Collection.SENTINEL_1_GRD.value: "Sentinel-1 GRD (radar)",
}


def collection_label(collection: str) -> str:
    """Display name of a collection id."""
    return _COLLECTION_LABELS.get(str(collection), str(collection))


# -- AOI input -------------------------------------------------------------------------------------
def aoi_problem(aoi: AOI | None, **limits: Any) -> str | None:
    """Why ``aoi`` fails :meth:`AOI.validate` under ``limits`` (``Settings.search_limits`` or
    ``Settings.run_limits``): the validation message, or ``None`` when it passes."""
    if aoi is None:
        return None
    try:
        aoi.validate(**limits)
    except InvalidAOIError as err:
        return str(err)
    return None


def aoi_from_bbox_text(text: str) -> AOI:
    """An AOI from ``"west, south, east, north"`` typed in degrees (commas or spaces).

    Raises:
        InvalidAOIError: not four numbers, or a box :meth:`AOI.from_bbox` refuses.
    """
    parts = [p for p in (text or "").replace(",", " ").replace(";", " ").split() if p]
    if len(parts) != 4:
        raise InvalidAOIError(
            f"type the bounding box as four numbers 'west, south, east, north' in degrees, "
            f"got {text!r}"
        )
    try:
        w, s, e, n = (float(p) for p in parts)
    except ValueError as err:
        raise InvalidAOIError(
            f"the bounding box must be four numbers in degrees, got {text!r}"
        ) from err
    return AOI.from_bbox(w, s, e, n)


def aoi_from_upload(upload: Any, pasted: str | None) -> AOI:
    """An AOI from an uploaded GeoJSON/KML file or, failing that, pasted GeoJSON text.

    Args:
        upload: The ``st.file_uploader`` value (has ``name`` and ``getvalue()``) or ``None``.
        pasted: GeoJSON text from the text area, or empty.

    Raises:
        InvalidAOIError: nothing given, or the content is not a usable polygon.
    """
    if upload is not None:
        raw = upload.getvalue()
        name = str(getattr(upload, "name", "")).lower()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise InvalidAOIError(
                f"the file {upload.name!r} is not UTF-8 text: upload a GeoJSON or KML file"
            ) from err
        if name.endswith(".kml") or text.lstrip().startswith("<"):
            return AOI.from_kml(text)
        return AOI.from_geojson(text)
    if pasted and pasted.strip():
        return AOI.from_geojson(pasted.strip())
    raise InvalidAOIError("choose a GeoJSON/KML file or paste GeoJSON first")


def new_drawing(value: Mapping[str, Any] | None, last: str | None) -> str | None:
    """The map's drawing as JSON when it is new (not yet turned into the AOI), else ``None``."""
    if not value:
        return None
    drawing = value.get("last_active_drawing") or (value.get("all_drawings") or [None])[-1]
    if not drawing:
        return None
    text = json.dumps(drawing, sort_keys=True)
    return None if text == last else text


def aoi_from_map(value: Mapping[str, Any] | None) -> AOI:
    """The AOI drawn on the map (see :meth:`AOI.from_drawing`)."""
    return AOI.from_drawing(value)


# -- Results ---------------------------------------------------------------------------------------
def find_scene(results: Sequence[SceneSummary] | None, scene_id: str | None) -> SceneSummary | None:
    """The result with ``scene_id``, or ``None``."""
    if not results or not scene_id:
        return None
    return next((s for s in results if s.id == scene_id), None)


def selected_rows(shown: Sequence[SceneSummary], scene_id: str | None
                  ) -> dict[str, Any] | None:
    """The results table's ``selection_default``: the row of ``scene_id`` among the shown
    scenes (``None`` when it is not shown)."""
    rows = [i for i, s in enumerate(shown) if scene_id and s.id == scene_id]
    return {"selection": {"rows": rows[:1]}} if rows else None


def filter_scenes(
    results: Iterable[SceneSummary], *, max_cloud: float, min_coverage: float
) -> list[SceneSummary]:
    """Scenes with cloud ≤ ``max_cloud`` % (radar scenes have none) and AOI coverage ≥
    ``min_coverage`` %, in the given (date) order."""
    return [
        s for s in results
        if (s.cloud_cover is None or s.cloud_cover <= max_cloud)
        and s.aoi_coverage >= min_coverage
    ]


def results_frame(scenes: Sequence[SceneSummary]) -> pd.DataFrame:
    """The results table: one row per scene, in the order given."""
    return pd.DataFrame(
        {
            "Date (UTC)": [s.datetime.strftime("%Y-%m-%d %H:%M") for s in scenes],
            "Platform": [s.platform or "" for s in scenes],
            "MGRS tile": [s.mgrs_tile or "" for s in scenes],
            "Scene cloud %": [s.cloud_cover for s in scenes],
            "AOI coverage %": [round(s.aoi_coverage, 1) for s in scenes],
            "Processing baseline": [s.processing_baseline or "" for s in scenes],
            "Item id": [s.id for s in scenes],
        }
    )


def no_results_text(request: SearchRequest | None) -> str:
    """What to change when a search found nothing."""
    if request is None:
        return "No scenes found."
    cloud = (f" with at most {request.max_cloud:g}% cloud"
             if request.collection.has_cloud_cover else "")
    return (
        f"No {collection_label(request.collection.value)} scenes over this AOI between "
        f"{request.start.isoformat()} and {request.end.isoformat()}{cloud}. Widen the date "
        "range, raise the cloud limit or move the AOI."
    )


def same_day_items(results: Sequence[SceneSummary], selected: SceneSummary) -> list[dict[str, Any]]:
    """Item dicts to load for ``selected``: it and every result of the same collection and UTC
    day that overlaps the AOI (adjacent tiles are mosaicked), the selected one first."""
    day = selected.datetime.date()
    others = [
        s.item for s in results
        if s.id != selected.id and s.collection == selected.collection
        and s.datetime.date() == day and s.aoi_coverage > 0
        and s.processing_baseline == selected.processing_baseline
    ]
    return [selected.item, *others]


def scene_markdown(scene: SceneSummary) -> str:
    """A short description of a search hit."""
    cloud = "n/a" if scene.cloud_cover is None else f"{scene.cloud_cover:g}%"
    lines = [
        f"- **Acquired** {scene.datetime.strftime('%Y-%m-%d %H:%M UTC')}"
        f" · {markdown_text(scene.platform or 'unknown platform')}",
        f"- **Collection** {collection_label(scene.collection)}",
        f"- **Scene cloud** {cloud} · **AOI coverage** {scene.aoi_coverage:.1f}%",
    ]
    if scene.mgrs_tile:
        lines.append(f"- **MGRS tile** {markdown_text(scene.mgrs_tile)}")
    if scene.processing_baseline:
        lines.append(f"- **Processing baseline** {markdown_text(scene.processing_baseline)}")
    return "\n".join(lines)


def _local_path(href: str) -> Path | None:
    parsed = urlparse(href)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and href.startswith("/"):
        return Path(href)
    return None


def show_thumbnail(href: str | None) -> None:
    """Show the scene preview when the item has one; never fail on an unreachable image."""
    if not href:
        st.caption("This item has no preview image.")
        return
    local = _local_path(href)
    try:
        if local is not None:
            if not local.is_file():
                st.caption(f"Preview not found at {markdown_code(local)}.")
                return
            st.image(local.read_bytes(), caption="Catalog preview", width="stretch")
        elif urlparse(href).scheme in {"http", "https"}:
            st.image(href, caption="Catalog preview (loaded by your browser)", width="stretch")
        else:
            st.caption(f"Preview at {markdown_code(href)} cannot be shown here.")
    except (OSError, ValueError, TypeError) as err:
        logger.warning("preview %s cannot be shown: %s", href, err)
        st.caption(f"The preview at {markdown_code(href)} cannot be shown "
                   f"({type(err).__name__}).")


def loaded_scene_markdown(scene: Any) -> str:
    """What was loaded: size, CRS, AOI cloud/valid shares and the offset applied."""
    attrs = scene.attrs
    ny, nx = int(scene.sizes["y"]), int(scene.sizes["x"])
    res = attrs.get("resolution_m", 10.0)
    offset = int(attrs.get("offset_applied", 0) or 0)
    offset_text = (f"{offset} DN subtracted (processing baseline "
                   f"{markdown_text(attrs.get('processing_baseline', '?'))} ≥ 04.00)" if offset
                   else "none (baseline before 04.00 or radar)")
    return "\n".join([
        f"- **Scene** {markdown_code(attrs.get('scene_id', '?'))} · "
        f"{markdown_text(attrs.get('datetime', ''))}",
        f"- **Window** {nx} × {ny} px at {res:g} m · CRS {scene.rio.crs} · "
        f"{int(scene.sizes['band'])} bands ({markdown_text(attrs.get('modality', '?'))})",
        f"- **AOI cloud share** {100 * float(attrs.get('aoi_cloud_share', 0.0)):.1f}% · "
        f"**valid pixels** {100 * float(attrs.get('aoi_valid_share', 0.0)):.1f}%",
        f"- **Offset applied** {offset_text}",
    ])


# -- Map -------------------------------------------------------------------------------------------
def scene_preview(scene: Any) -> tuple[Any, str] | None:
    """(display layer, hold key) of the loaded scene's true colour, or ``None``.

    The map draws it as tiles of the copy the app holds (:func:`preview_overlay`); the key is
    new for every loaded scene.
    """
    import uuid

    from app.layers import display_layers_for

    try:
        layers = display_layers_for({str(scene.attrs.get("modality", "S2L2A")): scene})
    except TerraLensError as err:
        logger.warning("no preview of the loaded scene: %s", err)
        return None
    first = next((lay for lay in layers if lay.name == "Input true colour"), None)
    if first is None:
        first = layers[0] if layers else None
    return None if first is None else (first, f"scene-preview|{uuid.uuid4().hex}")


def preview_overlay(scene: Any, preview: tuple[Any, str] | None,
                    base_url_path: str | None = None) -> Any:
    """The loaded scene's preview as a tile layer (:class:`app.map_rasters.TileOverlay`) of the
    bands it shows, held by the app (written once per process), or ``None``.

    Args:
        scene: The loaded scene (``state.SCENE``).
        preview: Its :func:`scene_preview`.
        base_url_path: Streamlit's ``server.baseUrlPath`` (default: the running server's).
    """
    from app.held_tiles import held_overlay, held_rasters

    if scene is None or preview is None:
        return None
    if base_url_path is None:
        base_url_path = str(st.get_option("server.baseUrlPath") or "")
    layer, key = preview
    try:
        held = held_rasters().hold(key, scene.sel(band=list(layer.bands)), [layer])
    except (TerraLensError, KeyError) as err:
        logger.warning("no preview of the loaded scene: %s", err)
        return None
    return held_overlay(held, layer, 1.0, base_url_path=base_url_path)


def map_signature(aoi: AOI | None, results: Sequence[SceneSummary] | None,
                  selected: SceneSummary | None, preview: Any, geocoder_url: str | None) -> str:
    """What the Search map's script is built from (a change re-mounts the map; see
    :mod:`app.ui.map_view`)."""
    import hashlib

    parts = [aoi.to_json() if aoi is not None else "", *(s.id for s in results or []),
             selected.id if selected is not None else "", getattr(preview, "url", ""),
             geocoder_url or ""]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def search_map(
    aoi: AOI | None,
    results: Sequence[SceneSummary] | None,
    selected: SceneSummary | None,
    preview: Any = None,
    *,
    center: tuple[float, float] | None = None,
    zoom: int | None = None,
    geocoder_url: str | None = None,
) -> Any:
    """The Search page map: drawing tools, the AOI, result footprints (the selected one
    highlighted), the true-colour preview of a loaded scene (a
    :class:`app.map_rasters.TileOverlay` from :func:`preview_overlay`, drawn from the app's
    tiles) and, with ``geocoder_url`` (``Settings.geocoder_url``), a place search box."""
    from app.maps import build_map

    footprints = [(s.id, s.footprint, selected is not None and s.id == selected.id)
                  for s in results or []]
    return build_map(aoi=aoi, footprints=footprints, draw=True,
                     tile_overlays=[preview] if preview is not None else [],
                     center=center, zoom=zoom, static_url=widgets.static_url(),
                     geocoder_url=geocoder_url)
