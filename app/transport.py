"""The HTTP transport shared by catalog search, asset signing and COG URLs: retries, time-outs,
deadlines, the private-address guard, messages.

One retry policy and one (connect, read) time-out rule for every request TerraLens sends, so
that the catalog client, the SAS-token fetch and a COG URL fail the same, bounded way. On top of
the per-request time-out, each operation (a search with all its pages, a token fetch, a COG
window read) runs under a :class:`Deadline`: when it passes, the sockets it opened are shut,
retries stop and the caller gets a message that names the limit. A server that accepts the
connection and never answers, or trickles one byte a second, therefore cannot hold a page or the
CLI longer than the deadline.

A :class:`Deadline` made with ``block_private=True`` also refuses to connect to private,
loopback, link-local, reserved and cloud-metadata addresses: each host name is resolved first
and every address checked, then the connected peer is checked again (a name that resolves
differently the second time gains nothing), on the first request and on every redirect.

Requests pick their deadline up from the context (:meth:`Deadline.activate`), through the
connection classes that :class:`BoundedAdapter` installs.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util.retry

from inference.errors import BlockedURLError, InvalidRequestError

#: Retries for a failed catalog, SAS-token or COG-URL request (on top of the first try).
DEFAULT_RETRIES = 2
#: An operation's overall deadline is this many per-request time-outs (retries and pages
#: included).
DEADLINE_FACTOR = 3.0
#: Connecting never needs more than this many seconds.
MAX_CONNECT_TIMEOUT_S = 5.0
#: What every refused address gets: one message, whatever the address, the port or the cause.
BLOCKED_MESSAGE = (
    "TerraLens does not fetch URLs that lead to private, loopback, link-local or cloud-metadata "
    "addresses; give a public http(s) URL (the operator can allow internal servers with "
    "TERRALENS_ALLOW_PRIVATE_URLS=1)"
)

_ACTIVE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "terralens_deadline", default=None
)


def check_seconds(value: Any, name: str) -> float:
    """``value`` as a finite, positive number of seconds.

    Raises:
        InvalidRequestError: not a number, not finite (``inf``, ``nan``) or not positive.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequestError(
            f"{name} must be a finite, positive number of seconds, got {value!r}"
        )
    return float(value)


def retry_policy(total: int, deadline: Deadline | None = None) -> urllib3.util.retry.Retry:
    """A bounded urllib3 retry policy: ``total`` retries with backoff on connection errors and
    on 429/5xx answers, for GET and POST; none once ``deadline`` (when given) has passed."""
    return DeadlineRetry(
        total=total,
        connect=total,
        read=total,
        backoff_factor=0.3,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        raise_on_status=False,
        deadline=deadline,
    )


def timeouts(timeout_s: float) -> tuple[float, float]:
    """(connect, read) time-outs in seconds: connecting never needs more than 5 s."""
    return (min(float(timeout_s), MAX_CONNECT_TIMEOUT_S), float(timeout_s))


def deadline_seconds(timeout_s: float) -> float:
    """The overall deadline of an operation whose requests each time out after ``timeout_s``."""
    return DEADLINE_FACTOR * float(timeout_s)


def short_error(err: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, cut to ``limit`` characters for a message."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable (not private, loopback, link-local, reserved,
    multicast, shared or a cloud-metadata address); IPv4-mapped IPv6 is judged as IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


class Deadline:
    """An overall time limit for one operation, and whether it may reach private addresses.

    Use it as a context manager around the operation: a timer shuts every socket opened under
    it when the time is up, so a blocked read returns at once. :meth:`activate` makes it the
    deadline of the requests sent from the current thread (``with deadline:`` does that too).

    Args:
        seconds: The limit, finite and positive.
        what: The operation, for messages (e.g. ``"the catalog search"``).
        block_private: Refuse connections to non-public addresses (:data:`BLOCKED_MESSAGE`).

    Raises:
        InvalidRequestError: ``seconds`` is not a finite positive number.
    """

    def __init__(self, seconds: float, what: str, *, block_private: bool = False) -> None:
        self.seconds = check_seconds(seconds, "the deadline")
        self.what = what
        self.block_private = block_private
        self._end = time.monotonic() + self.seconds
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._fired = False
        self._timer: threading.Timer | None = None
        self._tokens: list[contextvars.Token[Deadline | None]] = []

    def remaining(self) -> float:
        """Seconds left (0 when passed)."""
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._fired or time.monotonic() >= self._end

    def message(self) -> str:
        """What the analyst reads when the deadline passed."""
        return (f"{self.what} got no complete answer within {self.seconds:g} s (the overall "
                "deadline); the server is too slow or does not answer: try again later")

    def request_timeouts(self, timeout_s: float) -> tuple[float, float]:
        """(connect, read) time-outs of one request: ``timeouts(timeout_s)``, capped by what is
        left of the deadline."""
        left = max(self.remaining(), 0.05)
        connect, read = timeouts(timeout_s)
        return (min(connect, left), min(read, left))

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` when the deadline passes (at once if it already has)."""
        with self._lock:
            if not self._fired:
                self._socks.append(sock)
                return
        _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            socks, self._socks = self._socks, []
        for sock in socks:
            _shut(sock)

    @contextlib.contextmanager
    def activate(self) -> Iterator[Deadline]:
        """Make this the deadline of requests sent from the current thread, for a block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def __enter__(self) -> Deadline:
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.remaining(), self._fire)
                self._timer.daemon = True
                self._timer.start()
        self._tokens.append(_ACTIVE.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.reset(self._tokens.pop())
        if not self._tokens:
            if self._timer is not None:
                self._timer.cancel()
            with self._lock:
                self._socks.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def active_deadline() -> Deadline | None:
    """The deadline of the current context, if any."""
    return _ACTIVE.get()


def _checked_new_conn(conn: urllib3.connection.HTTPConnection, make: Any) -> socket.socket:
    deadline = _ACTIVE.get()
    if deadline is not None and deadline.expired:
        raise urllib3.exceptions.ConnectTimeoutError(conn, deadline.message())
    if deadline is not None and deadline.block_private:
        try:
            infos = socket.getaddrinfo(conn._dns_host, conn.port, type=socket.SOCK_STREAM)
        except OSError:
            infos = []
        if any(not is_public_address(str(info[4][0])) for info in infos):
            raise BlockedURLError(BLOCKED_MESSAGE)
    sock: socket.socket = make()
    if deadline is not None:
        if deadline.block_private:
            peer = sock.getpeername()[0]
            if not is_public_address(str(peer)):
                sock.close()
                raise BlockedURLError(BLOCKED_MESSAGE)
        deadline.watch(sock)
    return sock


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _checked_new_conn(self, super()._new_conn)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _checked_new_conn(self, super()._new_conn)


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineRetry(urllib3.util.retry.Retry):
    """urllib3's :class:`Retry` that also counts as exhausted once its deadline has passed."""

    def __init__(self, *args: Any, deadline: Deadline | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def new(self, **kw: Any) -> DeadlineRetry:
        retry = super().new(**kw)
        retry.deadline = self.deadline  # type: ignore[attr-defined]
        return retry  # type: ignore[return-value]

    def is_exhausted(self) -> bool:
        deadline = self.deadline or _ACTIVE.get()
        return super().is_exhausted() or (deadline is not None and deadline.expired)


class BoundedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections obey the context's :class:`Deadline`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def bounded_session(retries: int = DEFAULT_RETRIES, *, trust_env: bool = True
                    ) -> requests.Session:
    """A requests session with the retry policy and :class:`BoundedAdapter` on http(s).

    Args:
        retries: Retries per request.
        trust_env: Honour proxy variables and ``.netrc`` (``False`` for analyst-given URLs, so
            that a proxy cannot stand in for the address the guard checked).
    """
    session = requests.Session()
    session.trust_env = trust_env
    adapter = BoundedAdapter(max_retries=retry_policy(retries))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
