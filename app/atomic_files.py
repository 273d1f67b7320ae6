"""Crash-safe folders: fsync, first-writer-wins publishing, and sweeping what dead writers left.

A writer builds a folder under a temporary name that carries its process id
(``.tmp-<name>-<pid>-<random>``, see :func:`temp_name`), fsyncs every file, then renames it into
place with :func:`publish`. A reader never sees a half-written folder; :func:`sweep` removes the
temporary and trash folders of writers whose process is gone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from inference.errors import RunStoreError

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
_WRITER_PID = re.compile(r"-(\d+)-[0-9a-f]{8}$")


def temp_name(prefix: str, name: str) -> str:
    """``<prefix><name>-<pid>-<random>``: a temporary or trash name this process owns."""
    return f"{prefix}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk, where the filesystem can."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync directories; the rename is still atomic
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's contents to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())



def publish(tmp: Path, final: Path, *, complete: str) -> bool:
    """Rename a finished folder into place, unless a complete folder already holds the name
    (first writer wins: the copy is dropped). A folder of that name without its ``complete``
    file (left by hand, or by an older version) is moved away first.

    Args:
        tmp: The finished folder, under a :func:`temp_name`.
        final: Where it goes.
        complete: The file whose presence makes a folder complete (e.g. ``item.json``).

    Returns:
        True when this copy was published.

    Raises:
        RunStoreError: the name keeps reappearing.
        OSError: the rename fails for another reason.
    """
    for _ in range(3):
        try:
            os.rename(tmp, final)
            fsync_dir(final.parent)
            return True
        except OSError:
            if not final.exists():
                raise
            if (final / complete).is_file():
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            trash = final.parent / temp_name(TRASH_PREFIX, final.name)
            try:
                os.rename(final, trash)
            except FileNotFoundError:
                continue  # another writer moved it first
            shutil.rmtree(trash, ignore_errors=True)
    raise RunStoreError(f"could not publish run {final.name!r}: the folder keeps reappearing")


def sweep(root: Path) -> list[str]:
    """Remove the temporary and trash entries of ``root`` whose writer process is gone.

    Names carry the writer's process id (``.tmp-<key>-<pid>-<random>``); an entry of a live
    process is left alone, as is one whose name carries no id.

    Returns:
        The names removed.
    """
    removed = []
    for path in root.iterdir():
        if not path.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            continue
        pid = _writer_pid(path.name)
        if pid is None or process_alive(pid):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path.name)
        log.info("swept %s left by process %d", path, pid)
    return removed


def _writer_pid(name: str) -> int | None:
    match = _WRITER_PID.search(name)
    return int(match.group(1)) if match else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
