"""Planetary Computer asset signing: SAS tokens fetched bounded, hrefs signed right before reading.

Items are kept unsigned; assets are signed right before they are read (:func:`sign_item`,
:class:`HrefSigner`), because Planetary Computer SAS tokens expire after ~45 minutes. Any other
catalog's hrefs pass unchanged with no network call.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import requests

from app.transport import (
    DEFAULT_RETRIES,
    Deadline,
    bounded_session,
    check_seconds,
    deadline_seconds,
    short_error,
)
from inference.errors import AssetAccessError

#: SAS tokens with less time left than this are fetched again before use (seconds).
MIN_TOKEN_TTL_S = 120.0


def is_planetary_computer(stac_url: str) -> bool:
    """Whether ``stac_url`` is Planetary Computer, whose assets need SAS signing.

    The same rule as :attr:`app.settings.Settings.is_planetary_computer`.
    """
    return "planetarycomputer.microsoft.com" in stac_url


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
    subscription_key: str | None = None,
    timeout_s: float = 10.0,
    retries: int = DEFAULT_RETRIES,
    force: bool = False,
) -> Any:
    """Fetch (or reuse) a SAS token and put it in planetary_computer's token cache.

    ``planetary_computer.sign`` itself retries 10 times with no time-out; fetching the token
    here first, bounded, lets it sign from its cache without touching the network. The SAS
    endpoint is ``PC_SDK_SAS_URL`` (planetary_computer's settings); ``subscription_key`` (from
    :class:`app.settings.Settings`, i.e. ``PC_SDK_SUBSCRIPTION_KEY`` or the file named by
    ``PC_SDK_SUBSCRIPTION_KEY_FILE``) is sent as ``Ocp-Apim-Subscription-Key`` when given. Each
    request times out after ``timeout_s``; the whole fetch (retries and the re-fetch of an
    expired token included) gives up after :func:`~app.transport.deadline_seconds`. A token that
    arrives already expired is fetched once more.

    Returns:
        The ``planetary_computer.sas.SASToken``.

    Raises:
        AssetAccessError: the endpoint is unreachable or refuses, answers something that is not
            a token, does not answer within the deadline, or hands out expired tokens twice in
            a row.
    """
    from planetary_computer.sas import TOKEN_CACHE, SASToken

    timeout_s = check_seconds(timeout_s, "the SAS-token time-out")
    url = _token_url(account, container)
    with _TOKEN_LOCK:
        cached = TOKEN_CACHE.get(url)
        if cached is not None and not force and cached.ttl() >= MIN_TOKEN_TTL_S:
            return cached
        headers = {"Ocp-Apim-Subscription-Key": subscription_key} if subscription_key else {}
        token: Any = None
        deadline = Deadline(deadline_seconds(timeout_s), f"the SAS endpoint {url!r}")
        with deadline, bounded_session(retries) as session:
            for _attempt in range(2):
                try:
                    response = session.get(url, headers=headers,
                                           timeout=deadline.request_timeouts(timeout_s))
                    response.raise_for_status()
                    token = SASToken(**response.json())
                except requests.RequestException as err:
                    if deadline.expired:
                        raise AssetAccessError(
                            f"could not get a Planetary Computer SAS token: {deadline.message()}"
                        ) from err
                    raise AssetAccessError(
                        f"could not get a Planetary Computer SAS token from {url!r} "
                        f"({short_error(err)}); check the network, PC_SDK_SAS_URL or "
                        "PC_SDK_SUBSCRIPTION_KEY / PC_SDK_SUBSCRIPTION_KEY_FILE"
                    ) from err
                except (ValueError, TypeError) as err:
                    raise AssetAccessError(
                        f"the SAS endpoint {url!r} answered something that is not a token "
                        f"({short_error(err)})"
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

    The subscription key is kept out of :func:`repr` (and so out of logs and pages).

    Args:
        stac_url: The catalog the items came from.
        subscription_key: The Planetary Computer key (``Settings.pc_subscription_key``).
        timeout_s: Time-out of a SAS-token request, in seconds.
        retries: Retries of a SAS-token request.
    """

    def __init__(self, stac_url: str, *, subscription_key: str | None = None,
                 timeout_s: float = 10.0, retries: int = DEFAULT_RETRIES):
        self.stac_url = stac_url
        self._subscription_key = subscription_key
        self.timeout_s = timeout_s
        self.retries = retries

    def __repr__(self) -> str:
        key = "set" if self._subscription_key else "none"
        return f"HrefSigner({self.stac_url!r}, subscription_key=<{key}>)"

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

        ensure_sas_token(*container, subscription_key=self._subscription_key,
                         timeout_s=self.timeout_s, retries=self.retries)
        try:
            return planetary_computer.sign(href)
        except requests.RequestException as err:  # pragma: no cover - cache makes this rare
            raise AssetAccessError(f"could not sign {href!r} ({short_error(err)})") from err


def sign_item(
    item: Mapping[str, Any],
    stac_url: str,
    *,
    subscription_key: str | None = None,
    timeout_s: float = 10.0,
    retries: int = DEFAULT_RETRIES,
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
    signer = HrefSigner(stac_url, subscription_key=subscription_key, timeout_s=timeout_s,
                        retries=retries)
    for asset in (signed.get("assets") or {}).values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = signer(asset["href"])
    return signed
