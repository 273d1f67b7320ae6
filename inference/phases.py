"""Named, timed phases of a model build, told to a ``progress`` callback as each starts.

``progress`` is only ever called from the thread that owns the :class:`Phases` (the caller of
:func:`inference.build.build_terramind`): work that runs on helper threads is announced with
:meth:`Phases.announce` before it is handed over and its seconds are added with
:meth:`Phases.add` after, so a UI callback never runs on a thread it does not know.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

#: ``progress(message)`` as each phase of a model build starts.
PhaseFn = Callable[[str], None]


class Phases:
    """Times named phases, tells ``progress`` as each starts, logs each duration.

    Args:
        progress: Called with the phase's name as it starts (None: silent).
    """

    def __init__(self, progress: PhaseFn | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def announce(self, name: str) -> None:
        """Tell ``progress`` that phase ``name`` starts (its time is added by :meth:`add`)."""
        if self.progress is not None:
            self.progress(name)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to phase ``name`` (safe from any thread)."""
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        logger.info("%s: %.2f s", name, seconds)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Announce phase ``name`` and time the block as it."""
        self.announce(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)
