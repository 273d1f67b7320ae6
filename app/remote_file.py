"""A remote file read with HTTP range requests, for GDAL (rasterio's ``opener``).

GDAL's own HTTP client follows redirects anywhere and retries on its own clock; reading a COG URL
through :class:`RemoteOpener` instead sends every request through :mod:`app.transport`: the
per-request time-out, the operation's :class:`~app.transport.Deadline` (checked before and
enforced during each request) and, unless the operator allows it, the private-address guard on
the first request and on every redirect. Bytes are fetched in aligned blocks and kept in a small
cache, so GDAL's many small header reads cost one request.

Failures are kept in :attr:`RemoteOpener.error` (GDAL turns a Python exception raised inside a
read into its own generic error), so the caller can raise the real one.
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from typing import Any

import requests

from app.transport import Deadline, short_error
from inference.errors import AssetAccessError, BlockedURLError, TerraLensError

#: Bytes per range request (and cache block).
BLOCK_SIZE = 256 * 1024
#: Blocks kept in memory per open file (16 MiB).
CACHE_BLOCKS = 64
#: Largest file read whole from a server that ignores range requests.
MAX_WHOLE_FILE_BYTES = 64 * 1024 * 1024

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class RemoteOpener:
    """rasterio ``opener`` serving exactly one URL through a bounded, guarded session.

    Args:
        url: The http(s) URL.
        session: A session from :func:`app.transport.bounded_session`.
        deadline: The read's overall deadline (and whether private addresses are refused).
        timeout_s: Per-request time-out in seconds.
    """

    def __init__(self, url: str, session: requests.Session, deadline: Deadline,
                 timeout_s: float) -> None:
        self.url = url
        self.session = session
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.error: TerraLensError | None = None
        self._file: RemoteFile | None = None

    def __call__(self, path: str, mode: str = "rb") -> RemoteFile:
        if path != self.url or "w" in mode or "a" in mode:
            raise FileNotFoundError(path)  # GDAL probing side-car files: there are none
        if self._file is None:
            self._file = RemoteFile(self)
        return RemoteFile(self, shared=self._file)

    def fail(self, err: TerraLensError) -> TerraLensError:
        """Remember the first failure and return it (to raise)."""
        if self.error is None:
            self.error = err
        return self.error


class RemoteFile(io.RawIOBase):
    """A seekable, read-only view of the opener's URL (blocks shared between views)."""

    def __init__(self, opener: RemoteOpener, shared: RemoteFile | None = None) -> None:
        super().__init__()
        self._opener = opener
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._size = -1
        if shared is not None:
            self._blocks = shared._blocks
            self._size = shared._size
            return
        self._fetch_block(0)

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        parts = []
        while self._pos < end:
            index = self._pos // BLOCK_SIZE
            block = self._fetch_block(index)
            start = self._pos - index * BLOCK_SIZE
            piece = block[start:start + end - self._pos]
            if not piece:
                break
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    # -- fetching -------------------------------------------------------------------------------
    def _fetch_block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        start = index * BLOCK_SIZE
        block = self._get(start, start + BLOCK_SIZE - 1)
        self._blocks[index] = block
        while len(self._blocks) > CACHE_BLOCKS:
            self._blocks.popitem(last=False)
        return block

    def _get(self, first: int, last: int) -> bytes:
        opener = self._opener
        deadline = opener.deadline
        if deadline.expired:
            raise opener.fail(AssetAccessError(f"cannot read the GeoTIFF: {deadline.message()}"))
        try:
            with deadline.activate():
                response = opener.session.get(
                    opener.url, headers={"Range": f"bytes={first}-{last}"}, stream=True,
                    timeout=deadline.request_timeouts(opener.timeout_s),
                )
                with response:
                    return self._body(response, first)
        except BlockedURLError as err:
            raise opener.fail(err) from err
        except requests.RequestException as err:
            if deadline.expired:
                raise opener.fail(AssetAccessError(
                    f"cannot read the GeoTIFF: {deadline.message()}")) from err
            raise opener.fail(AssetAccessError(
                f"cannot read the GeoTIFF ({short_error(err)}); check the URL and that the "
                "server is reachable from the TerraLens server")) from err

    def _body(self, response: requests.Response, first: int) -> bytes:
        opener = self._opener
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match and match.group(3) != "*":
                self._size = int(match.group(3))
            return bytes(response.content)
        if response.status_code == 200:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > MAX_WHOLE_FILE_BYTES:
                raise opener.fail(AssetAccessError(
                    f"the server does not answer range requests and the file is "
                    f"{declared / 2**20:,.0f} MiB, more than the {MAX_WHOLE_FILE_BYTES // 2**20} "
                    "MiB TerraLens reads whole: serve it from a server with range requests "
                    "(any object store or static web server)"))
            chunks, total = [], 0
            for chunk in response.iter_content(BLOCK_SIZE):
                total += len(chunk)
                if total > MAX_WHOLE_FILE_BYTES:
                    raise opener.fail(AssetAccessError(
                        "the server does not answer range requests and the file is larger "
                        f"than the {MAX_WHOLE_FILE_BYTES // 2**20} MiB TerraLens reads whole"))
                chunks.append(chunk)
            whole = b"".join(chunks)
            self._size = len(whole)
            for i in range(0, max(len(whole), 1), BLOCK_SIZE):
                self._blocks[i // BLOCK_SIZE] = whole[i:i + BLOCK_SIZE]
            return whole[first:first + BLOCK_SIZE]
        if response.status_code == 416:
            return b""
        raise opener.fail(AssetAccessError(
            f"the server answered HTTP {response.status_code} for {opener.url!r}; check the URL "
            "(and that the file is public)"))
