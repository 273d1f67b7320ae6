"""The task vocabulary: what a job can do, in one table, and the frozen request of one job.

:class:`Task` names the four tasks; :data:`TASKS` holds, per task, the label and help the pages
show, the outputs it writes and the knobs (:class:`Knob`) that apply to it. The pages, the CLI
and the run key all read this table, so a knob that does not apply to a task (timesteps for
water, the model size for a TiM checkpoint) is never shown, never asked for and never part of
the key.

:class:`JobSpec` is the validated, canonical request of one job: loose input is normalised in
its constructor (outputs as a sorted set in TerraMind's order, knobs that do not apply reset to
their defaults), so two requests that mean the same thing are equal, persist to the same JSON
(:meth:`JobSpec.to_dict`) and answer to the same :meth:`JobSpec.key`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.aoi import AOI
from app.run_request import RunRequest
from inference.ensembles import MAX_MEMBERS, MIN_MEMBERS
from inference.errors import InvalidRequestError
from inference.modalities import GENERATABLE, LULC_CLASSES, Modality
from inference.models import ModelSize, normalise_outputs, parse_model_size


class Task(StrEnum):
    """What a job does (the value is the ``task`` of its stored run)."""

    GENERATE = "generation"
    WATER = "water"
    TIM = "tim"
    GEOLOCATE = "geolocate"


class Knob(StrEnum):
    """A parameter a task may take."""

    SIZE = "size"
    OUTPUTS = "outputs"
    TIMESTEPS = "timesteps"
    SEED = "seed"
    SEEDS = "seeds"
    CHECKPOINT = "checkpoint"
    SAMPLES = "samples"
    TEMPERATURE = "temperature"
    TOP_P = "top_p"


class Condition(StrEnum):
    """What a geolocation is conditioned on."""

    SCENE = "scene"
    RUN_LULC = "run_lulc"
    PROMPT = "prompt"


@dataclass(frozen=True)
class TaskInfo:
    """One row of the task table.

    Attributes:
        label: Shown in selectors and lists.
        help: One sentence for the analyst.
        outputs: What the task writes (layer names, or the files of a geolocation).
        knobs: The parameters that apply (all others are ignored and kept at their default).
        needs: A module that must be importable for the task to be offered.
        stores_run: Whether the task's result is a run in the run store.
    """

    label: str
    help: str
    outputs: str
    knobs: frozenset[Knob]
    needs: str | None = None
    stores_run: bool = True


TASKS: dict[Task, TaskInfo] = {
    Task.GENERATE: TaskInfo(
        "Generation",
        "Generate synthetic S1, LULC, NDVI or DEM layers from the Sentinel-2 window.",
        "one layer per chosen output (LULC also as class probabilities)",
        frozenset({Knob.SIZE, Knob.OUTPUTS, Knob.TIMESTEPS, Knob.SEED, Knob.SEEDS})),
    Task.WATER: TaskInfo(
        "Water (zero-shot TiM)",
        "Map water from TerraMind's generated land cover (class 1), with confidence.",
        "WATER, WATER_CONFIDENCE and the LULC they come from",
        frozenset({Knob.SIZE, Knob.SEED}), needs="inference.water"),
    Task.TIM: TaskInfo(
        "Fine-tuned TiM checkpoint",
        "Segment with a fine-tuned TerraMind TiM checkpoint (local path or hub repo id).",
        "PREDICTION, PREDICTION_PROB and the TiM land cover",
        frozenset({Knob.CHECKPOINT, Knob.SEED}), needs="inference.tim"),
    Task.GEOLOCATE: TaskInfo(
        "Geolocation",
        "Sample where TerraMind thinks a scene or a land cover is on Earth.",
        "coordinate samples (GeoJSON, CSV) and their summary",
        frozenset({Knob.SIZE, Knob.SEED, Knob.SAMPLES, Knob.TEMPERATURE, Knob.TOP_P}),
        stores_run=False),
}

#: Tasks offered on the Run page (geolocation has its own page).
RUN_PAGE_TASKS: tuple[Task, ...] = (Task.GENERATE, Task.WATER, Task.TIM)
#: Default of each knob (what a knob that does not apply is set to).
DEFAULTS: dict[Knob, Any] = {
    Knob.SIZE: ModelSize.BASE, Knob.OUTPUTS: (Modality.LULC,), Knob.TIMESTEPS: 10,
    Knob.SEED: 0, Knob.SEEDS: 1, Knob.CHECKPOINT: None, Knob.SAMPLES: 64, Knob.TEMPERATURE: 1.0,
    Knob.TOP_P: 0.8,
}
#: Diffusion steps of the water task (it decodes LULC only, which has no diffusion).
WATER_TIMESTEPS = 1


def parse_task(value: Task | str) -> Task:
    """The :class:`Task` for ``value``.

    Raises:
        InvalidRequestError: not a task name.
    """
    try:
        return Task(str(value).strip().lower())
    except ValueError as err:
        raise InvalidRequestError(
            f"Unknown task {value!r}: choose from {[t.value for t in Task]}."
        ) from err


def task_label(value: Task | str) -> str:
    """Label of a task (the value itself when it is not a known task)."""
    try:
        return TASKS[Task(str(value))].label
    except ValueError:
        return str(value)


def canonical_outputs(outputs: Iterable[Modality | str]) -> tuple[Modality, ...]:
    """Generation outputs as a set in TerraMind's order (the order they are generated in).

    Raises:
        InvalidRequestError: empty, unknown or not generatable.
    """
    chosen = set(normalise_outputs(outputs))
    return tuple(m for m in GENERATABLE if m in chosen)


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value \
            or not low <= int(value) <= high:
        raise InvalidRequestError(f"{name} must be an integer in {low}..{high}, got {value!r}.")
    return int(value)


def _float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= float(value) <= high:
        raise InvalidRequestError(f"{name} must be a number in {low}..{high}, got {value!r}.")
    return float(value)


def _prompt(value: Any) -> tuple[tuple[int, float], ...]:
    """A land-cover composition as sorted (class index, share) pairs summing to 1."""
    items = value.items() if isinstance(value, Mapping) else value
    valid = {c.index for c in LULC_CLASSES}
    pairs: dict[int, float] = {}
    for cls, share in items:
        index = int(cls)
        if index not in valid or not 0 < float(share) <= 1:
            raise InvalidRequestError(f"land-cover prompt entry out of range: {cls!r}={share!r}")
        pairs[index] = pairs.get(index, 0.0) + round(float(share), 6)
    if not pairs or abs(sum(pairs.values()) - 1.0) > 0.01:
        raise InvalidRequestError(f"land-cover prompt shares must sum to 1, got {value!r}")
    return tuple(sorted(pairs.items()))


@dataclass(frozen=True)
class JobSpec:
    """What one job runs, validated and canonical.

    Attributes:
        task: The :class:`Task`.
        scene_items: STAC Item dicts of one acquisition (run tasks, geolocation of a scene).
        aoi: Area of interest (run tasks, geolocation of a scene).
        outputs: Generation outputs (a set, in TerraMind's order; LULC for water).
        size: TerraMind size (not for TiM checkpoints).
        timesteps: Diffusion steps (generation only; water always decodes in one step).
        seed: Random seed.
        seeds: Seed-ensemble members (generation only; 1 = off, 2..16 write ``[U]`` layers).
        checkpoint: Fine-tuned TiM checkpoint (path or hub repo id).
        condition: What a geolocation is conditioned on.
        source_run: The run whose LULC conditions a geolocation (``run_lulc``).
        prompt: Land-cover prompt of a geolocation, (class index, share) pairs.
        samples: Geolocation samples to draw.
        temperature: Geolocation sampling temperature.
        top_p: Geolocation nucleus sampling threshold.
    """

    task: Task
    scene_items: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    aoi: AOI | None = None
    outputs: tuple[Modality, ...] = (Modality.LULC,)
    size: ModelSize = ModelSize.BASE
    timesteps: int = 10
    seed: int = 0
    seeds: int = 1
    checkpoint: str | None = None
    condition: Condition | None = None
    source_run: str | None = None
    prompt: tuple[tuple[int, float], ...] = ()
    samples: int = 64
    temperature: float = 1.0
    top_p: float = 0.8
    scene_id: str = field(default="", init=False)

    def __post_init__(self) -> None:
        task = parse_task(self.task)
        info = TASKS[task]
        knobs = info.knobs
        set_ = object.__setattr__
        set_(self, "task", task)
        set_(self, "size", parse_model_size(self.size) if Knob.SIZE in knobs
             else DEFAULTS[Knob.SIZE])
        set_(self, "seed", _int("seed", self.seed, 0, 2**63 - 1))
        if task is Task.GENERATE:
            set_(self, "outputs", canonical_outputs(self.outputs))
        else:
            set_(self, "outputs", (Modality.LULC,) if task in (Task.WATER, Task.TIM) else ())
        timesteps = _int("timesteps", self.timesteps, 1, 100) if Knob.TIMESTEPS in knobs \
            else WATER_TIMESTEPS if task is Task.WATER else 1
        set_(self, "timesteps", timesteps)
        set_(self, "seeds", _int("seeds", self.seeds, MIN_MEMBERS, MAX_MEMBERS)
             if Knob.SEEDS in knobs else DEFAULTS[Knob.SEEDS])
        checkpoint = str(self.checkpoint or "").strip() or None
        if task is Task.TIM and not checkpoint:
            raise InvalidRequestError("A fine-tuned TiM run needs a checkpoint path or repo id.")
        set_(self, "checkpoint", checkpoint if task is Task.TIM else None)
        if task is Task.GEOLOCATE:
            self._geolocation_fields()
        else:
            for name in ("condition", "source_run"):
                set_(self, name, None)
            set_(self, "prompt", ())
            set_(self, "samples", DEFAULTS[Knob.SAMPLES])
            set_(self, "temperature", DEFAULTS[Knob.TEMPERATURE])
            set_(self, "top_p", DEFAULTS[Knob.TOP_P])
        needs_scene = task is not Task.GEOLOCATE or self.condition is Condition.SCENE
        if needs_scene:
            if not self.scene_items:
                raise InvalidRequestError("No scene chosen: search and pick a scene first.")
            if self.aoi is None:
                raise InvalidRequestError("No AOI: draw or upload one on the Search page.")
        else:
            set_(self, "scene_items", ())
            set_(self, "aoi", None)
        set_(self, "scene_items", tuple(dict(i) for i in self.scene_items))
        scene_id = str(self.scene_items[0].get("id", "unknown")) if self.scene_items else ""
        set_(self, "scene_id", scene_id)

    def _geolocation_fields(self) -> None:
        set_ = object.__setattr__
        try:
            condition = Condition(str(self.condition or ""))
        except ValueError as err:
            raise InvalidRequestError(
                f"A geolocation needs a condition from {[c.value for c in Condition]}, "
                f"got {self.condition!r}."
            ) from err
        set_(self, "condition", condition)
        set_(self, "samples", _int("samples", self.samples, 1, 1024))
        set_(self, "temperature", round(_float("temperature", self.temperature, 1e-3, 10.0), 6))
        set_(self, "top_p", round(_float("top_p", self.top_p, 0.0, 1.0), 6))
        if condition is Condition.RUN_LULC and not self.source_run:
            raise InvalidRequestError("Pick the run whose land cover conditions the geolocation.")
        set_(self, "source_run", self.source_run if condition is Condition.RUN_LULC else None)
        set_(self, "prompt", _prompt(self.prompt) if condition is Condition.PROMPT else ())

    @property
    def info(self) -> TaskInfo:
        """The task's row of :data:`TASKS`."""
        return TASKS[self.task]

    def params(self) -> dict[str, Any]:
        """The parameters that decide the result, defaults explicit (part of the run key).

        Only the knobs of the task are present; ``extent`` says outputs cover the AOI polygon
        (runs stored before clipping covered its bounding box and must not answer now).
        ``seeds`` is present from 2 on: one seed is the plain run, the same bytes as runs
        stored before ensembles existed, which keep answering it.
        """
        knobs = self.info.knobs
        params: dict[str, Any] = {"seed": self.seed}
        if self.task is not Task.GEOLOCATE:
            params["extent"] = "aoi"
        if Knob.SIZE in knobs:
            params["size"] = self.size.value
        if Knob.TIMESTEPS in knobs:
            params["timesteps"] = self.timesteps
        if Knob.OUTPUTS in knobs:
            params["outputs"] = sorted(m.value for m in self.outputs)
        if Knob.SEEDS in knobs and self.seeds > 1:
            params["seeds"] = self.seeds
        if self.checkpoint:
            params["checkpoint"] = self.checkpoint
        if self.task is Task.GEOLOCATE:
            params |= {"condition": str(self.condition), "samples": self.samples,
                       "temperature": self.temperature, "top_p": self.top_p}
            if self.source_run:
                params["source_run"] = self.source_run
            if self.prompt:
                params["prompt"] = [f"{c}={s:g}" for c, s in self.prompt]
        return params

    @property
    def model_name(self) -> str:
        """The model that runs the job (part of the run key)."""
        if self.task is Task.TIM:
            return f"fine-tuned TiM checkpoint {self.checkpoint}"
        return f"terramind_v1_{self.size.value}_generate"

    def key(self, weights: str) -> str:
        """A content key of the request under a weights source (the run id for run tasks)."""
        if self.info.stores_run:
            return RunRequest(scene_id=self.scene_id, aoi=self.aoi, task=self.task.value,
                              params=self.params(), model=self.model_name,
                              weights=weights).key
        text = json.dumps({"task": self.task.value, "scene_id": self.scene_id,
                           "aoi": self.aoi.geometry if self.aoi else None,
                           "params": self.params(), "model": self.model_name,
                           "weights": weights}, sort_keys=True, separators=(",", ":"))
        return "g" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:15]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what a job record persists)."""
        return {
            "task": self.task.value, "scene_items": list(self.scene_items),
            "aoi": self.aoi.geometry if self.aoi else None,
            "outputs": [m.value for m in self.outputs], "size": self.size.value,
            "timesteps": self.timesteps, "seed": self.seed, "seeds": self.seeds,
            "checkpoint": self.checkpoint,
            "condition": str(self.condition) if self.condition else None,
            "source_run": self.source_run, "prompt": [list(p) for p in self.prompt],
            "samples": self.samples, "temperature": self.temperature, "top_p": self.top_p,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """Inverse of :meth:`to_dict`."""
        task = parse_task(data["task"])
        outputs = data.get("outputs") or DEFAULTS[Knob.OUTPUTS]
        return cls(
            task=task, scene_items=tuple(data.get("scene_items") or ()),
            aoi=AOI(data["aoi"]) if data.get("aoi") else None,
            outputs=tuple(Modality(o) for o in outputs) if task is Task.GENERATE
            else (Modality.LULC,),
            size=data.get("size", ModelSize.BASE), timesteps=data.get("timesteps", 10),
            seed=data.get("seed", 0), seeds=data.get("seeds", 1),
            checkpoint=data.get("checkpoint"),
            condition=data.get("condition"), source_run=data.get("source_run"),
            prompt=tuple(tuple(p) for p in data.get("prompt") or ()),  # type: ignore[misc]
            samples=data.get("samples", 64), temperature=data.get("temperature", 1.0),
            top_p=data.get("top_p", 0.8),
        )

    def describe(self) -> str:
        """One line for the queue: task, outputs/size, scene."""
        parts = [self.info.label]
        if Knob.OUTPUTS in self.info.knobs:
            parts.append(",".join(m.value for m in self.outputs))
        if Knob.SIZE in self.info.knobs:
            parts.append(self.size.value)
        if self.seeds > 1:
            parts.append(f"{self.seeds} seeds")
        if self.scene_id:
            parts.append(self.scene_id)
        return " · ".join(parts)
