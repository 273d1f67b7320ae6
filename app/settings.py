"""Configuration from environment variables.

Every knob an operator can turn is read here, once, into a frozen :class:`Settings`. Pages, the
CLI and tests call :func:`load_settings` (cheap, no caching: tests change the environment).

Variables:
    TERRALENS_STAC_URL: STAC API root (default: Microsoft Planetary Computer).
    TERRALENS_DATA_DIR: where runs and caches live (default: ``$XDG_DATA_HOME/terralens`` or
        ``~/.local/share/terralens``).
    TERRALENS_MAX_AOI_KM2: largest AOI accepted, in km² (default 100).
    TERRALENS_MAX_SEARCH_KM2: largest AOI (and bounding box) a catalog search accepts, in km²
        (default 10,000, or ``TERRALENS_MAX_AOI_KM2`` when that is larger): a search reads no
        pixels, so a region larger than the run limit can be searched; only loading a scene and
        running are limited by ``TERRALENS_MAX_AOI_KM2`` / ``TERRALENS_MAX_WINDOW_KM2``.
    TERRALENS_MAX_WINDOW_KM2: largest bounding box of an AOI, in km² (the scene window read for
        it; default 4 × ``TERRALENS_MAX_AOI_KM2``).
    TERRALENS_MAX_READ_PIXELS: most pixel values (bands × height × width) read from a scene,
        an upload or a COG URL at once (default 64 million, 256 MB as float32); larger uploads
        and URL windows are read decimated (from an overview when the file has one).
    TERRALENS_ALLOW_PRIVATE_URLS: ``1`` lets *Add data → COG URL* fetch private, loopback and
        link-local addresses (default: refused).
    TERRALENS_WEIGHTS: ``hub`` (default), a local directory, or ``untrained``.
    TERRALENS_DEVICE: ``auto`` (default), ``cuda``, ``mps`` or ``cpu``.
    TERRALENS_MODEL_SIZE: default TerraMind size, ``tiny|small|base|large`` (default ``base``).
    TERRALENS_STAC_TIMEOUT: seconds per network request (catalog, SAS token, scene and COG
        reads; default 20); an operation gives up after 3 × this in all.
    TERRALENS_GEOCODER_URL: Nominatim-compatible place search used by the Search page map's
        search box, called from the analyst's browser (default: OpenStreetMap's Nominatim);
        ``off`` removes the box (air-gapped deployments).
    TERRALENS_BASEMAP_URL: a site's own XYZ tile server (``https://tiles.example/{z}/{x}/{y}.png``),
        offered first among the basemaps (default: none; imagery, OpenStreetMap, light and dark
        tiles, and the offline Natural Earth outline that is always there).
    TERRALENS_MAX_MODELS: TerraMind models the server keeps loaded at once, shared by every
        session (default 1; idle ones beyond it are unloaded, least recently used first).
    TERRALENS_LAYER_CACHE_MB: memory for the Layers page's cache of opened runs' rasters,
        rendered map images and statistics, shared by every session (default 1024).
    TERRALENS_SESSION_LAYERS_MB: memory for the layers one session adds on the Layers page
        (uploads, COG URLs, catalog scenes; default 512): adding beyond it drops the oldest.
    TERRALENS_TILE_CACHE_MB: memory for rendered map tiles (default 64).
    TERRALENS_MALLOC_ARENAS: glibc malloc arenas of the server process (default 2): fewer
        arenas keep less freed memory; freed memory is also returned after every job.
    PC_SDK_SUBSCRIPTION_KEY / PC_SDK_SUBSCRIPTION_KEY_FILE: the Planetary Computer key (needed
        for Sentinel-1 RTC), given directly or as a file (a Docker secret).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from app.aoi import WINDOW_FACTOR
from app.signing import is_planetary_computer
from inference.errors import InvalidRequestError

PLANETARY_COMPUTER_STAC_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
#: OpenStreetMap's public Nominatim; its usage policy (no bulk or autocomplete queries):
#: https://operations.osmfoundation.org/policies/nominatim/
NOMINATIM_URL = "https://nominatim.openstreetmap.org/"
#: Default of ``TERRALENS_MAX_READ_PIXELS``: most pixel values (bands × height × width) one
#: read may hold (256 MB as float32).
DEFAULT_MAX_READ_PIXELS = 64_000_000
#: Default of ``TERRALENS_MAX_SEARCH_KM2`` (km²): a region of about 100 × 100 km.
DEFAULT_MAX_SEARCH_KM2 = 10_000.0
#: Defaults of the memory bounds (see the module docstring).
DEFAULT_MAX_MODELS = 1
DEFAULT_LAYER_CACHE_MB = 1024.0
DEFAULT_SESSION_LAYERS_MB = 512.0
DEFAULT_TILE_CACHE_MB = 64.0
DEFAULT_MALLOC_ARENAS = 2


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "terralens"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration (see the module docstring for the variables)."""

    stac_url: str
    data_dir: Path
    max_aoi_km2: float
    weights: str
    device: str
    model_size: str
    stac_timeout_s: float
    pc_subscription_key: str | None = field(default=None, repr=False)
    geocoder_url: str | None = NOMINATIM_URL
    #: Another run store folder than ``<data_dir>/runs`` (the CLI's ``--out``).
    runs_path: Path | None = None
    max_window_km2: float = 400.0
    max_read_pixels: int = DEFAULT_MAX_READ_PIXELS
    allow_private_urls: bool = False
    basemap_url: str | None = None
    max_search_km2: float = DEFAULT_MAX_SEARCH_KM2
    max_models: int = DEFAULT_MAX_MODELS
    layer_cache_mb: float = DEFAULT_LAYER_CACHE_MB
    session_layers_mb: float = DEFAULT_SESSION_LAYERS_MB
    tile_cache_mb: float = DEFAULT_TILE_CACHE_MB
    malloc_arenas: int = DEFAULT_MALLOC_ARENAS

    @property
    def runs_dir(self) -> Path:
        """Folder of the run store (and of its job database)."""
        return self.runs_path if self.runs_path is not None else self.data_dir / "runs"

    @property
    def run_limits(self) -> dict[str, float]:
        """Keyword arguments of :meth:`app.aoi.AOI.validate` for loading a scene or running."""
        return {"max_km2": self.max_aoi_km2, "max_window_km2": self.max_window_km2}

    @property
    def search_limits(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`app.aoi.AOI.validate` for a catalog search (its area
        and its bounding box are both held to ``TERRALENS_MAX_SEARCH_KM2``)."""
        return {"max_km2": self.max_search_km2,
                "max_window_km2": max(self.max_search_km2, self.max_window_km2),
                "area_setting": "TERRALENS_MAX_SEARCH_KM2",
                "window_setting": "TERRALENS_MAX_SEARCH_KM2"}

    @property
    def is_planetary_computer(self) -> bool:
        """Whether assets must be signed with Planetary Computer SAS tokens."""
        return is_planetary_computer(self.stac_url)


def _float_env(name: str, default: float) -> float:
    """A finite, positive number from the environment (``inf``, ``nan``, 0 are refused)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise InvalidRequestError(f"{name} must be a number, got {raw!r}") from err
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(
            f"{name} must be a finite, positive number, got {raw!r}: unset it for the default "
            f"({default:g}) or give a number such as {default:g}"
        )
    return value


def _count_env(name: str, default: int) -> int:
    """A whole, positive number from the environment (``1.5``, 0, ``inf`` are refused)."""
    value = _float_env(name, float(default))
    if not value.is_integer():
        raise InvalidRequestError(
            f"{name} must be a whole number, got {os.environ.get(name)!r}: unset it for the "
            f"default ({default}) or give a number such as {default}"
        )
    return int(value)


def _flag_env(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return False
    if raw in {"1", "true", "yes", "on"}:
        return True
    raise InvalidRequestError(f"{name} must be 1 or 0, got {raw!r}")


def _geocoder_url() -> str | None:
    """``TERRALENS_GEOCODER_URL`` as a service root ending in ``/``, or ``None`` for ``off``."""
    raw = os.environ.get("TERRALENS_GEOCODER_URL", "").strip()
    if not raw:
        return NOMINATIM_URL
    if raw.lower() == "off":
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise InvalidRequestError(
            f"TERRALENS_GEOCODER_URL must be an http(s) URL of a Nominatim-compatible service "
            f"or 'off', got {raw!r}"
        )
    return raw if raw.endswith("/") else f"{raw}/"


def _basemap_url() -> str | None:
    url = os.environ.get("TERRALENS_BASEMAP_URL", "").strip() or None
    if url is not None and (urlparse(url).scheme not in {"http", "https"}
                            or not all(f"{{{k}}}" in url for k in "zxy")):
        raise InvalidRequestError(
            "TERRALENS_BASEMAP_URL must be an http(s) tile URL with {z}, {x} and {y}, got "
            f"{url!r}"
        )
    return url


def _subscription_key() -> str | None:
    key = os.environ.get("PC_SDK_SUBSCRIPTION_KEY", "").strip()
    if key:
        return key
    key_file = os.environ.get("PC_SDK_SUBSCRIPTION_KEY_FILE", "").strip()
    if not key_file:
        return None
    try:
        return Path(key_file).read_text(encoding="utf-8").strip() or None
    except OSError as err:
        raise InvalidRequestError(
            f"PC_SDK_SUBSCRIPTION_KEY_FILE points to {key_file!r}, which cannot be read: {err}"
        ) from err


def load_settings() -> Settings:
    """Read the environment into a :class:`Settings`.

    Raises:
        InvalidRequestError: a variable holds a value that cannot be used.
    """
    device = os.environ.get("TERRALENS_DEVICE", "auto").strip().lower() or "auto"
    if device not in {"auto", "cuda", "mps", "cpu"}:
        raise InvalidRequestError(
            f"TERRALENS_DEVICE must be auto, cuda, mps or cpu, got {device!r}"
        )
    size = os.environ.get("TERRALENS_MODEL_SIZE", "base").strip().lower() or "base"
    if size not in {"tiny", "small", "base", "large"}:
        raise InvalidRequestError(
            f"TERRALENS_MODEL_SIZE must be tiny, small, base or large, got {size!r}"
        )
    data_dir = os.environ.get("TERRALENS_DATA_DIR", "").strip()
    max_aoi_km2 = _float_env("TERRALENS_MAX_AOI_KM2", 100.0)
    max_window_km2 = _float_env("TERRALENS_MAX_WINDOW_KM2", WINDOW_FACTOR * max_aoi_km2)
    if max_window_km2 < max_aoi_km2:
        raise InvalidRequestError(
            f"TERRALENS_MAX_WINDOW_KM2 ({max_window_km2:g}) must be at least "
            f"TERRALENS_MAX_AOI_KM2 ({max_aoi_km2:g}): an AOI's bounding box is never smaller "
            "than the AOI"
        )
    max_search_km2 = _float_env("TERRALENS_MAX_SEARCH_KM2",
                                max(DEFAULT_MAX_SEARCH_KM2, max_aoi_km2))
    if max_search_km2 < max_aoi_km2:
        raise InvalidRequestError(
            f"TERRALENS_MAX_SEARCH_KM2 ({max_search_km2:g}) must be at least "
            f"TERRALENS_MAX_AOI_KM2 ({max_aoi_km2:g}): an area that can be run can be searched"
        )
    return Settings(
        stac_url=os.environ.get("TERRALENS_STAC_URL", "").strip() or PLANETARY_COMPUTER_STAC_URL,
        data_dir=Path(data_dir).expanduser() if data_dir else _default_data_dir(),
        max_aoi_km2=max_aoi_km2,
        weights=os.environ.get("TERRALENS_WEIGHTS", "hub").strip() or "hub",
        device=device,
        model_size=size,
        stac_timeout_s=_float_env("TERRALENS_STAC_TIMEOUT", 20.0),
        pc_subscription_key=_subscription_key(),
        geocoder_url=_geocoder_url(),
        max_window_km2=max_window_km2,
        max_read_pixels=int(_float_env("TERRALENS_MAX_READ_PIXELS", DEFAULT_MAX_READ_PIXELS)),
        allow_private_urls=_flag_env("TERRALENS_ALLOW_PRIVATE_URLS"),
        basemap_url=_basemap_url(),
        max_search_km2=max_search_km2,
        max_models=_count_env("TERRALENS_MAX_MODELS", DEFAULT_MAX_MODELS),
        layer_cache_mb=_float_env("TERRALENS_LAYER_CACHE_MB", DEFAULT_LAYER_CACHE_MB),
        session_layers_mb=_float_env("TERRALENS_SESSION_LAYERS_MB", DEFAULT_SESSION_LAYERS_MB),
        tile_cache_mb=_float_env("TERRALENS_TILE_CACHE_MB", DEFAULT_TILE_CACHE_MB),
        malloc_arenas=_count_env("TERRALENS_MALLOC_ARENAS", DEFAULT_MALLOC_ARENAS),
    )
