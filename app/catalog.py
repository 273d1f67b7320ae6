"""STAC catalog search.

The flow is: a frozen, validated :class:`SearchRequest` → :func:`search_scenes` (pystac-client,
bounded retries and time-outs) → a sorted list of frozen :class:`SceneSummary`. Items are kept
unsigned.

Any STAC API works; assets are signed (:mod:`app.signing`) only on Planetary Computer. Offline,
every network step fails within a few seconds with a :class:`~inference.errors.CatalogError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlparse

import pystac
import pystac_client
import shapely
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import shape

from app.aoi import AOI, geodesic_area_km2
from app.transport import (
    DEFAULT_RETRIES,
    BoundedAdapter,
    Deadline,
    check_seconds,
    deadline_seconds,
    retry_policy,
    short_error,
    timeouts,
)
from inference.errors import CatalogError, InvalidRequestError, SceneError
from inference.modalities import Modality

#: Largest number of scenes one search may return.
MAX_LIMIT = 500
#: Items requested per page from the STAC API (``limit`` in the API's sense).
DEFAULT_PAGE_SIZE = 100
#: Asset keys that hold a small preview image, in order of preference.
THUMBNAIL_ASSETS: tuple[str, ...] = ("rendered_preview", "thumbnail", "preview")


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
def open_catalog(stac_url: str, timeout_s: float = 20.0) -> pystac_client.Client:
    """Open a STAC API with bounded retries and time-outs.

    Every request of the client (this one and the searches after it) times out after
    ``timeout_s`` and obeys the :class:`~app.transport.Deadline` active around it (see
    :func:`catalog_deadline`).

    Args:
        stac_url: STAC API root, e.g. ``https://planetarycomputer.microsoft.com/api/stac/v1``.
        timeout_s: Read time-out per request, in seconds (connect time-out ≤ 5 s).

    Raises:
        CatalogError: the URL is malformed, unreachable, answers with an HTTP error or is not
            a STAC API, or no answer came within the deadline.
        InvalidRequestError: ``timeout_s`` is not a finite positive number.
    """
    parsed = urlparse(stac_url or "")
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise CatalogError(f"the STAC URL must be an http(s) URL, got {stac_url!r}")
    timeout_s = check_seconds(timeout_s, "the catalog time-out")
    stac_io = StacApiIO(timeout=timeouts(timeout_s), max_retries=retry_policy(DEFAULT_RETRIES))
    adapter = BoundedAdapter(max_retries=retry_policy(DEFAULT_RETRIES))
    stac_io.session.mount("http://", adapter)
    stac_io.session.mount("https://", adapter)
    try:
        # Client.open hands its own ``timeout`` to the StacApiIO it is given (None unless
        # passed here), so the time-out is given again.
        client = pystac_client.Client.open(stac_url, stac_io=stac_io, timeout=timeouts(timeout_s))
    except APIError as err:
        raise _catalog_error(
            err, f"the STAC catalog {stac_url!r} cannot be reached or refused the request "
            f"({short_error(err)}); check the URL and the network") from err
    except (pystac.STACError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CatalogError(
            f"{stac_url!r} did not answer like a STAC API ({short_error(err)}); check the URL"
        ) from err
    # Servers (pgstac, Planetary Computer) sort and filter but advertise newer URIs than
    # pystac-client 0.9 knows; declare them so it neither warns nor refuses.
    for name in ("SORT", "FILTER", "QUERY", "ITEM_SEARCH"):
        client.add_conforms_to(name)
    return client


def catalog_deadline(stac_url: str, timeout_s: float) -> Deadline:
    """The overall deadline of one catalog operation (open, search, every page)."""
    timeout_s = check_seconds(timeout_s, "the catalog time-out")
    return Deadline(deadline_seconds(timeout_s), f"the STAC catalog {stac_url!r}")


def _catalog_error(err: BaseException, message: str) -> CatalogError:
    """``message`` as a :class:`CatalogError`, or the deadline's message when it passed."""
    from app.transport import active_deadline

    deadline = active_deadline()
    if deadline is not None and deadline.expired:
        return CatalogError(deadline.message())
    return CatalogError(message)


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
    with catalog_deadline(stac_url, timeout_s):
        return _search(request, stac_url, timeout_s, page_size)


def _search(request: SearchRequest, stac_url: str, timeout_s: float, page_size: int
            ) -> SearchResults:
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
            summary = summarise_item(item, request.aoi) if isinstance(item, Mapping) else None
            if summary is None:
                raw_id = item.get("id", "?") if isinstance(item, Mapping) else "?"
                skipped.append(str(raw_id))
            else:
                scenes.append(summary)
    except APIError as err:
        raise _catalog_error(
            err, f"the search on {stac_url!r} failed ({short_error(err)}); check the URL, the "
            "network or try again later") from err
    except (pystac.STACError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CatalogError(
            f"the catalog {stac_url!r} returned an answer TerraLens cannot read "
            f"({short_error(err)})"
        ) from err
    scenes.sort(key=lambda s: (s.datetime, s.id))
    return SearchResults(scenes, skipped)


def scene_href(item: Mapping[str, Any], stac_url: str) -> str | None:
    """Where a scene's STAC Item lives: its ``self`` link, else the API's item URL.

    Returns:
        An absolute URL, or ``None`` when the item has neither a ``self`` link nor a
        collection to build the URL from.
    """
    for link in item.get("links") or ():
        if isinstance(link, Mapping) and link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    collection, item_id = item.get("collection"), item.get("id")
    if not collection or not item_id:
        return None
    return f"{stac_url.rstrip('/')}/collections/{quote(str(collection), safe='')}/items/" \
        f"{quote(str(item_id), safe='')}"


def fetch_item(
    item_id: str, *, stac_url: str, collection: str | None = None, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Fetch one STAC Item by id (the CLI's ``--item``).

    Raises:
        SceneError: no item has that id (in ``collection``, when given).
        CatalogError: the catalog is unreachable or answers with an error.
    """
    with catalog_deadline(stac_url, timeout_s):
        client = open_catalog(stac_url, timeout_s)
        kwargs: dict[str, Any] = {"ids": [item_id], "max_items": 1}
        if collection:
            kwargs["collections"] = [collection]
        try:
            found = next(iter(client.search(**kwargs).items_as_dicts()), None)
        except APIError as err:
            raise _catalog_error(err, f"fetching item {item_id!r} from {stac_url!r} failed "
                                      f"({short_error(err)})") from err
        except (pystac.STACError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CatalogError(f"the catalog {stac_url!r} returned an answer TerraLens cannot "
                               f"read for item {item_id!r} ({short_error(err)})") from err
    if found is not None and not isinstance(found, Mapping):
        raise CatalogError(f"the catalog {stac_url!r} returned an item {item_id!r} that is not a "
                           f"JSON object: {found!r:.80}")
    if found is None:
        raise SceneError(f"no item {item_id!r} in the catalog {stac_url!r}"
                         + (f" (collection {collection!r})" if collection else "")
                         + "; check the id with `terralens search`")
    return dict(found)
