"""STAC catalog search and Planetary Computer asset signing.

The flow is: a frozen, validated :class:`SearchRequest` → :func:`search_scenes` (pystac-client,
bounded retries and time-outs) → a sorted list of frozen :class:`SceneSummary`. Items are kept
unsigned; assets are signed right before they are read (:func:`sign_item`,
:class:`HrefSigner`), because Planetary Computer SAS tokens expire after ~45 minutes.

Any STAC API works; signing only happens when the catalog is Planetary Computer
(:func:`is_planetary_computer`). Offline, every network step fails within a few seconds with a
:class:`~inference.errors.CatalogError` or :class:`~inference.errors.AssetAccessError`.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

import pystac
import pystac_client
import requests
import requests.adapters
import shapely
import urllib3.util.retry
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import shape

from app.aoi import AOI, geodesic_area_km2
from inference.errors import AssetAccessError, CatalogError, InvalidRequestError, SceneError
from inference.modalities import Modality

#: Largest number of scenes one search may return.
MAX_LIMIT = 500
#: Items requested per page from the STAC API (``limit`` in the API's sense).
DEFAULT_PAGE_SIZE = 100
#: Asset keys that hold a small preview image, in order of preference.
THUMBNAIL_ASSETS: tuple[str, ...] = ("rendered_preview", "thumbnail", "preview")
#: Retries for a failed catalog or SAS-token request (on top of the first try).
CATALOG_RETRIES = 2
#: SAS tokens with less time left than this are fetched again before use (seconds).
MIN_TOKEN_TTL_S = 120.0


class Collection(StrEnum):
    """STAC collections TerraLens can search, spelt as Planetary Computer spells them."""

    SENTINEL_2_L2A = "sentinel-2-l2a"
    SENTINEL_1_RTC = "sentinel-1-rtc"
    SENTINEL_1_GRD = "sentinel-1-grd"

    @property
    def modality(self) -> Modality:
        """The TerraMind modality of this collection's scenes."""
        return {
            Collection.SENTINEL_2_L2A: Modality.S2L2A,
            Collection.SENTINEL_1_RTC: Modality.S1RTC,
            Collection.SENTINEL_1_GRD: Modality.S1GRD,
        }[self]

    @property
    def has_cloud_cover(self) -> bool:
        """Whether items carry ``eo:cloud_cover`` (optical collections only)."""
        return self is Collection.SENTINEL_2_L2A


def is_planetary_computer(stac_url: str) -> bool:
    """Whether ``stac_url`` is Planetary Computer, whose assets need SAS signing.

    Same rule as :attr:`app.settings.Settings.is_planetary_computer`.
    """
    return "planetarycomputer.microsoft.com" in stac_url


def _to_date(value: Any, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError as err:
            raise InvalidRequestError(
                f"{name} date must be YYYY-MM-DD, got {value!r}"
            ) from err
    raise InvalidRequestError(f"{name} must be a date (YYYY-MM-DD), got {value!r}")


@dataclass(frozen=True)
class SearchRequest:
    """A validated catalog search; frozen and hashable, so it doubles as a cache key.

    Attributes:
        aoi: Area of interest (EPSG:4326).
        start: First acquisition day (UTC, inclusive). ``str`` ``YYYY-MM-DD`` is accepted.
        end: Last acquisition day (UTC, inclusive).
        collection: STAC collection id (a :class:`Collection` or its string).
        max_cloud: Largest ``eo:cloud_cover`` in percent (0..100), Sentinel-2 only.
        limit: Most scenes returned (1..500); the most recent ones are kept.
    """

    aoi: AOI
    start: dt.date
    end: dt.date
    collection: Collection = Collection.SENTINEL_2_L2A
    max_cloud: float = 30.0
    limit: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.aoi, AOI):
            raise InvalidRequestError(f"aoi must be an app.aoi.AOI, got {self.aoi!r:.120}")
        start = _to_date(self.start, "start")
        end = _to_date(self.end, "end")
        if end < start:
            raise InvalidRequestError(
                f"end date {end.isoformat()!r} is before start date {start.isoformat()!r}: "
                "swap them or widen the range"
            )
        try:
            collection = Collection(self.collection)
        except ValueError as err:
            known = ", ".join(c.value for c in Collection)
            raise InvalidRequestError(
                f"unknown collection {self.collection!r}; use one of {known}"
            ) from err
        cloud = self.max_cloud
        if isinstance(cloud, bool) or not isinstance(cloud, int | float) or not 0 <= cloud <= 100:
            raise InvalidRequestError(f"max_cloud must be a percentage 0..100, got {cloud!r}")
        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequestError(f"limit must be an integer 1..{MAX_LIMIT}, got {limit!r}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "collection", collection)
        object.__setattr__(self, "max_cloud", float(cloud))

    @property
    def datetime_range(self) -> str:
        """The STAC ``datetime`` interval covering whole UTC days."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59.999Z"

    def cloud_filter(self) -> dict[str, Any] | None:
        """CQL2-JSON ``eo:cloud_cover <= max_cloud`` (``None`` for radar collections)."""
        if not self.collection.has_cloud_cover:
            return None
        return {"op": "<=", "args": [{"property": "eo:cloud_cover"}, self.max_cloud]}


@dataclass(frozen=True)
class SceneSummary:
    """One search hit, in the form the pages and the CLI show.

    Attributes:
        id: STAC Item id.
        collection: Collection id.
        datetime: Acquisition time (UTC, timezone-aware).
        platform: e.g. ``"Sentinel-2A"`` (``None`` if the item does not say).
        mgrs_tile: Sentinel-2 MGRS tile (``s2:mgrs_tile``), else ``None``.
        cloud_cover: ``eo:cloud_cover`` of the whole tile in percent, else ``None``.
        aoi_coverage: Share of the AOI's area inside the item footprint, percent 0..100.
        processing_baseline: ``s2:processing_baseline`` (e.g. ``"04.00"``), else ``None``.
        footprint: Item geometry (GeoJSON, EPSG:4326).
        thumbnail_href: Preview image href (unsigned), else ``None``.
        item: The STAC Item as a dict (asset hrefs unsigned).
    """

    id: str
    collection: str
    datetime: dt.datetime
    platform: str | None
    mgrs_tile: str | None
    cloud_cover: float | None
    aoi_coverage: float
    processing_baseline: str | None
    footprint: dict[str, Any] = field(compare=False, hash=False, repr=False)
    thumbnail_href: str | None = None
    item: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def to_record(self) -> dict[str, Any]:
        """JSON-ready summary: id, datetime (ISO), collection, eo:cloud_cover, aoi_coverage."""
        return {
            "id": self.id,
            "datetime": self.datetime.isoformat().replace("+00:00", "Z"),
            "collection": self.collection,
            "eo:cloud_cover": self.cloud_cover,
            "aoi_coverage": round(self.aoi_coverage, 2),
            "platform": self.platform,
            "s2:mgrs_tile": self.mgrs_tile,
            "s2:processing_baseline": self.processing_baseline,
        }


class SearchResults(list[SceneSummary]):
    """A ``list[SceneSummary]`` (sorted by datetime) that also says what was left out.

    Attributes:
        skipped: Number of malformed items (no datetime or geometry) that were skipped.
        skipped_ids: Their ids (``"?"`` when an item had none).
    """

    def __init__(self, scenes: Iterable[SceneSummary] = (), skipped_ids: Iterable[str] = ()):
        super().__init__(scenes)
        self.skipped_ids: list[str] = list(skipped_ids)

    @property
    def skipped(self) -> int:
        """Number of malformed items skipped."""
        return len(self.skipped_ids)


# -- catalog access -------------------------------------------------------------------------------
def _retry(total: int) -> urllib3.util.retry.Retry:
    return urllib3.util.retry.Retry(
        total=total,
        connect=total,
        read=total,
        backoff_factor=0.3,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
    )


def _timeouts(timeout_s: float) -> tuple[float, float]:
    """(connect, read) time-outs: connecting never needs more than 5 s."""
    return (min(float(timeout_s), 5.0), float(timeout_s))


def open_catalog(stac_url: str, timeout_s: float = 20.0) -> pystac_client.Client:
    """Open a STAC API with bounded retries and time-outs.

    Args:
        stac_url: STAC API root, e.g. ``https://planetarycomputer.microsoft.com/api/stac/v1``.
        timeout_s: Read time-out per request, in seconds (connect time-out ≤ 5 s).

    Raises:
        CatalogError: the URL is malformed, unreachable, answers with an HTTP error or is not
            a STAC API.
    """
    parsed = urlparse(stac_url or "")
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise CatalogError(f"the STAC URL must be an http(s) URL, got {stac_url!r}")
    if not timeout_s or timeout_s <= 0:
        raise InvalidRequestError(f"timeout_s must be positive, got {timeout_s!r}")
    stac_io = StacApiIO(timeout=_timeouts(timeout_s), max_retries=_retry(CATALOG_RETRIES))
    try:
        client = pystac_client.Client.open(stac_url, stac_io=stac_io)
    except APIError as err:
        raise CatalogError(
            f"the STAC catalog {stac_url!r} cannot be reached or refused the request "
            f"({_short(err)}); check the URL and the network"
        ) from err
    except (pystac.STACError, ValueError, KeyError) as err:
        raise CatalogError(
            f"{stac_url!r} did not answer like a STAC API ({_short(err)}); check the URL"
        ) from err
    # Servers (pgstac, Planetary Computer) sort and filter but advertise newer URIs than
    # pystac-client 0.9 knows; declare them so it neither warns nor refuses.
    for name in ("SORT", "FILTER", "QUERY", "ITEM_SEARCH"):
        client.add_conforms_to(name)
    return client


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _parse_datetime(props: Mapping[str, Any]) -> dt.datetime | None:
    raw = props.get("datetime") or props.get("start_datetime")
    if not isinstance(raw, str):
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def aoi_coverage_percent(footprint: Mapping[str, Any], aoi: AOI) -> float:
    """Percent (0..100) of the AOI's geodesic area that lies inside ``footprint``.

    Areas are geodesic (WGS84 ellipsoid), so the share is the same as in any equal-area
    projection.
    """
    if aoi.area_km2 <= 0:
        return 0.0
    foot = shape(footprint)
    if not foot.is_valid:
        foot = shapely.make_valid(foot)
    inter = foot.intersection(aoi.shape)
    if inter.is_empty:
        return 0.0
    return float(min(100.0, geodesic_area_km2(inter) / aoi.area_km2 * 100.0))


def _thumbnail_href(assets: Mapping[str, Any]) -> str | None:
    for key in THUMBNAIL_ASSETS:
        asset = assets.get(key)
        if isinstance(asset, Mapping) and isinstance(asset.get("href"), str):
            return asset["href"]
    return None


def summarise_item(item: Mapping[str, Any], aoi: AOI) -> SceneSummary | None:
    """Turn one STAC Item dict into a :class:`SceneSummary`; ``None`` if it is malformed.

    Malformed means: no id, no parseable ``datetime`` (or ``start_datetime``), or no
    readable polygon geometry.
    """
    props = item.get("properties")
    if not isinstance(props, Mapping) or not isinstance(item.get("id"), str):
        return None
    when = _parse_datetime(props)
    geometry = item.get("geometry")
    if when is None or not isinstance(geometry, Mapping):
        return None
    try:
        coverage = aoi_coverage_percent(geometry, aoi)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError,
            shapely.errors.GEOSException):
        return None
    cloud = props.get("eo:cloud_cover")
    raw_assets = item.get("assets")
    assets: Mapping[str, Any] = raw_assets if isinstance(raw_assets, Mapping) else {}
    return SceneSummary(
        id=item["id"],
        collection=str(item.get("collection") or ""),
        datetime=when,
        platform=props.get("platform"),
        mgrs_tile=props.get("s2:mgrs_tile"),
        cloud_cover=float(cloud) if isinstance(cloud, int | float) else None,
        aoi_coverage=coverage,
        processing_baseline=props.get("s2:processing_baseline"),
        footprint=dict(geometry),
        thumbnail_href=_thumbnail_href(assets),
        item=dict(item),
    )


def search_scenes(
    request: SearchRequest,
    *,
    stac_url: str,
    timeout_s: float = 20.0,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> SearchResults:
    """Search the catalog for scenes over the AOI.

    Sends ``intersects`` (the AOI geometry), the day range, a CQL2 ``eo:cloud_cover`` filter
    (Sentinel-2 only) and ``sortby=-datetime`` so that ``limit`` keeps the most recent scenes;
    the result is then sorted by datetime ascending.

    Args:
        request: The validated search.
        stac_url: STAC API root.
        timeout_s: Time-out per HTTP request, in seconds.
        page_size: Items per page requested from the API (the API may cap it).

    Returns:
        :class:`SearchResults` (a ``list[SceneSummary]``); its ``skipped`` counts malformed
        items left out.

    Raises:
        CatalogError: the catalog is unreachable or answers with an error.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise InvalidRequestError(f"page_size must be a positive integer, got {page_size!r}")
    client = open_catalog(stac_url, timeout_s)
    search_kwargs: dict[str, Any] = {
        "collections": [request.collection.value],
        "intersects": request.aoi.geometry,
        "datetime": request.datetime_range,
        "max_items": request.limit,
        "limit": min(page_size, request.limit),
        "sortby": "-properties.datetime",
    }
    cloud = request.cloud_filter()
    if cloud is not None:
        search_kwargs["filter"] = cloud
        search_kwargs["filter_lang"] = "cql2-json"
    scenes: list[SceneSummary] = []
    skipped: list[str] = []
    try:
        search = client.search(**search_kwargs)
        for item in search.items_as_dicts():
            summary = summarise_item(item, request.aoi)
            if summary is None:
                skipped.append(str(item.get("id", "?")))
            else:
                scenes.append(summary)
    except APIError as err:
        raise CatalogError(
            f"the search on {stac_url!r} failed ({_short(err)}); check the URL, the network "
            "or try again later"
        ) from err
    except (pystac.STACError, ValueError, KeyError, TypeError) as err:
        raise CatalogError(
            f"the catalog {stac_url!r} returned an answer TerraLens cannot read "
            f"({_short(err)})"
        ) from err
    scenes.sort(key=lambda s: (s.datetime, s.id))
    return SearchResults(scenes, skipped)


def fetch_item(
    item_id: str, *, stac_url: str, collection: str | None = None, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Fetch one STAC Item by id (the CLI's ``--item``).

    Raises:
        SceneError: no item has that id (in ``collection``, when given).
        CatalogError: the catalog is unreachable or answers with an error.
    """
    client = open_catalog(stac_url, timeout_s)
    kwargs: dict[str, Any] = {"ids": [item_id], "max_items": 1}
    if collection:
        kwargs["collections"] = [collection]
    try:
        found = next(iter(client.search(**kwargs).items_as_dicts()), None)
    except APIError as err:
        raise CatalogError(f"fetching item {item_id!r} from {stac_url!r} failed "
                           f"({_short(err)})") from err
    if found is None:
        raise SceneError(f"no item {item_id!r} in the catalog {stac_url!r}"
                         + (f" (collection {collection!r})" if collection else "")
                         + "; check the id with `terralens search`")
    return dict(found)


# -- Planetary Computer signing -------------------------------------------------------------------
_TOKEN_LOCK = threading.Lock()


def _blob_container(href: str) -> tuple[str, str] | None:
    """(account, container) when ``href`` is an Azure blob URL that PC would sign."""
    from planetary_computer.sas import BLOB_STORAGE_DOMAIN
    from planetary_computer.utils import parse_blob_url

    parsed = urlparse(href.rstrip("/"))
    if not parsed.netloc.endswith(BLOB_STORAGE_DOMAIN):
        return None
    if parsed.netloc == "ai4edatasetspublicassets.blob.core.windows.net":
        return None
    try:
        return parse_blob_url(parsed)
    except ValueError:
        return None


def _token_url(account: str, container: str) -> str:
    from planetary_computer.settings import Settings as PcSettings

    return f"{PcSettings.get().sas_url}/{account}/{container}"


def ensure_sas_token(
    account: str,
    container: str,
    *,
    timeout_s: float = 10.0,
    retries: int = CATALOG_RETRIES,
    force: bool = False,
) -> Any:
    """Fetch (or reuse) a SAS token and put it in planetary_computer's token cache.

    ``planetary_computer.sign`` itself retries 10 times with no time-out; fetching the token
    here first, bounded, lets it sign from its cache without touching the network. The SAS
    endpoint is ``PC_SDK_SAS_URL`` (planetary_computer's settings); ``PC_SDK_SUBSCRIPTION_KEY``
    is sent when set. A token that arrives already expired is fetched once more.

    Returns:
        The ``planetary_computer.sas.SASToken``.

    Raises:
        AssetAccessError: the endpoint is unreachable or refuses, answers something that is not
            a token, or hands out expired tokens twice in a row.
    """
    from planetary_computer.sas import TOKEN_CACHE, SASToken
    from planetary_computer.settings import Settings as PcSettings

    url = _token_url(account, container)
    with _TOKEN_LOCK:
        cached = TOKEN_CACHE.get(url)
        if cached is not None and not force and cached.ttl() >= MIN_TOKEN_TTL_S:
            return cached
        key = PcSettings.get().subscription_key
        headers = {"Ocp-Apim-Subscription-Key": key} if key else {}
        token: Any = None
        for _attempt in range(2):
            with requests.Session() as session:
                adapter = requests.adapters.HTTPAdapter(max_retries=_retry(retries))
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                try:
                    response = session.get(url, headers=headers, timeout=_timeouts(timeout_s))
                    response.raise_for_status()
                    token = SASToken(**response.json())
                except requests.RequestException as err:
                    raise AssetAccessError(
                        f"could not get a Planetary Computer SAS token from {url!r} "
                        f"({_short(err)}); check the network, PC_SDK_SAS_URL or "
                        "PC_SDK_SUBSCRIPTION_KEY"
                    ) from err
                except (ValueError, TypeError) as err:
                    raise AssetAccessError(
                        f"the SAS endpoint {url!r} answered something that is not a token "
                        f"({_short(err)})"
                    ) from err
            if token.ttl() >= MIN_TOKEN_TTL_S:
                TOKEN_CACHE[url] = token
                return token
        raise AssetAccessError(
            f"the Planetary Computer SAS token for {account}/{container} from {url!r} has "
            f"expired (expiry {token.expiry.isoformat()!r}) even after re-signing; check the "
            "machine's clock and try again"
        )


def drop_sas_tokens() -> None:
    """Forget every cached SAS token so that the next signature fetches fresh ones."""
    from planetary_computer.sas import TOKEN_CACHE

    with _TOKEN_LOCK:
        TOKEN_CACHE.clear()


class HrefSigner:
    """Signs asset hrefs right before reading (odc-stac's ``patch_url``).

    On catalogs other than Planetary Computer it returns hrefs unchanged and never touches the
    network. :meth:`refresh` forces fresh tokens (after a 403 on read).

    Args:
        stac_url: The catalog the items came from.
        timeout_s: Time-out of a SAS-token request, in seconds.
        retries: Retries of a SAS-token request.
    """

    def __init__(self, stac_url: str, *, timeout_s: float = 10.0, retries: int = CATALOG_RETRIES):
        self.stac_url = stac_url
        self.timeout_s = timeout_s
        self.retries = retries

    @property
    def active(self) -> bool:
        """Whether this signer signs anything (the catalog is Planetary Computer)."""
        return is_planetary_computer(self.stac_url)

    def refresh(self) -> None:
        """Fetch new tokens on the next signature (used once after an access refusal)."""
        drop_sas_tokens()

    def __call__(self, href: str) -> str:
        """The signed href (unchanged when not on Planetary Computer or not a blob URL)."""
        if not self.active:
            return href
        container = _blob_container(href)
        if container is None:
            return href
        import planetary_computer

        ensure_sas_token(*container, timeout_s=self.timeout_s, retries=self.retries)
        try:
            return planetary_computer.sign(href)
        except requests.RequestException as err:  # pragma: no cover - cache makes this rare
            raise AssetAccessError(f"could not sign {href!r} ({_short(err)})") from err


def sign_item(
    item: Mapping[str, Any],
    stac_url: str,
    *,
    timeout_s: float = 10.0,
    retries: int = CATALOG_RETRIES,
) -> dict[str, Any]:
    """A copy of a STAC Item dict whose asset hrefs are signed for reading.

    Only Planetary Computer catalogs sign (``planetary_computer.sign`` with tokens fetched by
    :func:`ensure_sas_token`, bounded); for any other catalog the copy is returned unchanged.

    Raises:
        AssetAccessError: a SAS token cannot be obtained or has expired.
    """
    signed = copy.deepcopy(dict(item))
    if not is_planetary_computer(stac_url):
        return signed
    signer = HrefSigner(stac_url, timeout_s=timeout_s, retries=retries)
    for asset in (signed.get("assets") or {}).values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = signer(asset["href"])
    return signed
