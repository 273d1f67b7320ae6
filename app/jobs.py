"""Runs as jobs: a queue per device, one worker thread per device, shared by every analyst.

The app's server process holds one :class:`JobRuntime` per run store (the UI caches it once
per process): pages :meth:`~JobRuntime.submit` a :class:`~app.tasks.JobSpec` and return at
once; the :class:`Worker` of the job's device runs queued jobs in order through
:func:`app.pipeline.execute`, recording progress in the :class:`~app.job_store.JobStore`
beside the run store. Navigation, reloads and closed tabs never stop a job.

* Identical requests are deduplicated at submission: the second gets the first's job (and so
  the same run); a request the run store already answers is done at once.
* On start, temporary folders of dead writers are swept and running jobs of dead processes are
  marked *interrupted*; queued jobs continue.
* :func:`run_sync` is the same path for the ``terralens`` command: it runs the job in the
  calling process (or waits for an identical one already running anywhere) and returns its
  outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.geolocation import GeolocationOutcome
from app.job_store import RUNNER_CLI, JobRecord, JobState, JobStore
from app.model_manager import ModelManager
from app.pipeline import Outcome, ProgressFn, execute, find_existing
from app.run_log import RunEnd, log_run_end
from app.runs import RunStore
from app.settings import Settings
from app.tasks import JobSpec
from inference.errors import RunCancelledError, TerraLensError
from inference.progress import Phase, Progress, Unit

logger = logging.getLogger("terralens.jobs")

#: Seconds a worker sleeps when its queue is empty (a submission wakes it at once).
IDLE_POLL_S = 1.0
#: Least seconds between two progress writes of one phase.
PROGRESS_EVERY_S = 0.25
#: Least seconds between two reads of a job's cancel flag.
CANCEL_EVERY_S = 0.25


class _JobCallbacks:
    """Progress writer and cancel check of one running job (throttled)."""

    def __init__(self, jobs: JobStore, job_id: int, echo: ProgressFn | None = None) -> None:
        self.jobs, self.job_id, self.echo = jobs, job_id, echo
        self._segment: tuple[str, str, int] | None = None
        self._message = ""
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancelled = False

    def progress(self, event: Progress) -> None:
        # A new phase, unit or total (the next file of a download) restarts the rate clock.
        segment = (event.phase.value, event.unit.value, event.total)
        now = time.monotonic()
        new_phase = segment != self._segment
        # Written at once: a new segment, its end, or a new step of a phase without counts
        # (the build steps of loading weights); else at most every PROGRESS_EVERY_S.
        if (new_phase or 0 < event.total <= event.done
                or (event.unit is Unit.NONE and event.message != self._message)
                or now - self._last_write >= PROGRESS_EVERY_S):
            self.jobs.progress(self.job_id, event, new_phase=new_phase)
            self._segment, self._last_write, self._message = segment, now, event.message
        if self.echo is not None:
            self.echo(event)

    def cancel(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_check >= CANCEL_EVERY_S:
            self._last_check = now
            self._cancelled = self.jobs.cancel_requested(self.job_id)
        return self._cancelled


def run_job(job: JobRecord, *, jobs: JobStore, settings: Settings, runs: RunStore,
            models: ModelManager, scene: Any = None, echo: ProgressFn | None = None,
            ) -> Outcome | None:
    """Execute a claimed job and record how it ended (never raises a TerraLensError).

    Returns:
        The outcome, or ``None`` when the job failed or was cancelled (see its record).
    """
    calls = _JobCallbacks(jobs, job.id, echo)
    started = time.monotonic()
    try:
        outcome = execute(job.spec, settings=settings, store=runs, models=models, scene=scene,
                          progress=calls.progress, cancel=calls.cancel)
    except RunCancelledError as err:
        jobs.finish(job.id, JobState.CANCELLED, error=str(err), error_kind=type(err).__name__)
        log_run_end(job, RunEnd.CANCELLED, time.monotonic() - started)
        return None
    except TerraLensError as err:
        jobs.finish(job.id, JobState.FAILED, error=str(err), error_kind=type(err).__name__)
        log_run_end(job, RunEnd.FAILED, time.monotonic() - started,
                    error_kind=type(err).__name__)
        return None
    except Exception as err:  # a bug: keep the worker alive, log the traceback
        logger.exception("job %d failed unexpectedly", job.id)
        jobs.finish(job.id, JobState.FAILED, error_kind=type(err).__name__,
                    error=f"The job failed unexpectedly ({type(err).__name__}: {err}); "
                          "the details are in the server log.")
        log_run_end(job, RunEnd.FAILED, time.monotonic() - started,
                    error_kind=type(err).__name__)
        return None
    except BaseException:
        jobs.finish(job.id, JobState.INTERRUPTED, error="interrupted")
        log_run_end(job, RunEnd.INTERRUPTED, time.monotonic() - started)
        raise
    jobs.finish(job.id, JobState.DONE, run_id=outcome.run.id if outcome.run else None,
                result=outcome.geolocation.to_json() if outcome.geolocation else None,
                reused=outcome.reused)
    log_run_end(job, RunEnd.REUSED if outcome.reused else RunEnd.FINISHED,
                time.monotonic() - started, run_id=outcome.run.id if outcome.run else None)
    return outcome


class Worker(threading.Thread):
    """Runs one device's queued jobs, oldest first, until stopped."""

    def __init__(self, runtime: JobRuntime, device: str) -> None:
        super().__init__(name=f"terralens-worker-{device}", daemon=True)
        self.runtime, self.device = runtime, device
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        rt = self.runtime
        while not self.stopping.is_set():
            try:
                job = rt.jobs.claim_next(self.device)
            except Exception:  # a locked or broken database: retry, keep the thread
                logger.exception("cannot read the job queue")
                job = None
            if job is None:
                self.wake.wait(IDLE_POLL_S)
                self.wake.clear()
                continue
            scene = rt.hints.pop(job.id, None)
            run_job(job, jobs=rt.jobs, settings=rt.settings, runs=rt.runs, models=rt.models,
                    scene=scene)
            for listener in list(rt.listeners):
                listener(job.id)


@dataclass
class JobRuntime:
    """The job machinery of one run store in this process.

    Attributes:
        settings: Where runs live, weights, device.
        models: The process's model manager.
        runs: The run store.
        jobs: Its job store.
        hints: Inputs already in memory, by job id (the page's loaded scene).
        listeners: Called with a job id when a worker finishes it (tests, logging).
    """

    settings: Settings
    models: ModelManager = field(default_factory=ModelManager)
    runs: RunStore = field(init=False)
    jobs: JobStore = field(init=False)
    hints: dict[int, Any] = field(default_factory=dict)
    listeners: list[Callable[[int], None]] = field(default_factory=list)
    _workers: dict[str, Worker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.runs = RunStore(self.settings.runs_dir)
        self.jobs = JobStore.beside(self.settings.runs_dir)

    def start(self) -> JobRuntime:
        """Sweep dead writers' folders, mark dead jobs interrupted, start the worker."""
        swept = self.runs.sweep()
        interrupted = self.jobs.recover()
        if swept or interrupted:
            logger.info("start: swept %s, interrupted jobs %s", swept, interrupted)
        self._worker(self.settings.device)
        return self

    def _worker(self, device: str) -> Worker:
        worker = self._workers.get(device)
        if worker is None or not worker.is_alive():
            worker = Worker(self, device)
            self._workers[device] = worker
            worker.start()
        return worker

    def submit(self, spec: JobSpec, *, session: str = "", scene: Any = None,
               estimate_s: float | None = None) -> JobRecord:
        """Queue a job (or answer it from the run store, or join an identical one).

        Args:
            spec: What to run.
            session: Who asks (shown in the queue).
            scene: The scene window already in memory, used instead of reading it again.
            estimate_s: Estimated seconds, for the ETA until progress says more.

        Returns:
            The job answering the request (possibly one submitted earlier by anyone).
        """
        key = spec.key(self.settings.weights)
        device = self.settings.device
        stored = find_existing(spec, settings=self.settings, store=self.runs)
        if stored is not None:
            reused = self.jobs.record_reused(spec, key=key, device=device, session=session,
                                             run_id=stored.id)
            log_run_end(reused, RunEnd.REUSED, 0.0, run_id=stored.id)
            return reused
        job, new = self.jobs.submit(spec, key=key, device=device, session=session,
                                    estimate_s=estimate_s)
        if new:
            if scene is not None:
                self.hints[job.id] = scene
            self._worker(device).wake.set()
        return job

    def rerun(self, job_id: int, *, session: str = "", scene: Any = None) -> JobRecord | None:
        """Submit an ended job's request again (the *Run again* button); ``scene`` as for
        :meth:`submit`."""
        old = self.jobs.get(job_id)
        if old is None:
            return None
        return self.submit(old.spec, session=session, scene=scene, estimate_s=old.estimate_s)

    def cancel(self, job_id: int) -> JobRecord | None:
        """Cancel a queued or running job."""
        job = self.jobs.request_cancel(job_id)
        if job is not None and job.state is JobState.CANCELLED:  # it was still queued
            self.hints.pop(job_id, None)
            log_run_end(job, RunEnd.CANCELLED, 0.0)
        return job

    def wait(self, job_id: int, timeout_s: float) -> JobRecord | None:
        """The job once it ended, or its record after ``timeout_s`` (tests, the CLI)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.jobs.get(job_id)
            if job is None or not job.state.active or time.monotonic() > deadline:
                return job
            time.sleep(0.1)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the workers (after their current job) and unload idle models."""
        for worker in self._workers.values():
            worker.stopping.set()
            worker.wake.set()
        for worker in self._workers.values():
            worker.join(timeout_s)
        self._workers.clear()
        self.models.clear()


def _outcome(job: JobRecord, runs: RunStore) -> Outcome:
    if job.run_id:
        return Outcome(run=runs.open(job.run_id), reused=job.reused)
    return Outcome(geolocation=GeolocationOutcome.from_json(job.result or "{}"))


def run_sync(spec: JobSpec, *, settings: Settings, models: ModelManager | None = None,
             progress: ProgressFn | None = None, poll_s: float = 0.5) -> Outcome:
    """Run a job now, in this process, through the job store (the CLI's path).

    An identical request already running elsewhere (another ``terralens`` call, the app's
    worker) is waited for and its outcome returned; one queued but not started is claimed and
    run here. A request the run store already answers returns at once.

    Raises:
        TerraLensError: the job failed (its message), or was cancelled.
    """
    runs = RunStore(settings.runs_dir)
    jobs = JobStore.beside(settings.runs_dir)
    runs.sweep()
    jobs.recover()
    models = models or ModelManager()
    key = spec.key(settings.weights)
    while True:
        stored = find_existing(spec, settings=settings, store=runs)
        if stored is not None:
            return Outcome(run=stored, reused=True)
        job, new = jobs.submit(spec, key=key, device=settings.device, runner=RUNNER_CLI)
        if not new and job.state is JobState.QUEUED:
            claimed = jobs.claim(job.id)
            if claimed is not None:
                job, new = claimed, True
        if new:
            outcome = run_job(job, jobs=jobs, settings=settings, runs=runs, models=models,
                              echo=progress)
            ended = jobs.get(job.id)
            if outcome is not None:
                return outcome
            raise _job_error(ended or job)
        if progress is not None:
            progress(Progress(Phase.WAITING, 0, 1,
                              f"waiting for identical job {job.id} already running"))
        while job.state.active:
            time.sleep(poll_s)
            job = jobs.get(job.id) or job
            jobs.recover()
        if job.state is JobState.DONE:
            return _outcome(job, runs)
        if job.state is JobState.FAILED:
            raise _job_error(job)
        # cancelled or interrupted elsewhere: try again here


def _job_error(job: JobRecord) -> TerraLensError:
    from inference import errors

    kind = getattr(errors, job.error_kind or "", None)
    cls = kind if isinstance(kind, type) and issubclass(kind, TerraLensError) else TerraLensError
    message = job.error or f"job {job.id} ended {job.state.value}"
    try:
        return cls(message)
    except TypeError:  # a subclass with another constructor
        return TerraLensError(message)
