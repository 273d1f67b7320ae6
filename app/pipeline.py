"""One :func:`execute` for every task: condition → model (from the manager) → result.

Generation, zero-shot water and fine-tuned TiM jobs read the scene window, run the model and
publish a run in the run store (or return the stored run answering the same request at once).
Geolocation jobs read their condition (the scene, a run's LULC, or a land-cover prompt), sample
coordinates and return a :class:`~app.geolocation.GeolocationOutcome`. Progress is reported by
phase: loading weights, reading the scene, each chip batch (or sample batch), writing.

Nothing here imports Streamlit; the job workers (:mod:`app.jobs`) and the CLI call it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import xarray as xr

from app.catalog import scene_href
from app.exports import segmentation_files
from app.geolocation import GeolocationOutcome, centre_lonlat
from app.model_manager import GENERATION, GEOLOCATION, TIM, ModelKey, ModelManager
from app.run_request import RunRequest
from app.runs import RunStore
from app.scenes import aoi_mask, load_scene
from app.settings import Settings
from app.stored_run import Run
from app.tasks import Condition, JobSpec, Task
from inference.errors import CheckpointError, InvalidRequestError, SceneError
from inference.modalities import Modality
from inference.models import DEVICE_LOCK

#: progress(done, total, message) as the pages and the CLI show it.
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

#: Phase names (the first words of progress messages).
PHASE_LOADING = "loading weights"
PHASE_READING = "reading the scene window"
PHASE_RUNNING = "chip batch"
PHASE_SAMPLING = "sampling"
PHASE_WRITING = "writing the run"


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
    if spec.task is Task.TIM:
        return ModelKey(TIM, checkpoint=str(spec.checkpoint), weights=settings.weights,
                        device=settings.device)
    if spec.task is Task.GEOLOCATE:
        return ModelKey(GEOLOCATION, size=spec.size.value, weights=settings.weights,
                        device=settings.device)
    return ModelKey(GENERATION, size=spec.size.value,
                    outputs=tuple(m.value for m in spec.outputs),
                    weights=settings.weights, device=settings.device)


class _Reporter:
    """Turns the inference callbacks into phase messages."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.progress is not None:
            self.progress(done, total, message)

    def chips(self, what: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self(done, total, f"{what}: {PHASE_RUNNING} {done}/{total}")

        return report


def _read_scene(spec: JobSpec, settings: Settings, report: _Reporter) -> xr.DataArray:
    """Read the job's scene window (bounded by the settings' time-out and pixel limit)."""
    report(0, 1, PHASE_READING)
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
        progress: ``progress(done, total, message)`` per phase.
        cancel: Returns True to stop (``RunCancelledError``).

    Returns:
        The outcome: a stored run, or a geolocation.

    Raises:
        TerraLensError: any failure, with a message for the analyst.
    """
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
    report(0, 1, PHASE_WRITING)
    provenance = _provenance(spec, scene, layers, stac_url=settings.stac_url)
    # Water and TiM runs keep their prediction's polygons and class areas beside the COGs.
    files = segmentation_files(layers) if spec.task in (Task.WATER, Task.TIM) else None
    run = store.save(run_request(spec, settings), layers, provenance=provenance,
                     input_layer=scene, files=files)
    report(1, 1, "stored")
    return Outcome(run=run)


def _on_load(report: _Reporter) -> Callable[[ModelKey], None]:
    return lambda key: report(0, 1, f"{PHASE_LOADING}: {key.describe()}")


def _run_inference(spec: JobSpec, scene: xr.DataArray, settings: Settings,
                   models: ModelManager, report: _Reporter, cancel: CancelFn | None,
                   ) -> dict[str, xr.DataArray]:
    from inference.generate import GenerationTask, generate

    if spec.aoi is None:
        raise InvalidRequestError("No AOI: draw or upload one on the Search page.")
    inside = aoi_mask(scene, spec.aoi)
    key = model_key(spec, settings)
    if spec.task is Task.TIM:
        try:
            from inference.tim import segment
        except ImportError as err:
            raise CheckpointError(
                "Fine-tuned TiM checkpoints are not supported by this TerraLens version yet; "
                "use zero-shot water (no --checkpoint) instead."
            ) from err
    with models.use(key, on_load=_on_load(report), cancel=cancel) as model:
        if spec.task is Task.GENERATE:
            task = GenerationTask(outputs=spec.outputs, timesteps=spec.timesteps,
                                  seed=spec.seed, ensemble=spec.seeds)
            with DEVICE_LOCK:
                return generate(model, scene, task, progress=report.chips("generating"),
                                cancel=cancel, aoi_mask=inside)
        if spec.task is Task.WATER:
            from inference.water import zero_shot_water

            with DEVICE_LOCK:
                return zero_shot_water(model, scene, seed=spec.seed,
                                       progress=report.chips("mapping water"), cancel=cancel,
                                       aoi_mask=inside)
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
    with models.use(key, on_load=_on_load(report), cancel=cancel) as model, DEVICE_LOCK:
        result = sample_locations(
            model, condition, n=spec.samples, temperature=spec.temperature, top_p=spec.top_p,
            seed=spec.seed, cancel=cancel,
            progress=lambda d, t: report(d, t, f"{PHASE_SAMPLING} {d}/{t}"),
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
