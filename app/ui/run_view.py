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
from inference.errors import InvalidRequestError, SceneError
from inference.modalities import GENERATABLE, Modality
from inference.models import parse_model_size

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
             seeds: int = 1) -> tuple[str, float | None]:
    """"N chips of 224 px · about T on DEVICE" for the scene window (or why not), and the
    estimated seconds (``None`` when there is nothing to run).

    With the AOI the scene was loaded for, only the chips touching valid pixels inside the AOI
    polygon are counted (as the run skips the others) and the skipped ones are mentioned. A
    seed ensemble (``seeds`` > 1, generation only) costs ``seeds`` × the chips, said as such.
    """
    import numpy as np

    from inference.generate import GenerationTask
    from inference.generate import estimate as estimate_run
    from inference.tiling import count_chips, restrict_to_aoi

    h, w = int(scene.sizes["y"]), int(scene.sizes["x"])
    seeds = int(seeds) if task is Task.GENERATE else 1
    gen_task = GenerationTask(outputs=outputs, timesteps=int(timesteps), ensemble=seeds)
    valid = np.isfinite(np.asarray(scene.values)).all(axis=0)
    inside = aoi_mask(scene, aoi) if aoi is not None else np.ones_like(valid)
    try:
        wanted = restrict_to_aoi(valid, inside)  # what generate() will compute
    except InvalidRequestError as err:
        return markdown_text(err), None
    entries, seconds = estimate_run(h, w, gen_task, device=device.split(":")[0] or "cpu",
                                    size=size, mask=wanted)
    chips = entries // seeds
    skipped = count_chips(h, w, gen_task.chip, gen_task.overlap) - chips
    what = {Task.GENERATE: "generation", Task.TIM: "segmentation (estimated as generating its "
            "land cover)"}.get(task, "land cover for the water map")
    note = (f" ({skipped} chip{'s' if skipped != 1 else ''} of the bounding box hold no AOI "
            "pixel with data and are skipped)") if skipped else ""
    cost = (f" × **{seeds} ensemble seeds** = **{entries} chip runs** in one batched job"
            if seeds > 1 else "")
    return (f"{w} × {h} px window → **{chips} chip{'s' if chips != 1 else ''}** of "
            f"{gen_task.chip} px{note}{cost} · {what} takes about **{format_seconds(seconds)}** on "
            f"{markdown_code(device)} (a rough estimate; model loading not included)."), seconds


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"1 h 05 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


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
