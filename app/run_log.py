"""The server log's record of each run: one INFO line when a job ends.

Who (the session that asked), what (task, outputs, AOI area, model, scene), how long and how it
ended (finished, answered from the store, failed with the error's class, cancelled,
interrupted). Error messages are left out on purpose: they may quote URLs or paths with
credentials; the class names the failure, the job record keeps the analyst's message.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from app.job_store import JobRecord

logger = logging.getLogger("terralens.runlog")


class RunEnd(StrEnum):
    """How a job ended, as the log line says it."""

    FINISHED = "finished"
    REUSED = "reused"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


def run_line(job: JobRecord, end: RunEnd, seconds: float, *, error_kind: str | None = None,
             run_id: str | None = None) -> str:
    """The log line of a job that ended (pure, for tests and :func:`log_run_end`).

    Args:
        job: The job's record (its spec says what ran, its session who asked).
        end: How it ended.
        seconds: Wall-clock seconds it ran.
        error_kind: The error's class name (failed or cancelled jobs).
        run_id: The stored run (finished or reused jobs).
    """
    spec = job.spec
    outputs = ",".join(m.value for m in spec.outputs) or "-"
    area = f"{spec.aoi.area_km2:.2f}" if spec.aoi is not None else "-"
    parts = [
        f"run {end.value}", f"job={job.id}", f"session={job.session or 'cli'}",
        f"task={spec.task.value}", f"outputs={outputs}", f"aoi_km2={area}",
        f"model={spec.model_name!r}", f"scene={spec.scene_id or '-'!r}",
        f"device={job.device}", f"seconds={seconds:.1f}",
    ]
    if error_kind:
        parts.append(f"error={error_kind}")
    if run_id:
        parts.append(f"run_id={run_id}")
    return " ".join(parts)


def log_run_end(job: JobRecord, end: RunEnd, seconds: float, *, error_kind: str | None = None,
                run_id: str | None = None) -> None:
    """Write :func:`run_line` to the ``terralens.runlog`` logger at INFO."""
    logger.info("%s", run_line(job, end, seconds, error_kind=error_kind, run_id=run_id))
