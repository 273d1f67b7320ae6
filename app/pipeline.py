"""One :func:`execute` for every task: condition → model (from the manager) → result.

Generation, zero-shot water and fine-tuned TiM jobs read the scene window, run the model and
publish a run in the run store (or return the stored run answering the same request at once).
Geolocation jobs read their condition (the scene, a run's LULC, or a land-cover prompt), sample
coordinates and return a :class:`~app.geolocation.GeolocationOutcome`. Progress is reported as
:class:`~inference.progress.Progress` events, phase by phase: reading the scene (then the
estimate), loading weights (each build step; bytes while downloading), each chip batch and
diffusion step (or sample batch), writing. Each finished run refines the throughput store
(:mod:`inference.throughput`) that the estimates come from.

Nothing here imports Streamlit; the job workers (:mod:`app.jobs`) and the CLI call it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xarray as xr

from app.catalog import scene_href
from app.exports import segmentation_files
from app.geolocation import GeolocationOutcome, centre_lonlat
from app.memory import trim_heap
from app.model_manager import GENERATION, GEOLOCATION, TIM, ModelKey, ModelManager
from app.run_request import RunRequest
from app.runs import RunStore
from app.scenes import aoi_mask, load_scene
from app.settings import Settings
from app.stored_run import Run
from app.tasks import Condition, JobSpec, Task
from inference.devices import DEVICE_LOCK
from inference.errors import CheckpointError, InvalidRequestError, SceneError
from inference.executors import executor_from_env
from inference.modalities import Modality
from inference.progress import Phase, Progress, Unit, format_bytes, format_seconds
from inference.throughput import (
    Estimate,
    ThroughputStore,
    WorkKey,
    device_id,
    estimate_run,
    model_id,
)

#: progress(event) as the pages, the job table and the CLI show it.
ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]

#: Phase names (the first words of progress messages); see :class:`inference.progress.Phase`.
PHASE_LOADING = Phase.LOADING.value
PHASE_READING = Phase.READING.value
PHASE_RUNNING = "chip batch"
PHASE_SAMPLING = Phase.SAMPLING.value
PHASE_WRITING = Phase.WRITING.value
#: Chip side the run tasks use (the estimates' and throughput store's chip).
CHIP = 224


@dataclass(frozen=True)
class Outcome:
    """What a job produced: a stored run, or a geolocation.

    Attributes:
        run: The stored run (run tasks).
        geolocation: The samples (geolocation).
        reused: True when the run store already held the answer.
    """

    run: Run | None = None
    geolocation: GeolocationOutcome | None = None
    reused: bool = False


def run_request(spec: JobSpec, settings: Settings) -> RunRequest:
    """The run store's request (canonical content key) for ``spec`` under ``settings``."""
    return RunRequest(scene_id=spec.scene_id, aoi=spec.aoi, task=spec.task.value,
                      params=spec.params(), model=spec.model_name, weights=settings.weights)


def find_existing(spec: JobSpec, *, settings: Settings, store: RunStore) -> Run | None:
    """The stored run answering ``spec``, if one exists (always ``None`` for geolocation)."""
    if not spec.info.stores_run:
        return None
    return store.find(run_request(spec, settings))


def model_key(spec: JobSpec, settings: Settings) -> ModelKey:
    """The model a job needs (timesteps are not part of it: they are per call)."""
    return model_key_for(spec.task, size=spec.size.value, outputs=spec.outputs,
                         checkpoint=spec.checkpoint, settings=settings)


def model_key_for(task: Task, *, size: str, outputs: tuple[Modality, ...],
                  checkpoint: str | None, settings: Settings) -> ModelKey:
    """:func:`model_key` from a job's parts (the Run page asks before there is a job)."""
    if task is Task.TIM:
        return ModelKey(TIM, checkpoint=str(checkpoint), weights=settings.weights,
                        device=settings.device)
    if task is Task.GEOLOCATE:
        return ModelKey(GEOLOCATION, size=size, weights=settings.weights,
                        device=settings.device)
    if task is not Task.GENERATE:  # water: the LULC generation model
        outputs = (Modality.LULC,)
    return ModelKey(GENERATION, size=size, outputs=tuple(m.value for m in outputs),
                    weights=settings.weights, device=settings.device)


class _Reporter:
    """Turns the inference callbacks into :class:`Progress` events (and times the run)."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        #: Chips of the run (from the chip callbacks).
        self.chips_total = 0
        #: When the model was in hand (monotonic seconds), and whether this job loaded it.
        self.run_started: float | None = None
        self.loaded_model = False
        #: The device the model runs on (``cpu``, ``cuda:0``...).
        self.device = "cpu"

    def __call__(self, phase: Phase, done: int, total: int, message: str,
                 unit: Unit = Unit.NONE) -> None:
        if self.progress is not None:
            self.progress(Progress(phase, int(done), int(total), message, unit))

    def chips(self, what: str, *, silent: bool = False) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self.chips_total = total
            if not silent:
                self(Phase.RUNNING, done, total, f"{what}: {PHASE_RUNNING} {done}/{total}",
                     Unit.CHIPS)

        return report

    def steps(self, what: str, unit: Unit) -> Callable[[int, int, str], None]:
        def report(done: int, total: int, detail: str) -> None:
            self(Phase.RUNNING, done, total, f"{what}: {detail}", unit)

        return report

    def loading(self, key: ModelKey) -> Callable[[str], None]:
        def report(message: str) -> None:
            self(Phase.LOADING, 0, 0, f"{PHASE_LOADING}: {key.describe()}: {message}")

        return report

    def download(self, done_name: str, done: int, total: int | None) -> None:
        size = f"{format_bytes(done)} of {format_bytes(total)}" if total else format_bytes(done)
        self(Phase.LOADING, done, total or 0, f"{PHASE_LOADING}: downloading {done_name} "
             f"({size})", Unit.BYTES)


def _read_scene(spec: JobSpec, settings: Settings, report: _Reporter) -> xr.DataArray:
    """Read the job's scene window (bounded by the settings' time-out and pixel limit)."""
    report(Phase.READING, 0, 1, PHASE_READING)
    return load_scene(list(spec.scene_items), spec.aoi,  # type: ignore[arg-type]
                      stac_url=settings.stac_url, timeout_s=settings.stac_timeout_s,
                      subscription_key=settings.pc_subscription_key,
                      max_pixels=settings.max_read_pixels)


def execute(
    spec: JobSpec,
    *,
    settings: Settings,
    store: RunStore,
    models: ModelManager,
    scene: xr.DataArray | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Outcome:
    """Run one job of any task.

    Args:
        spec: What to run.
        settings: Catalog URL, weights source and device.
        store: Where runs live (and where a geolocation's source run is read).
        models: The process's model manager.
        scene: The scene window already in memory (the page has it); read from the catalog
            when ``None``.
        progress: ``progress(event)`` per phase, in order: loading weights (with bytes while
            downloading), reading the scene, each chip batch and diffusion step, writing.
        cancel: Returns True to stop (``RunCancelledError``).

    Returns:
        The outcome: a stored run, or a geolocation.

    Raises:
        TerraLensError: any failure, with a message for the analyst.
    """
    try:
        return _execute(spec, settings=settings, store=store, models=models, scene=scene,
                        progress=progress, cancel=cancel)
    finally:
        trim_heap()  # a run frees GBs of chips and activations: give them back to the system


def _execute(spec: JobSpec, *, settings: Settings, store: RunStore, models: ModelManager,
             scene: xr.DataArray | None, progress: ProgressFn | None,
             cancel: CancelFn | None) -> Outcome:
    report = _Reporter(progress)
    existing = find_existing(spec, settings=settings, store=store)
    if existing is not None:
        return Outcome(run=existing, reused=True)
    if spec.task is Task.GEOLOCATE:
        return Outcome(geolocation=_geolocate(spec, settings, store, models, scene, report,
                                              cancel))
    if scene is None:
        scene = _read_scene(spec, settings, report)
    if scene.attrs.get("modality") != Modality.S2L2A.value:
        raise SceneError(
            f"TerraMind runs on Sentinel-2 L2A here; the loaded scene is "
            f"{scene.attrs.get('modality')!r}. Pick a sentinel-2-l2a scene."
        )
    layers = _run_inference(spec, scene, settings, models, report, cancel)
    report(Phase.WRITING, 0, 1, PHASE_WRITING)
    provenance = _provenance(spec, scene, layers, stac_url=settings.stac_url)
    # Water and TiM runs keep their prediction's polygons and class areas beside the COGs.
    files = segmentation_files(layers) if spec.task in (Task.WATER, Task.TIM) else None
    run = store.save(run_request(spec, settings), layers, provenance=provenance,
                     input_layer=scene, files=files)
    report(Phase.STORED, 1, 1, "stored")
    _measure(spec, settings, models, report)
    return Outcome(run=run)


def work_key(task: Task, *, size: str, outputs: tuple[Modality, ...], timesteps: int,
             device: str) -> WorkKey:
    """What a run's throughput is kept under: task, size, outputs, timesteps, chip, device
    (``cpu``, ``cuda``... as resolved) on this machine."""
    if task is not Task.GENERATE:  # water and TiM run one LULC decode
        outputs, timesteps = (Modality.LULC,), 1
    return WorkKey(task.value, "" if task is Task.TIM else size,
                   tuple(m.value for m in outputs), timesteps, CHIP, device_id(device))


def model_identity(key: ModelKey, device: str) -> str:
    """The throughput store's name of a model (load times)."""
    return model_id(key.kind, key.size or key.checkpoint, key.outputs, key.weights, device)


def prior_seconds(task: Task, *, size: str, outputs: tuple[Modality, ...], timesteps: int,
                  chips: int, device: str) -> float:
    """The fixed table's seconds for ``chips`` chips (the prior of estimates)."""
    from inference.generate import GenerationTask, estimate

    if task is not Task.GENERATE:
        outputs, timesteps = (Modality.LULC,), 1
    gen = GenerationTask(outputs=outputs, timesteps=timesteps, chip=CHIP)
    per_chip = estimate(CHIP, CHIP, gen, device=device.split(":")[0] or "cpu", size=size)[1]
    return per_chip * chips


def _measure(spec: JobSpec, settings: Settings, models: ModelManager,
             report: _Reporter) -> None:
    """Refine the throughput store with this run (chips per second, and the model load)."""
    if report.run_started is None or not report.chips_total:
        return
    device = report.device
    size, outputs, steps = spec.size.value, spec.outputs, spec.timesteps
    store = ThroughputStore.beside(settings.runs_dir)
    store.record_run(  # kept per chip entry: an ensemble of N runs each chip N times
        work_key(spec.task, size=size, outputs=outputs, timesteps=steps, device=device),
        chips=report.chips_total * _members(spec), seconds=time.monotonic() - report.run_started,
        prior_per_chip=prior_seconds(spec.task, size=size, outputs=outputs, timesteps=steps,
                                     chips=1, device=device))
    key = model_key(spec, settings)
    if report.loaded_model and key in models.load_seconds:
        store.record_load(model_identity(key, device), models.load_seconds[key])


def _members(spec: JobSpec) -> int:
    """Batch entries per chip: the seed ensemble's size for generation, else 1."""
    return max(1, int(spec.seeds)) if spec.task is Task.GENERATE else 1


def estimate_for(spec: JobSpec, scene: xr.DataArray, inside: Any, *, key: ModelKey,
                 models: ModelManager, settings: Settings, device: str) -> Estimate:
    """How long ``spec`` should take on ``scene`` (the chips the AOI needs), from the
    throughput measured beside the runs; loading included unless ``models`` holds the model."""
    import sys

    import numpy as np

    from inference.generate import GenerationTask
    from inference.tiling import count_chips, restrict_to_aoi

    valid = np.isfinite(np.asarray(scene.values)).all(axis=0)
    h, w = valid.shape
    plan = GenerationTask(outputs=(Modality.LULC,), chip=CHIP)  # the runs' chip and overlap
    chips = count_chips(h, w, plan.chip, plan.overlap, mask=restrict_to_aoi(valid, inside))
    chips *= _members(spec)  # chip entries: an ensemble of N runs each chip N times
    size, outputs, steps = spec.size.value, spec.outputs, spec.timesteps
    return estimate_run(
        ThroughputStore.beside(settings.runs_dir),
        work_key(spec.task, size=size, outputs=outputs, timesteps=steps, device=device),
        chips=chips, outputs=len(key.outputs) or 1,
        prior_s=prior_seconds(spec.task, size=size, outputs=outputs, timesteps=steps,
                              chips=chips, device=device),
        model=None if key in models.loaded() else model_identity(key, device),
        terratorch_imported="terratorch" in sys.modules)


def _announce_estimate(spec: JobSpec, scene: xr.DataArray, inside: Any, key: ModelKey,
                       models: ModelManager, settings: Settings, report: _Reporter) -> None:
    from inference.devices import resolve_device

    try:
        found = estimate_for(spec, scene, inside, key=key, models=models, settings=settings,
                             device=str(resolve_device(settings.device)))
    except InvalidRequestError:  # no valid pixel in the AOI: the run itself says so
        return
    load = ""
    if found.load_source != "loaded":
        how = ("measured here" if found.load_source == "measured"
               else "a guess until a load is measured here")
        load = f" + {format_seconds(found.load_s)} loading the model ({how})"
    report(Phase.READING, 1, 1,
           f"{PHASE_READING}: {int(scene.sizes['x'])} × {int(scene.sizes['y'])} px, "
           f"{found.chips} chip{'s' if found.chips != 1 else ''}; estimate "
           f"{format_seconds(found.run_s)}{load} ({found.describe()})")


def _on_load(report: _Reporter) -> Callable[[ModelKey], None]:
    def on_load(key: ModelKey) -> None:
        report.loaded_model = True
        report(Phase.LOADING, 0, 0, f"{PHASE_LOADING}: {key.describe()}")

    return on_load


def _use(models: ModelManager, key: ModelKey, report: _Reporter,
         cancel: CancelFn | None) -> Any:
    """``models.use`` with every loading phase reported."""
    return models.use(key, on_load=_on_load(report), cancel=cancel,
                      progress=report.loading(key), on_bytes=report.download)


def _started(report: _Reporter, model: Any, settings: Settings) -> None:
    report.device = str(getattr(model, "device", None) or settings.device)
    report.run_started = time.monotonic()


def _run_inference(spec: JobSpec, scene: xr.DataArray, settings: Settings,
                   models: ModelManager, report: _Reporter, cancel: CancelFn | None,
                   ) -> dict[str, xr.DataArray]:
    from inference.generate import GenerationTask, generate

    if spec.aoi is None:
        raise InvalidRequestError("No AOI: draw or upload one on the Search page.")
    inside = aoi_mask(scene, spec.aoi)
    key = model_key(spec, settings)
    _announce_estimate(spec, scene, inside, key, models, settings, report)
    if spec.task is Task.TIM:
        try:
            from inference.tim import segment
        except ImportError as err:
            raise CheckpointError(
                "Fine-tuned TiM checkpoints are not supported by this TerraLens version yet; "
                "use zero-shot water (no --checkpoint) instead."
            ) from err
    # RAY_ADDRESS set: chips run on that Ray cluster (the same bytes as in this process).
    executor = executor_from_env()
    with _use(models, key, report, cancel) as model:
        _started(report, model, settings)
        if spec.task is Task.GENERATE:
            task = GenerationTask(outputs=spec.outputs, timesteps=spec.timesteps,
                                  seed=spec.seed, ensemble=spec.seeds)
            unit = Unit.CHIPS if spec.outputs == (Modality.LULC,) else Unit.CHIP_STEPS
            with DEVICE_LOCK:
                return generate(model, scene, task,
                                progress=report.chips("generating", silent=True),
                                steps=report.steps("generating", unit),
                                cancel=cancel, aoi_mask=inside, executor=executor)
        if spec.task is Task.WATER:
            from inference.water import zero_shot_water

            with DEVICE_LOCK:
                return zero_shot_water(model, scene, seed=spec.seed,
                                       progress=report.chips("mapping water"), cancel=cancel,
                                       aoi_mask=inside, executor=executor)
        with DEVICE_LOCK:
            return segment(model, {Modality.S2L2A: scene}, seed=spec.seed,
                           progress=report.chips("segmenting"), cancel=cancel,
                           aoi_mask=inside)


def _geolocate(spec: JobSpec, settings: Settings, store: RunStore, models: ModelManager,
               scene: xr.DataArray | None, report: _Reporter, cancel: CancelFn | None,
               ) -> GeolocationOutcome:
    from inference.geolocate import sample_locations
    from inference.geolocate_conditions import lulc_prompt
    from inference.geolocate_summary import summary

    condition: Any
    truth: tuple[float, float] | None = None
    if spec.condition is Condition.PROMPT:
        condition = lulc_prompt(dict(spec.prompt), seed=0)
    elif spec.condition is Condition.RUN_LULC:
        run = store.open(str(spec.source_run))
        if "LULC" not in run.layer_names:
            raise SceneError(f"Run {run.id!r} has no generated LULC layer to geolocate.")
        condition = run.load_layer("LULC")
        truth = centre_lonlat(condition)
    else:
        if scene is None:
            scene = _read_scene(spec, settings, report)
        condition = scene
        truth = centre_lonlat(scene)
    key = model_key(spec, settings)
    with _use(models, key, report, cancel) as model, DEVICE_LOCK:
        result = sample_locations(
            model, condition, n=spec.samples, temperature=spec.temperature, top_p=spec.top_p,
            seed=spec.seed, cancel=cancel,
            progress=lambda d, t: report(Phase.SAMPLING, d, t, f"{PHASE_SAMPLING} {d}/{t}",
                                         Unit.SAMPLES),
        )
    return GeolocationOutcome(result=result, summary=summary(result, truth), true_lonlat=truth)


#: Layer attrs copied into the run's provenance (the first layer that has them wins).
_PROVENANCE_ATTRS = ("model", "weights", "weights_files", "untrained", "timesteps", "seed",
                     "terratorch_version", "checkpoint", "device", "dtype", "clipped_to_aoi",
                     "ensemble_size", "ensemble_rng")


def _provenance(
    spec: JobSpec, scene: xr.DataArray, layers: dict[str, xr.DataArray], *, stac_url: str
) -> dict[str, Any]:
    """What the run's STAC Item records: the job, the scene and the model that ran."""
    provenance: dict[str, Any] = {"task": spec.task.value, **spec.params()}
    for key in ("scene_id", "collection", "datetime", "offset_applied", "processing_baseline",
                "aoi_cloud_share", "aoi_valid_share"):
        if key in scene.attrs:
            provenance[key] = scene.attrs[key]
    provenance.setdefault("scene_id", spec.scene_id)
    href = scene_href(spec.scene_items[0], stac_url) if spec.scene_items else None
    if href:
        provenance["scene_href"] = href
    for key in _PROVENANCE_ATTRS:
        value = next((da.attrs[key] for da in layers.values() if key in da.attrs), None)
        if key == "weights_files" and isinstance(value, str):
            value = json.loads(value)  # [{key, file, sha256, revision?}] of the model's files
        if value is not None:
            provenance[key] = value
    provenance["synthetic"] = any(bool(da.attrs.get("synthetic")) for da in layers.values())
    return provenance
