"""What the server process keeps in memory, and the bounds on it.

* :class:`BytesLRU` — a thread-safe least-recently-used cache bounded by the bytes of what it
  holds (and by a count): the Layers page keeps each opened run's rasters, its rendered PNGs
  and statistics in one (``TERRALENS_LAYER_CACHE_MB``), shared by every session.
* :func:`nbytes` — the memory an array, a dict of arrays or a PNG holds, for those bounds.
* :func:`keep_newest` — the newest entries of a dict of arrays that fit a byte budget (the
  layers an analyst added in one session, ``TERRALENS_SESSION_LAYERS_MB``).
* :func:`limit_arenas` and :func:`trim_heap` — glibc's allocator keeps freed memory in
  per-thread arenas and at the top of its heaps; a Streamlit server runs many threads (one
  per session script run, tile requests, the job worker), so after a run the process keeps
  hundreds of MB it no longer uses. Capping the arenas (``TERRALENS_MALLOC_ARENAS``) and
  trimming after each job and model unload return it to the system. Both do nothing where
  the C library is not glibc.

Nothing here imports Streamlit or torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

V = TypeVar("V")

#: ``mallopt`` parameter number of glibc's ``M_ARENA_MAX``.
_M_ARENA_MAX = -8
_LIBC: list[Any] = []


def _libc() -> Any:
    """glibc loaded through ctypes, or None elsewhere (musl, macOS)."""
    if not _LIBC:
        lib: Any = None
        name = ctypes.util.find_library("c")
        try:
            candidate = ctypes.CDLL(name or "libc.so.6")
            if hasattr(candidate, "malloc_trim") and hasattr(candidate, "mallopt"):
                lib = candidate
        except OSError:
            lib = None
        _LIBC.append(lib)
    return _LIBC[0]


def trim_heap() -> bool:
    """Return the allocator's free memory to the system (glibc ``malloc_trim(0)``).

    Returns:
        True when memory was released, False when none was or the C library is not glibc.
    """
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.malloc_trim(0))


def limit_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for the rest of the process (``M_ARENA_MAX``).

    Args:
        arenas: At least 1; each thread allocating at once beyond that shares an arena.

    Returns:
        True when the cap was set, False where the C library is not glibc.
    """
    lib = _libc()
    if lib is None:
        return False
    return bool(lib.mallopt(_M_ARENA_MAX, max(1, int(arenas))))


def rss_mb() -> float:
    """This process's resident memory in MB (``VmRSS``; NaN where ``/proc`` is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def nbytes(value: Any) -> int:
    """Bytes held by ``value``: an array (``.nbytes``), bytes, a ``png`` holder, or a mapping
    or sequence of those (summed); other objects count as 1 KB."""
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    png = getattr(value, "png", None)
    if isinstance(png, bytes):
        return len(png)
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nbytes(v) for v in value)
    return 1024


def keep_newest(items: Mapping[str, Any], max_bytes: int) -> tuple[dict[str, Any], list[str]]:
    """The newest entries of ``items`` (insertion order: oldest first) within ``max_bytes``.

    The newest entry is always kept, even alone over the budget (it was just asked for).

    Returns:
        (kept entries in their order, names of the dropped ones oldest first).
    """
    names = list(items)
    kept: list[str] = []
    total = 0
    for name in reversed(names):
        size = nbytes(items[name])
        if kept and total + size > max_bytes:
            break
        kept.append(name)
        total += size
    dropped = [n for n in names if n not in kept]
    return {n: items[n] for n in names if n in kept}, dropped


class BytesLRU(Generic[V]):
    """A thread-safe least-recently-used cache bounded by bytes and by entries.

    Args:
        max_bytes: Most bytes (:func:`nbytes` of the values) held at once; a value larger
            than this alone is computed and returned but not kept.
        max_entries: Most entries held at once.
    """

    def __init__(self, max_bytes: int, *, max_entries: int = 1024) -> None:
        self.max_bytes = int(max_bytes)
        self.max_entries = max(1, int(max_entries))
        self.bytes = 0
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        #: Values computed so far (misses).
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        """The value under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            self._items.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: V) -> V:
        """Keep ``value`` under ``key``, evicting the least recently used beyond the bounds."""
        size = nbytes(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size <= self.max_bytes:
                self._items[key] = (value, size)
                self.bytes += size
            while self._items and (self.bytes > self.max_bytes
                                   or len(self._items) > self.max_entries):
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped
        return value

    def get_or_create(self, key: Hashable, create: Callable[[], V]) -> V:
        """The cached value under ``key``, else ``create()`` kept (within the bounds)."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            self.misses += 1
        return self.put(key, create())

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items
