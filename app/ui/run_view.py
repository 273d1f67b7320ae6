"""What the Run page needs besides widgets: tasks on offer, the job, the estimate, the summary."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from app.aoi import AOI
from app.escaping import markdown_code, markdown_text
from app.scenes import aoi_mask
from app.tasks import RUN_PAGE_TASKS, TASKS, JobSpec, Task, task_label
from inference.ensembles import MAX_MEMBERS, MIN_MEMBERS
from inference.errors import InvalidRequestError, SceneError, TerraLensError
from inference.modalities import GENERATABLE, Modality
from inference.models import parse_model_size
from inference.progress import format_seconds
from inference.throughput import ThroughputStore

#: Range of the "Ensemble seeds" control (1 = no ensemble).
MIN_SEEDS, MAX_SEEDS = MIN_MEMBERS, MAX_MEMBERS
#: Outputs selected when the page first opens.
DEFAULT_OUTPUTS: tuple[str, ...] = (Modality.LULC.value, Modality.NDVI.value)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def available_tasks() -> list[Task]:
    """The Run page's tasks this installation can run (see ``TaskInfo.needs``)."""
    return [t for t in RUN_PAGE_TASKS
            if (needs := TASKS[t].needs) is None or _module_exists(needs)]


def kept_outputs(kept: Sequence[str] | None) -> list[str]:
    """The Outputs widget's default: the session's kept choice (those still on offer), or
    :data:`DEFAULT_OUTPUTS` the first time."""
    if kept is None:
        return list(DEFAULT_OUTPUTS)
    offered = output_choices()
    return [o for o in kept if o in offered]


def aoi_mismatch_text(search_aoi: AOI | None, scene_aoi: AOI | None) -> str | None:
    """A warning when the AOI on the Search page is no longer the one the loaded scene was
    read for (``None`` when they match or either is unset)."""
    if search_aoi is None or scene_aoi is None or search_aoi == scene_aoi:
        return None
    return (f"The area on the Search page ({search_aoi.area_km2:,.2f} km²) is not the one this "
            f"scene was loaded for ({scene_aoi.area_km2:,.2f} km²): a run here uses the loaded "
            "scene's area. Load the scene again on the Search page to run the new area.")


def matches_choices(job: Any, weights: str, **choices: Any) -> bool:
    """Whether an ended job answered the request the page's current choices make (the
    keyword arguments of :func:`build_spec`): only then is its result the page's result."""
    try:
        wanted = build_spec(**choices)
    except TerraLensError:
        return False
    return bool(job.key == wanted.key(weights))


def stale_result_text(job: Any) -> str:
    """What the Run page says of a last run made with other choices than the current ones."""
    return (f"The last run (job #{job.id}: {markdown_text(job.label)}) was for other choices "
            "than these; press Run to run these. Stored runs are on the Runs page.")


def output_choices() -> list[str]:
    """Output modalities on offer, in TerraMind's order."""
    return [m.value for m in GENERATABLE]


def check_scene(scene: Any) -> Any:
    """The loaded scene, checked that it can feed TerraMind (returned as given).

    Raises:
        SceneError: no scene, or not Sentinel-2 L2A.
    """
    if scene is None:
        raise SceneError("No scene loaded: on the Search page, pick a scene and press "
                         "'Load scene' first.")
    modality = scene.attrs.get("modality")
    if modality != Modality.S2L2A.value:
        raise SceneError(
            f"TerraMind runs on Sentinel-2 L2A here, but the loaded scene is {modality!r}: "
            "search Sentinel-2 L2A and load one of its scenes."
        )
    return scene


def estimate(scene: Any, task: Task, outputs: tuple[Modality, ...], *, timesteps: int,
             size: str, device: str, aoi: AOI | None = None,
             throughput: ThroughputStore | None = None, model: str | None = None,
             seeds: int = 1) -> tuple[str, float | None]:
    """"N chips of 224 px · about T on DEVICE" for the scene window (or why not), and the
    estimated seconds (``None`` when there is nothing to run).

    With the AOI the scene was loaded for, only the chips touching valid pixels inside the AOI
    polygon are counted (as the run skips the others) and the skipped ones are mentioned.
    Seconds come from the ``throughput`` measured on this machine and device (refined after
    each run), else from the fixed table; ``model`` is the :func:`app.pipeline.model_identity`
    of the model to load first, ``None`` when it is loaded already.
    A seed ensemble (``seeds`` > 1, generation only) costs ``seeds`` × the chips, said as such.
    """
    import sys

    import numpy as np

    from app.pipeline import prior_seconds, work_key
    from inference.generate import GenerationTask
    from inference.throughput import estimate_run
    from inference.tiling import count_chips, restrict_to_aoi

    h, w = int(scene.sizes["y"]), int(scene.sizes["x"])
    seeds = int(seeds) if task is Task.GENERATE else 1
    valid = np.isfinite(np.asarray(scene.values)).all(axis=0)
    inside = aoi_mask(scene, aoi) if aoi is not None else np.ones_like(valid)
    try:
        wanted = restrict_to_aoi(valid, inside)  # what generate() will compute
    except InvalidRequestError as err:
        return markdown_text(err), None
    gen = GenerationTask(outputs=outputs, timesteps=int(timesteps))
    chips = count_chips(h, w, gen.chip, gen.overlap, mask=wanted)
    entries = chips * seeds  # an ensemble of N runs each chip N times
    steps = int(timesteps)
    found = estimate_run(
        throughput, work_key(task, size=size, outputs=outputs, timesteps=steps, device=device),
        chips=entries, model=model, outputs=len(outputs),
        prior_s=prior_seconds(task, size=size, outputs=outputs, timesteps=steps, chips=entries,
                              device=device),
        terratorch_imported="terratorch" in sys.modules)
    skipped = count_chips(h, w, gen.chip, gen.overlap) - chips
    what = {Task.GENERATE: "generation", Task.TIM: "segmentation (estimated as generating its "
            "land cover)"}.get(task, "land cover for the water map")
    note = (f" ({skipped} chip{'s' if skipped != 1 else ''} of the bounding box hold no AOI "
            "pixel with data and are skipped)") if skipped else ""
    load = ""
    if found.load_source != "loaded":
        load = (f", plus about **{format_seconds(found.load_s)}** loading the model first"
                + (" (measured here)" if found.load_source == "measured" else
                   " (a rough guess until a load is measured here)"))
    cost = (f" × **{seeds} ensemble seeds** = **{entries} chip runs** in one batched job"
            if seeds > 1 else "")
    return (f"{w} × {h} px window → **{chips} chip{'s' if chips != 1 else ''}** of "
            f"{gen.chip} px{note}{cost} · {what} takes about **{format_seconds(found.run_s)}** "
            f"on {markdown_code(device)}{load} ({markdown_text(found.describe())})."), found.total_s


def throughput_store(settings: Any) -> ThroughputStore:
    """The throughput measured beside this app's runs."""
    return ThroughputStore.beside(settings.runs_dir)


def model_to_load(models: Any, task: Task, *, size: str, outputs: tuple[Modality, ...],
                  checkpoint: str | None, settings: Any, device: str) -> str | None:
    """The throughput store's name of the model a run needs, or ``None`` when the process's
    model manager holds it already (no loading time to add)."""
    from app.pipeline import model_identity, model_key_for

    key = model_key_for(task, size=size, outputs=outputs, checkpoint=checkpoint or None,
                        settings=settings)
    return None if key in models.loaded() else model_identity(key, device)


def cancelled_at(job: Any) -> str:
    """``"while generating: chip batch 2/3 (40%)"`` — where a cancelled job stopped."""
    if not job.message or not job.phase:
        return "before it started"
    counts = ""
    if job.total > 1 and job.unit not in ("", "bytes"):
        counts = f" ({job.done} of {job.total} {job.unit})"
    return f"while {markdown_text(job.message)}{counts}"


def build_spec(
    *, items: Sequence[dict[str, Any]], aoi: AOI | None, task: Task | str,
    outputs: Sequence[str], size: str, timesteps: int, seed: int, checkpoint: str | None,
    seeds: int = 1,
) -> JobSpec:
    """The job for the loaded scene and the chosen parameters (knobs that do not apply to the
    task are ignored).

    Raises:
        InvalidRequestError: no outputs chosen, or a bad parameter.
        SceneError: the scene was not loaded from catalog items.
    """
    if not items or aoi is None:
        raise SceneError("The loaded scene has no catalog items: load it again on the Search "
                         "page.")
    task = Task(task)
    if task is Task.GENERATE and not outputs:
        raise InvalidRequestError(
            f"Choose at least one output to generate from {output_choices()}."
        )
    return JobSpec(
        task=task, scene_items=tuple(items), aoi=aoi,
        outputs=tuple(Modality(o) for o in outputs) if task is Task.GENERATE
        else (Modality.LULC,),
        size=parse_model_size(size), timesteps=int(timesteps), seed=int(seed),
        seeds=int(seeds) if task is Task.GENERATE else 1, checkpoint=checkpoint or None,
    )


def weights_advice(size: str, outputs: Sequence[Modality]) -> str:
    """How to fetch the weights of this model ahead of time (on a machine with internet)."""
    spec = f"{size}:{','.join(m.value for m in outputs)}"
    return (f"To fetch these weights ahead of time, run `terralens weights download --spec {spec}` "
            "on a machine with internet access and copy its Hugging Face cache (HF_HOME) here.")


def run_summary(run: Any) -> list[str]:
    """Lines describing a stored run (layers, task, model, weights)."""
    lines = [f"**Run** {markdown_code(getattr(run, 'id', '?'))}"]
    layers = getattr(run, "layer_names", None) or list(getattr(run, "layers", {}) or {})
    if layers:
        lines.append("**Layers** " + ", ".join(markdown_code(n) for n in layers))
    request = getattr(run, "request", None)
    if request is not None:
        lines.append(f"**Task** {task_label(str(getattr(request, 'task', '')))} · "
                     f"**model** {markdown_code(getattr(request, 'model', ''))} · "
                     f"**weights** {markdown_code(getattr(request, 'weights', ''))}")
    return lines
