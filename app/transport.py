"""The HTTP transport shared by catalog search and asset signing: retries, time-outs, messages.

One retry policy and one (connect, read) time-out rule for every request TerraLens sends, so
that the catalog client and the SAS-token fetch fail the same, bounded way.
"""

from __future__ import annotations

import urllib3.util.retry

#: Retries for a failed catalog or SAS-token request (on top of the first try).
DEFAULT_RETRIES = 2


def retry_policy(total: int) -> urllib3.util.retry.Retry:
    """A bounded urllib3 retry policy: ``total`` retries with backoff on connection errors and
    on 429/5xx answers, for GET and POST."""
    return urllib3.util.retry.Retry(
        total=total,
        connect=total,
        read=total,
        backoff_factor=0.3,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
    )


def timeouts(timeout_s: float) -> tuple[float, float]:
    """(connect, read) time-outs in seconds: connecting never needs more than 5 s."""
    return (min(float(timeout_s), 5.0), float(timeout_s))


def short_error(err: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, cut to ``limit`` characters for a message."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
