"""Job records, persisted beside the runs in an embedded SQLite database (WAL mode).

One row per job: what it runs (the :class:`~app.tasks.JobSpec` as JSON and its content key),
where (device), who asked (session), its state, progress, times, error and result. Every
process that shares a run store — the app's server and any ``terralens`` command — shares its
``.jobs.db``; SQLite's locking makes submission, claiming and finishing atomic across them.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``; a job whose process
died while running becomes ``interrupted`` at the next start (:meth:`JobStore.recover`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from app.atomic_files import process_alive
from app.tasks import JobSpec
from inference.errors import RunStoreError
from inference.progress import Phase, Progress

#: File name of the job database inside the run store's folder (hidden: not a run).
JOBS_FILE = ".jobs.db"
#: Who runs a job: the server's queue worker, or the ``terralens`` process that asked.
RUNNER_QUEUE = "queue"
RUNNER_CLI = "cli"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    spec TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    runner TEXT NOT NULL DEFAULT 'queue',
    state TEXT NOT NULL,
    owner_pid INTEGER,
    owner_host TEXT,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    phase_started REAL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    phase TEXT NOT NULL DEFAULT '',
    unit TEXT NOT NULL DEFAULT '',
    estimate_s REAL,
    cancel INTEGER NOT NULL DEFAULT 0,
    reused INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_kind TEXT,
    run_id TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, state);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (device, state, id);
"""


#: Columns added after the first release, with their definitions: an older ``.jobs.db`` gets
#: them on open (``ALTER TABLE ... ADD COLUMN``), its rows keep their values.
_ADDED_COLUMNS = {
    "phase": "TEXT NOT NULL DEFAULT ''",
    "unit": "TEXT NOT NULL DEFAULT ''",
}


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def active(self) -> bool:
        """Queued or running."""
        return self in (JobState.QUEUED, JobState.RUNNING)


ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)


@dataclass(frozen=True)
class JobRecord:
    """One job as stored (a snapshot; read again for news).

    Attributes:
        id: Job id (increasing with submission).
        key: Content key of the request (the run id for run tasks).
        spec: What it runs.
        label: One line describing it.
        device: The device whose queue it is in.
        session: The session that asked ("" for the CLI).
        runner: ``queue`` (the server's worker) or ``cli``.
        state: Its :class:`JobState`.
        submitted: Submission time (Unix seconds).
        started: When it started running.
        finished: When it ended.
        phase_started: When the current progress phase began.
        done: Progress of the current phase.
        total: Size of the current phase (0 when unknown).
        message: What it is doing.
        phase: The current :class:`~inference.progress.Phase` (``""`` before any progress).
        unit: What ``done``/``total`` count (:class:`~inference.progress.Unit`).
        estimate_s: Estimated run time at submission, seconds.
        cancel: Cancellation was asked for.
        reused: The run store already held the answer.
        error: The error shown to the analyst.
        error_kind: The error's class name.
        run_id: The stored run (run tasks, when done).
        result: JSON of a geolocation outcome (when done).
        owner_pid: The process running it.
    """

    id: int
    key: str
    spec: JobSpec
    label: str
    device: str
    session: str
    runner: str
    state: JobState
    submitted: float
    started: float | None
    finished: float | None
    phase_started: float | None
    done: int
    total: int
    message: str
    phase: str
    unit: str
    estimate_s: float | None
    cancel: bool
    reused: bool
    error: str | None
    error_kind: str | None
    run_id: str | None
    result: str | None
    owner_pid: int | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        """A record from a ``jobs`` row."""
        return cls(
            id=int(row["id"]), key=row["key"], spec=JobSpec.from_dict(json.loads(row["spec"])),
            label=row["label"], device=row["device"], session=row["session"],
            runner=row["runner"], state=JobState(row["state"]), submitted=row["submitted"],
            started=row["started"], finished=row["finished"],
            phase_started=row["phase_started"], done=int(row["done"]),
            total=int(row["total"]), message=row["message"], phase=row["phase"],
            unit=row["unit"], estimate_s=row["estimate_s"],
            cancel=bool(row["cancel"]), reused=bool(row["reused"]), error=row["error"],
            error_kind=row["error_kind"], run_id=row["run_id"], result=row["result"],
            owner_pid=row["owner_pid"],
        )

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left, ``None`` when unknown or not running.

        While the model runs (the last long phase), from the rate of the current phase once it
        moved; before that (loading weights, reading the scene), the larger of what the
        current phase's rate says and what is left of the estimate made at submission.
        """
        if self.state is not JobState.RUNNING:
            return None
        now = time.time() if now is None else now
        phase_left = None
        if self.total and 0 < self.done < self.total and self.phase_started:
            rate = (now - self.phase_started) / self.done
            phase_left = max(0.0, rate * (self.total - self.done))
        if phase_left is not None and self.phase == Phase.RUNNING.value:
            return phase_left
        overall_left = None
        if self.estimate_s is not None and self.started:
            overall_left = max(0.0, self.estimate_s - (now - self.started))
        known = [x for x in (phase_left, overall_left) if x is not None]
        return max(known) if known else None


def _migrate(con: sqlite3.Connection) -> None:
    """Add the columns an older job database lacks (their defaults fill existing rows)."""
    have = {row["name"] for row in con.execute("PRAGMA table_info(jobs)").fetchall()}
    for name, definition in _ADDED_COLUMNS.items():
        if name not in have:
            con.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")


class JobStore:
    """The job table of one run store (``<runs_dir>/.jobs.db``).

    Args:
        path: The database file (created when missing).

    Raises:
        RunStoreError: the database cannot be opened.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
                _migrate(con)
        except sqlite3.Error as err:
            raise RunStoreError(f"cannot open the job database {str(self.path)!r}: {err}") from err

    @classmethod
    def beside(cls, runs_dir: str | Path) -> JobStore:
        """The job store of a run store folder."""
        return cls(Path(runs_dir) / JOBS_FILE)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: one writer at a time, across processes)."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[JobRecord]:
        con = self._connect()
        try:
            return [JobRecord.from_row(r) for r in con.execute(sql, args).fetchall()]
        finally:
            con.close()

    # -- submission -----------------------------------------------------------------------------
    def submit(self, spec: JobSpec, *, key: str, device: str, session: str = "",
               runner: str = RUNNER_QUEUE, estimate_s: float | None = None,
               ) -> tuple[JobRecord, bool]:
        """Queue ``spec`` unless an identical request is queued or running already.

        With ``runner="cli"`` the job starts at once, owned by this process.

        Returns:
            (the job answering the request, whether it is new).
        """
        now = time.time()
        with self._write() as con:
            row = con.execute(
                "SELECT * FROM jobs WHERE key = ? AND state IN (?, ?) ORDER BY id LIMIT 1",
                (key, *ACTIVE)).fetchone()
            if row is not None:
                return JobRecord.from_row(row), False
            cli = runner == RUNNER_CLI
            cur = con.execute(
                "INSERT INTO jobs (key, task, spec, label, device, session, runner, state, "
                "owner_pid, owner_host, submitted, started, phase_started, estimate_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, spec.task.value, json.dumps(spec.to_dict()), spec.describe(), device,
                 session, runner, JobState.RUNNING.value if cli else JobState.QUEUED.value,
                 os.getpid() if cli else None, socket.gethostname() if cli else None, now,
                 now if cli else None, now if cli else None, estimate_s))
            job_id = int(cur.lastrowid or 0)
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row), True

    def record_reused(self, spec: JobSpec, *, key: str, device: str, session: str,
                      run_id: str) -> JobRecord:
        """A finished job answered from the run store (so the queue panel can say so)."""
        now = time.time()
        with self._write() as con:
            cur = con.execute(
                "INSERT INTO jobs (key, task, spec, label, device, session, state, submitted, "
                "started, finished, done, total, message, reused, run_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, 1, ?)",
                (key, spec.task.value, json.dumps(spec.to_dict()), spec.describe(), device,
                 session, JobState.DONE.value, now, now, now, "answered from the run store",
                 run_id))
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (cur.lastrowid,)).fetchone()
        return JobRecord.from_row(row)

    def claim_next(self, device: str) -> JobRecord | None:
        """Start the oldest queued job of ``device``'s queue, owned by this process."""
        now = time.time()
        with self._write() as con:
            row = con.execute(
                "SELECT id FROM jobs WHERE device = ? AND state = ? AND runner = ? "
                "ORDER BY id LIMIT 1", (device, JobState.QUEUED.value, RUNNER_QUEUE)).fetchone()
            if row is None:
                return None
            return self._start(con, int(row["id"]), now)

    def claim(self, job_id: int) -> JobRecord | None:
        """Start one queued job in this process (``None`` if it is no longer queued)."""
        with self._write() as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] != JobState.QUEUED.value:
                return None
            return self._start(con, job_id, time.time())

    @staticmethod
    def _start(con: sqlite3.Connection, job_id: int, now: float) -> JobRecord:
        con.execute(
            "UPDATE jobs SET state = ?, owner_pid = ?, owner_host = ?, started = ?, "
            "phase_started = ?, message = ? WHERE id = ?",
            (JobState.RUNNING.value, os.getpid(), socket.gethostname(), now, now, "starting",
             job_id))
        return JobRecord.from_row(con.execute("SELECT * FROM jobs WHERE id = ?",
                                              (job_id,)).fetchone())

    # -- while running --------------------------------------------------------------------------
    def progress(self, job_id: int, event: Progress, *, new_phase: bool) -> None:
        """Record progress (``new_phase`` restarts the phase clock used for the ETA)."""
        values = (event.done, event.total, event.message, event.phase.value, event.unit.value)
        with self._write() as con:
            if new_phase:
                con.execute("UPDATE jobs SET done = ?, total = ?, message = ?, phase = ?, "
                            "unit = ?, phase_started = ? WHERE id = ?",
                            (*values, time.time(), job_id))
            else:
                con.execute("UPDATE jobs SET done = ?, total = ?, message = ?, phase = ?, "
                            "unit = ? WHERE id = ?", (*values, job_id))

    def finish(self, job_id: int, state: JobState, *, run_id: str | None = None,
               result: str | None = None, error: str | None = None,
               error_kind: str | None = None, reused: bool = False) -> None:
        """Record the end of a job."""
        with self._write() as con:
            con.execute(
                "UPDATE jobs SET state = ?, finished = ?, run_id = ?, result = ?, error = ?, "
                "error_kind = ?, reused = ? WHERE id = ?",
                (state.value, time.time(), run_id, result, error, error_kind, int(reused),
                 job_id))

    def request_cancel(self, job_id: int) -> JobRecord | None:
        """Cancel a job: a queued one at once, a running one at its next check."""
        with self._write() as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["state"] == JobState.QUEUED.value:
                con.execute("UPDATE jobs SET state = ?, finished = ?, cancel = 1, message = ? "
                            "WHERE id = ?", (JobState.CANCELLED.value, time.time(),
                                             "cancelled before it started", job_id))
            elif row["state"] == JobState.RUNNING.value:
                con.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def cancel_requested(self, job_id: int) -> bool:
        """Whether cancellation was asked for."""
        con = self._connect()
        try:
            row = con.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        finally:
            con.close()
        return bool(row and row["cancel"])

    def recover(self) -> list[int]:
        """Mark running jobs of dead processes (on this machine) *interrupted*.

        Returns:
            The ids marked.
        """
        host = socket.gethostname()
        marked = []
        with self._write() as con:
            rows = con.execute("SELECT id, owner_pid, owner_host FROM jobs WHERE state = ?",
                               (JobState.RUNNING.value,)).fetchall()
            for row in rows:
                pid, owner_host = row["owner_pid"], row["owner_host"]
                if owner_host not in (None, host):
                    continue
                if pid is not None and process_alive(int(pid)):
                    continue
                con.execute("UPDATE jobs SET state = ?, finished = ?, message = ? WHERE id = ?",
                            (JobState.INTERRUPTED.value, time.time(),
                             "interrupted: the process running it stopped", row["id"]))
                marked.append(int(row["id"]))
        return marked

    # -- reading --------------------------------------------------------------------------------
    def get(self, job_id: int) -> JobRecord | None:
        """One job, or ``None``."""
        found = self._read("SELECT * FROM jobs WHERE id = ?", (int(job_id),))
        return found[0] if found else None

    def active(self, device: str | None = None) -> list[JobRecord]:
        """Running then queued jobs, in queue order (of one device, or all)."""
        sql = "SELECT * FROM jobs WHERE state IN (?, ?)"
        args: tuple[Any, ...] = ACTIVE
        if device is not None:
            sql += " AND device = ?"
            args = (*args, device)
        jobs = self._read(sql + " ORDER BY id", args)
        return sorted(jobs, key=lambda j: (j.state is not JobState.RUNNING, j.id))

    def recent(self, limit: int = 20) -> list[JobRecord]:
        """The newest jobs, newest first."""
        return self._read("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (int(limit),))

    def latest_for(self, key: str) -> JobRecord | None:
        """The newest job for a content key."""
        found = self._read("SELECT * FROM jobs WHERE key = ? ORDER BY id DESC LIMIT 1", (key,))
        return found[0] if found else None

    def position(self, job: JobRecord) -> int:
        """1-based place of a queued job in its device's queue (0 if not queued); a running
        job ahead counts as a place."""
        if job.state is not JobState.QUEUED:
            return 0
        ahead = [j for j in self.active(job.device) if j.id < job.id or
                 j.state is JobState.RUNNING]
        return len(ahead) + 1
