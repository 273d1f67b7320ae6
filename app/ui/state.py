"""The typed session state: every ``st.session_state`` key TerraLens uses, declared once.

Each key is a :class:`Key` with its name, type and default; pages read and write state only
through these keys (``state.AOI_JSON.get()``, ``state.RUN_ID.set(run_id)``), never through bare
strings. Widget keys (whose value Streamlit manages) are declared here too, as plain names, so
no two widgets can collide and tests can seed them.

Values kept across pages live in non-widget keys: Streamlit drops a widget's state when the
page holding the widget is not shown, so widgets read their default from a state key and write
the chosen value back.

The AOI is stored as its canonical JSON (``AOI.to_json()``) and read back as the frozen
:class:`~app.aoi.AOI` value through :func:`get_aoi` and :func:`get_scene_aoi` (each text is
parsed once); the loaded scene (a possibly large ``xarray.DataArray``) lives under the single key
:data:`SCENE`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import streamlit as st

from app.aoi import AOI
from inference.errors import InvalidAOIError

if TYPE_CHECKING:
    import xarray as xr

    from app.catalog import SceneSummary, SearchRequest

T = TypeVar("T")

#: Every declared key, by name (tests and the "reset" button iterate over it).
REGISTRY: dict[str, Key[Any]] = {}


@dataclass(frozen=True)
class Key(Generic[T]):
    """One session-state entry: its name, a default factory and what it holds.

    Attributes:
        name: The ``st.session_state`` key.
        default: Factory of the value used when the key is absent (called each time, so
            mutable defaults are never shared between sessions).
        doc: What the key holds, for readers of this module.
    """

    name: str
    default: Callable[[], T] = field(repr=False)
    doc: str = ""

    def __post_init__(self) -> None:
        if self.name in REGISTRY:
            raise ValueError(f"session-state key {self.name!r} is declared twice")
        REGISTRY[self.name] = self

    def get(self) -> T:
        """The current value, or the default when unset (the default is not stored)."""
        if self.name in st.session_state:
            return st.session_state[self.name]  # type: ignore[no-any-return]
        return self.default()

    def set(self, value: T) -> None:
        """Store ``value``."""
        st.session_state[self.name] = value

    def clear(self) -> None:
        """Forget the value (the next :meth:`get` returns the default)."""
        st.session_state.pop(self.name, None)

    def is_set(self) -> bool:
        """Whether a value is stored."""
        return self.name in st.session_state


def _none() -> None:
    return None


# -- Search: AOI, map, request, results --------------------------------------------------------
AOI_JSON: Key[str | None] = Key("aoi", _none, "the AOI as canonical GeoJSON text (AOI.to_json)")
AOI_SOURCE: Key[str] = Key("aoi_source", lambda: "", "how the AOI was given: drawn/uploaded/bbox")
LAST_DRAWING: Key[str | None] = Key(
    "last_drawing", _none, "JSON of the last map drawing already turned into the AOI"
)
AOI_REJECTED: Key[str | None] = Key(
    "aoi_rejected", _none, "why the last drawn area was refused (shown until the next AOI)"
)
SEARCH_MAP_GENERATION: Key[int] = Key(
    "search_map_generation", lambda: 0,
    "bumped when a drawn area is refused: a new map instance drops the refused shape"
)
SEARCH_REQUEST: Key[SearchRequest | None] = Key(
    "search_request", _none, "the last search that ran (frozen SearchRequest)"
)
SEARCH_RESULTS: Key[list[SceneSummary] | None] = Key(
    "search_results", _none, "scenes of the last search (None: no search yet)"
)
SEARCH_SKIPPED: Key[int] = Key("search_skipped", lambda: 0, "malformed items left out")
SELECTED_SCENE_ID: Key[str | None] = Key("selected_scene_id", _none, "chosen STAC item id")
SEARCH_COLLECTION: Key[str | None] = Key(
    "search_collection", _none, "collection chosen in the search form (None: the first)"
)
SEARCH_DATES: Key[tuple[dt.date, dt.date] | None] = Key(
    "search_dates", _none, "(start, end) of the search form (None: default_date_range)"
)
SEARCH_MAX_CLOUD: Key[int] = Key("search_max_cloud", lambda: 30, "max cloud % of the search")
SEARCH_LIMIT: Key[int] = Key("search_limit", lambda: 50, "max scenes of the search")
FILTER_CLOUD: Key[int] = Key("filter_cloud", lambda: 100, "results shown: cloud at most %")
FILTER_COVERAGE: Key[int] = Key(
    "filter_coverage", lambda: 0, "results shown: AOI coverage at least %"
)

# -- Loaded scene -------------------------------------------------------------------------------
SCENE: Key[xr.DataArray | None] = Key(
    "scene", _none, "the loaded AOI window of the chosen scene (band, y, x) from load_scene"
)
SCENE_ITEMS: Key[tuple[dict[str, Any], ...]] = Key(
    "scene_items", tuple, "STAC Item dicts the loaded scene was read from (same day)"
)
SCENE_AOI_JSON: Key[str | None] = Key(
    "scene_aoi", _none, "the AOI (JSON) the loaded scene was read for"
)
SCENE_PREVIEW: Key[Any] = Key(
    "scene_preview", _none,
    "(DisplayLayer, hold key) true colour of the loaded scene, drawn as held tiles",
)

# -- Run ----------------------------------------------------------------------------------------
RUN_ID: Key[str | None] = Key("run_id", _none, "the current run (opened on the Layers page)")
RUN_JOB_ID: Key[int | None] = Key(
    "run_job_id", _none, "the job the Run page submitted last (its state is in the job store)"
)
RUN_TASK: Key[str | None] = Key("run_task", _none, "task chosen on the Run page (Task value)")
RUN_SIZE: Key[str | None] = Key(
    "run_size", _none, "model size chosen on the Run page (None: TERRALENS_MODEL_SIZE)"
)
RUN_OUTPUTS: Key[list[str] | None] = Key(
    "run_outputs", _none, "outputs chosen on the Run page (None: the default outputs)"
)
RUN_TIMESTEPS: Key[int] = Key("run_timesteps", lambda: 10, "diffusion timesteps of the Run page")
RUN_SEED: Key[int] = Key("run_seed", lambda: 0, "seed chosen on the Run page")
RUN_SEEDS: Key[int] = Key("run_seeds", lambda: 1,
                          "ensemble seeds chosen on the Run page (1 = no ensemble)")
RUN_CHECKPOINT: Key[str] = Key("run_checkpoint", lambda: "", "TiM checkpoint typed on the Run page")

# -- Job queue (sidebar panel) ------------------------------------------------------------------
SEEN_JOBS: Key[set[int]] = Key("seen_jobs", set, "job ids this session saw queued or running")
TOASTED_JOBS: Key[set[int]] = Key("toasted_jobs", set, "ended job ids already announced")

# -- Layers page --------------------------------------------------------------------------------
LAYER_VISIBLE: Key[dict[str, bool]] = Key("layer_visible", dict, "layer name -> shown on map")
LAYER_OPACITY: Key[dict[str, float]] = Key("layer_opacity", dict, "layer name -> opacity 0..1")
LAYER_ORDER: Key[list[str]] = Key("layer_order", list, "layer names, bottom to top")
LAYER_STRETCH: Key[dict[str, tuple[str, float | None, float | None]]] = Key(
    "layer_stretch", dict, "layer name -> (stretch choice, custom low, custom high)"
)
LAYER_RAMP: Key[dict[str, str]] = Key("layer_ramp", dict, "layer name -> colour ramp choice")
BASEMAP: Key[str | None] = Key("basemap", _none, "basemap chosen on the Layers page")
LAYERS_RUN_ID: Key[str | None] = Key(
    "layers_run_id", _none, "run whose layer preferences are in LAYER_* (reset on change)"
)
ADDED_LAYERS: Key[dict[str, xr.DataArray]] = Key(
    "added_layers", dict, "layers the analyst added (uploaded GeoTIFFs), by display name"
)
ADD_CANDIDATES: Key[list[Any] | None] = Key(
    "add_candidates", _none, "catalog scenes found over the open run's area (Add data)"
)
LAYER_COMPARE: Key[tuple[str, str] | None] = Key(
    "layer_compare", _none, "(left, right) layers of the swipe comparison, if one is on"
)
LAYERS_FRAGMENT_S: Key[float | None] = Key(
    "layers_fragment_s", _none,
    "server seconds of the last map-and-layer-list fragment run (what a toggle costs)",
)
INSPECT_POINT: Key[tuple[float, float] | None] = Key(
    "inspect_point", _none, "(lat, lon) last clicked on the Layers map"
)

# -- Runs page ----------------------------------------------------------------------------------
DELETE_PENDING: Key[str | None] = Key("delete_pending", _none, "run id awaiting confirmation")

# -- Geolocate page -----------------------------------------------------------------------------
GEOLOCATE_JOB_ID: Key[int | None] = Key(
    "geolocate_job_id", _none, "the geolocation job this session submitted last"
)


# -- Map views (app/ui/map_view.py) --------------------------------------------------------------
MAP_VIEWS: Key[dict[str, tuple[str, float, float, int]]] = Key(
    "map_views", dict, "map name -> (scope, lat, lon, zoom): the view each map showed last"
)
MAP_VIEWS_SEEN: Key[dict[str, tuple[float, float, int]]] = Key(
    "map_views_seen", dict, "map name -> (lat, lon, zoom) the map reported last"
)
MAP_VIEWS_PASSED: Key[dict[str, Any]] = Key(
    "map_views_passed", dict,
    "map name -> ((scope, signature), view passed to st_folium): changed only on a re-mount",
)
PAGE_NOW: Key[str | None] = Key("page_now", _none, "url path of the page this run shows")
PAGE_BEFORE: Key[str | None] = Key("page_before", _none, "url path of the previous run's page")


# -- Widget keys (values managed by Streamlit) ---------------------------------------------------
class W:
    """Names of widget keys, one per widget that needs a stable identity."""

    SEARCH_MAP = "w_search_map"
    REALITY_DAYS = "w_reality_days"
    REALITY_RUN = "w_reality_run"
    REALITY_LAYER = "w_reality_layer"
    REALITY_JSON = "w_reality_json"
    REALITY_CSV = "w_reality_csv"
    UPLOAD = "w_aoi_upload"
    PASTE = "w_aoi_paste"
    USE_UPLOAD = "w_use_upload"
    BBOX = "w_aoi_bbox"
    USE_BBOX = "w_use_bbox"
    JUMP_LAT = "w_jump_lat"
    JUMP_LON = "w_jump_lon"
    JUMP = "w_jump"
    CLEAR_AOI = "w_clear_aoi"
    COLLECTION = "w_collection"
    START = "w_start"
    END = "w_end"
    MAX_CLOUD = "w_max_cloud"
    LIMIT = "w_limit"
    RESULTS_TABLE = "w_results_table"
    FILTER_CLOUD = "w_filter_cloud"
    FILTER_COVERAGE = "w_filter_coverage"
    LOAD = "w_load_scene"
    TASK = "w_task"
    SIZE = "w_model_size"
    OUTPUTS = "w_outputs"
    TIMESTEPS = "w_timesteps"
    SEED = "w_seed"
    SEEDS = "w_ensemble_seeds"
    CHECKPOINT = "w_checkpoint"
    RUN = "w_run"
    CANCEL = "w_cancel"
    RUN_AGAIN = "w_run_again"
    LAYERS_MAP = "w_layers_map"
    BASEMAP = "w_basemap"
    COMPARE = "w_compare"
    COMPARE_LEFT = "w_compare_left"
    COMPARE_RIGHT = "w_compare_right"
    BRING_TO_TOP = "w_bring_to_top"
    STATS_LAYER = "w_stats_layer"
    DOWNLOAD_ZIP = "w_download_zip"
    DOWNLOAD_PNG = "w_download_png"
    SNAPSHOT_LAYER = "w_snapshot_layer"
    SNAPSHOT_WIDTH = "w_snapshot_width"
    DOWNLOAD_PDF = "w_download_pdf"
    ADD_UPLOAD = "w_add_upload"
    ADD_BUTTON = "w_add_button"
    ADD_URL = "w_add_url"
    ADD_URL_BUTTON = "w_add_url_button"
    ADD_COLLECTION = "w_add_collection"
    ADD_DAYS = "w_add_days"
    ADD_FIND = "w_add_find"
    ADD_SCENE = "w_add_scene"
    ADD_SCENE_BUTTON = "w_add_scene_button"
    RUNS_CHOICE = "w_runs_choice"
    RUNS_OPEN = "w_runs_open"
    RUNS_DELETE = "w_runs_delete"
    RUNS_CONFIRM = "w_runs_confirm"
    RUNS_KEEP = "w_runs_keep"
    GEO_MODE = "w_geo_mode"
    GEO_SAMPLES = "w_geo_samples"
    GEO_TEMPERATURE = "w_geo_temperature"
    GEO_TOP_P = "w_geo_top_p"
    GEO_SEED = "w_geo_seed"
    GEO_SIZE = "w_geo_size"
    GEO_RUN = "w_geo_run"
    GEO_CANCEL = "w_geo_cancel"
    GEO_MAP = "w_geo_map"
    GEO_GEOJSON = "w_geo_geojson"
    GEO_CSV = "w_geo_csv"

    @staticmethod
    def search_map(generation: int) -> str:
        """Key of the Search page map; a new generation is a new map (drawings dropped)."""
        return W.SEARCH_MAP if generation == 0 else f"{W.SEARCH_MAP}::{generation}"

    @staticmethod
    def layer(kind: str, name: str) -> str:
        """Key of a per-layer widget, e.g. ``W.layer("visible", "[G] LULC")``."""
        return f"w_layer_{kind}::{name}"

    @staticmethod
    def job(kind: str, job_id: int) -> str:
        """Key of a per-job widget of the queue panel, e.g. ``W.job("cancel", 7)``."""
        return f"w_job_{kind}::{job_id}"

    @staticmethod
    def lulc_fraction(class_name: str) -> str:
        """Key of a land-cover fraction slider on the Geolocate page."""
        return f"w_geo_frac::{class_name}"


# -- Typed helpers --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _parse_aoi(text: str) -> AOI:
    """The AOI of a canonical JSON text, parsed once per text (an AOI is frozen, so one value
    can serve every page and session holding the same text)."""
    return AOI.from_json(text)


def _aoi_under(key: Key[str | None]) -> AOI | None:
    text = key.get()
    if not text:
        return None
    try:
        return _parse_aoi(text)
    except InvalidAOIError:
        key.clear()
        return None


def get_aoi() -> AOI | None:
    """The search AOI held in :data:`AOI_JSON` (``None`` if unset or unreadable)."""
    return _aoi_under(AOI_JSON)


def get_scene_aoi() -> AOI | None:
    """The AOI the loaded scene was read for, held in :data:`SCENE_AOI_JSON` (``None`` if unset
    or unreadable)."""
    return _aoi_under(SCENE_AOI_JSON)


def set_aoi(aoi: AOI | None, source: str = "") -> None:
    """Store (or clear) the AOI. A new AOI forgets the search results and loaded scene."""
    previous = AOI_JSON.get()
    new = aoi.to_json() if aoi is not None else None
    if new == previous:
        return
    AOI_JSON.set(new)
    AOI_SOURCE.set(source if aoi is not None else "")
    for key in (SEARCH_RESULTS, SEARCH_REQUEST, SELECTED_SCENE_ID, AOI_REJECTED):
        key.clear()
    SEARCH_SKIPPED.clear()


def set_scene(
    scene: xr.DataArray, items: tuple[dict[str, Any], ...], aoi: AOI, preview: Any = None
) -> None:
    """Keep a loaded scene with the items and AOI it was read for (and its map preview)."""
    SCENE.set(scene)
    SCENE_PREVIEW.set(preview)
    SCENE_ITEMS.set(tuple(items))
    SCENE_AOI_JSON.set(aoi.to_json())


def clear_scene() -> None:
    """Forget the loaded scene."""
    for key in (SCENE, SCENE_ITEMS, SCENE_AOI_JSON, SCENE_PREVIEW):
        key.clear()


def open_run(run_id: str | None) -> None:
    """Make ``run_id`` the current run and mirror it in the URL (``?run=<id>``)."""
    RUN_ID.set(run_id)
    if run_id:
        st.query_params["run"] = run_id
    elif "run" in st.query_params:
        del st.query_params["run"]


def kept_index(options: Sequence[T], kept: T | None) -> int:
    """Index of the kept choice among ``options`` (0 when it is unset or no longer offered):
    the ``index=`` of a radio or selectbox whose choice is kept for the session."""
    return list(options).index(kept) if kept is not None and kept in options else 0


def default_date_range(today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The default search window: the last 60 days up to today (UTC)."""
    end = today or dt.datetime.now(dt.UTC).date()
    return (end - dt.timedelta(days=60), end)


def fragment_rerun() -> bool:
    """Whether this script run reruns only a fragment (``st.fragment``): the entry point and the
    rest of the page do not run."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx is not None and ctx.fragment_ids_this_run)
