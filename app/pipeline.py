"""From a chosen scene and AOI to a stored run: scene load → inference → run store.

The pages and the CLI call these functions; they hold no Streamlit code. A job is a frozen
value that doubles as the run store's cache key, so the same request twice is answered from
the store without loading the scene or the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import xarray as xr

from app.aoi import AOI
from app.catalog import scene_href
from app.exports import segmentation_files
from app.runs import Run, RunRequest, RunStore
from app.scenes import aoi_mask, load_scene
from app.settings import Settings
from inference.errors import CheckpointError, InvalidRequestError, SceneError
from inference.modalities import Modality

#: progress(done, total, message) as the pages and the CLI show it.
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]


class ModelProvider(Protocol):
    """Returns a loaded generation model (the app caches them, the CLI builds one)."""

    def __call__(self, size: str, outputs: tuple[Modality, ...], timesteps: int) -> Any: ...


class Task:
    """Names of the tasks a run can hold (the ``task`` of its :class:`RunRequest`)."""

    GENERATION = "generation"
    WATER = "water"
    TIM = "tim"


@dataclass(frozen=True)
class GenerationJob:
    """What to run on which scene window.

    Attributes:
        scene_items: STAC Item dicts of one acquisition (several tiles of the same day).
        aoi: Area of interest.
        outputs: Modalities to generate (for ``water``: LULC is generated implicitly).
        size: TerraMind size.
        timesteps: Diffusion steps.
        seed: Random seed (outputs are reproducible for a given seed).
        task: :class:`Task` value.
        checkpoint: Fine-tuned TiM checkpoint (path or hub repo id) for ``task == "tim"``.
    """

    scene_items: tuple[dict[str, Any], ...]
    aoi: AOI
    outputs: tuple[Modality, ...] = (Modality.LULC,)
    size: str = "base"
    timesteps: int = 10
    seed: int = 0
    task: str = Task.GENERATION
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.scene_items:
            raise InvalidRequestError("No scene chosen: search and pick a scene first.")
        if self.task not in (Task.GENERATION, Task.WATER, Task.TIM):
            raise InvalidRequestError(f"Unknown task {self.task!r}.")
        if self.task == Task.TIM and not self.checkpoint:
            raise InvalidRequestError("A fine-tuned TiM run needs a checkpoint path or repo id.")

    @property
    def scene_id(self) -> str:
        """Id of the (first) scene item."""
        return str(self.scene_items[0].get("id", "unknown"))

    def params(self) -> dict[str, Any]:
        """The parameters that decide the outputs (part of the run's cache key)."""
        # "extent": outputs cover the AOI polygon (runs stored before clipping covered its
        # bounding box and must not answer a request now).
        params: dict[str, Any] = {"seed": self.seed, "extent": "aoi"}
        if self.task != Task.TIM:  # a checkpoint fixes its own model; TiM has no diffusion steps
            params |= {"size": self.size, "timesteps": self.timesteps}
        if self.task == Task.GENERATION:
            params["outputs"] = [m.value for m in self.outputs]
        if self.checkpoint:
            params["checkpoint"] = self.checkpoint
        return params


def _model_name(job: GenerationJob) -> str:
    if job.task == Task.TIM:
        return f"fine-tuned TiM checkpoint {job.checkpoint}"
    return f"terramind_v1_{job.size}_generate"


def run_request(job: GenerationJob, settings: Settings) -> RunRequest:
    """The run store's request (content key) for ``job`` under ``settings``."""
    return RunRequest(
        scene_id=job.scene_id,
        aoi=job.aoi.geometry,
        task=job.task,
        params=job.params(),
        model=_model_name(job),
        weights=settings.weights,
    )


def find_existing(job: GenerationJob, *, settings: Settings, store: RunStore) -> Run | None:
    """The stored run answering ``job``, if one exists."""
    return store.find(run_request(job, settings))


def _wrap_progress(progress: ProgressFn | None, what: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(done, total, f"{what}: chip batch {done}/{total}" if total else what)

    return report


def execute_generation(
    job: GenerationJob,
    *,
    settings: Settings,
    store: RunStore,
    model_provider: ModelProvider,
    scene: xr.DataArray | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Run:
    """Run ``job`` — generation, zero-shot water or a fine-tuned TiM checkpoint, as its
    ``task`` says — or return the stored run answering it, and store its layers.

    Args:
        job: What to run.
        settings: Catalog URL and weights source.
        store: Where runs live.
        model_provider: Gives the loaded generation model.
        scene: The already loaded scene window (the page has it); loaded from the catalog when
            ``None``.
        progress: ``progress(done, total, message)``.
        cancel: Returns True to stop (``RunCancelledError``).

    Returns:
        The stored run.

    Raises:
        TerraLensError: any failure, with a message for the analyst.
    """
    existing = find_existing(job, settings=settings, store=store)
    if existing is not None:
        return existing
    if progress:
        progress(0, 1, "reading the scene window")
    if scene is None:
        scene = load_scene(list(job.scene_items), job.aoi, stac_url=settings.stac_url)
    if scene.attrs.get("modality") != Modality.S2L2A.value:
        raise SceneError(
            f"TerraMind runs on Sentinel-2 L2A here; the loaded scene is "
            f"{scene.attrs.get('modality')!r}. Pick a sentinel-2-l2a scene."
        )
    layers = _run_inference(job, scene, model_provider, progress, cancel,
                            device=job.extra.get("device", settings.device))
    provenance = _provenance(job, scene, layers, stac_url=settings.stac_url)
    files = segmentation_files(layers) if job.task in (Task.WATER, Task.TIM) else None
    return store.save(run_request(job, settings), layers, provenance=provenance,
                      input_layer=scene, files=files)


#: Layer attrs copied into the run's provenance (the first layer that has them wins).
_PROVENANCE_ATTRS = ("model", "weights", "untrained", "timesteps", "seed",
                     "terratorch_version", "checkpoint", "device", "dtype", "clipped_to_aoi")


def _provenance(
    job: GenerationJob, scene: xr.DataArray, layers: dict[str, xr.DataArray], *, stac_url: str
) -> dict[str, Any]:
    """What the run's STAC Item records: the job, the scene and the model that ran."""
    provenance: dict[str, Any] = {"task": job.task, **job.params()}
    for key in ("scene_id", "collection", "datetime", "offset_applied", "processing_baseline",
                "aoi_cloud_share", "aoi_valid_share"):
        if key in scene.attrs:
            provenance[key] = scene.attrs[key]
    provenance.setdefault("scene_id", job.scene_id)
    href = scene_href(job.scene_items[0], stac_url) if job.scene_items else None
    if href:
        provenance["scene_href"] = href
    for key in _PROVENANCE_ATTRS:
        value = next((da.attrs[key] for da in layers.values() if key in da.attrs), None)
        if value is not None:
            provenance[key] = value
    provenance["synthetic"] = any(bool(da.attrs.get("synthetic")) for da in layers.values())
    return provenance


def execute_water(job: GenerationJob, **kwargs: Any) -> Run:
    """Zero-shot water for ``job``'s scene window (see :func:`execute_generation`)."""
    return execute_generation(replace(job, task=Task.WATER), **kwargs)


def _run_inference(
    job: GenerationJob,
    scene: xr.DataArray,
    model_provider: ModelProvider,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    *,
    device: str,
) -> dict[str, xr.DataArray]:
    from inference.generate import GenerationTask, generate
    from inference.models import DEVICE_LOCK

    inside = aoi_mask(scene, job.aoi)
    if job.task == Task.GENERATION:
        model = model_provider(job.size, job.outputs, job.timesteps)
        task = GenerationTask(outputs=job.outputs, timesteps=job.timesteps, seed=job.seed)
        with DEVICE_LOCK:
            return generate(model, scene, task, progress=_wrap_progress(progress, "generating"),
                            cancel=cancel, aoi_mask=inside)
    if job.task == Task.WATER:
        from inference.water import zero_shot_water

        model = model_provider(job.size, (Modality.LULC,), job.timesteps)
        with DEVICE_LOCK:
            return zero_shot_water(model, scene, seed=job.seed,
                                   progress=_wrap_progress(progress, "mapping water"),
                                   cancel=cancel, aoi_mask=inside)
    try:
        from inference.tim import load_tim_checkpoint, segment
    except ImportError as err:
        raise CheckpointError(
            "Fine-tuned TiM checkpoints are not supported by this TerraLens version yet; "
            "use zero-shot water (no --checkpoint) instead."
        ) from err

    # The configured device (TERRALENS_DEVICE) applies to checkpoints as to generation models.
    tim_model = load_tim_checkpoint(str(job.checkpoint), device=device)
    with DEVICE_LOCK:
        return segment(tim_model, {Modality.S2L2A: scene}, seed=job.seed,
                       progress=_wrap_progress(progress, "segmenting"), cancel=cancel,
                       aoi_mask=inside)
