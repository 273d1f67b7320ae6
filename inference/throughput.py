"""Run-time estimates from throughput measured here: seconds per chip and model-load seconds.

A :class:`ThroughputStore` is a small JSON file beside the runs (``<runs_dir>/.throughput.json``)
holding exponential averages, refined after every finished run:

* seconds per chip (model call, blending and writing the run) for each :class:`WorkKey` — task,
  model size, outputs, diffusion timesteps, chip size and device on this machine;
* seconds to load each model (by its identity string) on this machine;
* per device, the ratio of measured to prior seconds per chip, so that settings not measured yet
  on a device are estimated from the fixed prior (:func:`inference.generate.estimate`) scaled
  by what this device showed.

Before any measurement the prior is all there is, and :class:`Estimate` says so. Every process
sharing a run store (the app, ``terralens`` commands) reads and refines the same file; writes
are atomic (a temporary file renamed over it) under an advisory lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: File name of the store inside the run store's folder (hidden: not a run).
THROUGHPUT_FILE = ".throughput.json"
#: Weight of the newest measurement in the exponential averages.
ALPHA = 0.5
#: Prior model-load seconds: a fixed part, per output tokenizer, and importing terratorch once
#: per process (CPU, 2 cores, ../shared/FACTS.md: build 16-43 s, import 7-17 s).
LOAD_PRIOR_S = 10.0
LOAD_PRIOR_PER_OUTPUT_S = 6.0
IMPORT_PRIOR_S = 12.0

_LOCK = threading.Lock()


def this_machine() -> str:
    """The host name measurements are kept under."""
    return socket.gethostname() or "localhost"


def device_id(device: str) -> str:
    """``"<host>/<device>"``: where a measurement was made (``cpu``, ``cuda:0``...)."""
    return f"{this_machine()}/{(device or 'cpu').strip().lower()}"


@dataclass(frozen=True)
class WorkKey:
    """What a run's throughput depends on.

    Attributes:
        task: Task value (``generation``, ``water``, ``tim``).
        size: Model size.
        outputs: Output modalities (order does not matter: sorted).
        timesteps: Diffusion steps (1 for tasks without diffusion).
        chip: Chip side in pixels.
        device: :func:`device_id` of where it runs.
    """

    task: str
    size: str
    outputs: tuple[str, ...]
    timesteps: int
    chip: int
    device: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", tuple(sorted(str(o) for o in self.outputs)))

    @property
    def id(self) -> str:
        """The key's string form in the JSON file."""
        return "|".join([self.task, self.size, ",".join(self.outputs), str(self.timesteps),
                         str(self.chip), self.device])


@dataclass(frozen=True)
class Measured:
    """An exponential average and how many runs it is made of."""

    value: float
    runs: int


@dataclass(frozen=True)
class Estimate:
    """How long a run should take.

    Attributes:
        chips: Chips to compute.
        run_s: Seconds for the chips and writing the run.
        load_s: Seconds to load the model first (0 when it is loaded).
        source: ``measured``, ``scaled`` (prior × this device's measured ratio) or ``prior``.
        runs: Runs behind a measured figure (0 for the prior).
        load_source: ``measured``, ``prior`` or ``loaded``.
    """

    chips: int
    run_s: float
    load_s: float
    source: str
    runs: int = 0
    load_source: str = "loaded"

    @property
    def total_s(self) -> float:
        """Loading plus running."""
        return self.load_s + self.run_s

    def describe(self) -> str:
        """Where the figures come from, in a few words."""
        runs = f"{self.runs} run{'s' if self.runs != 1 else ''}"
        how = {"measured": f"measured here over {runs} of these settings",
               "scaled": f"fixed table scaled by {runs} measured on this device",
               }.get(self.source, "fixed table: nothing measured on this device yet")
        return how


def _ema(old: dict[str, Any] | None, value: float) -> dict[str, Any]:
    if not old:
        return {"value": float(value), "runs": 1}
    return {"value": ALPHA * float(value) + (1 - ALPHA) * float(old["value"]),
            "runs": int(old.get("runs", 1)) + 1}


class ThroughputStore:
    """Measured throughput, kept in one JSON file.

    Args:
        path: The JSON file (created on the first measurement).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def beside(cls, runs_dir: str | Path) -> ThroughputStore:
        """The store of a run store folder."""
        return cls(Path(runs_dir) / THROUGHPUT_FILE)

    # -- reading --------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable throughput file %s: %s", self.path, err)
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _measured(entry: Any) -> Measured | None:
        if not isinstance(entry, dict):
            return None
        try:
            value, runs = float(entry["value"]), int(entry.get("runs", 1))
        except (KeyError, TypeError, ValueError):
            return None
        return Measured(value, runs) if value > 0 and runs > 0 else None

    def seconds_per_chip(self, key: WorkKey) -> Measured | None:
        """The measured seconds per chip for exactly these settings, if any."""
        return self._measured(self._load().get("per_chip", {}).get(key.id))

    def device_ratio(self, device: str) -> Measured | None:
        """Measured ÷ prior seconds per chip on ``device`` (a :func:`device_id`)."""
        return self._measured(self._load().get("ratio", {}).get(device))

    def load_seconds(self, model_id: str) -> Measured | None:
        """The measured seconds to load a model (:func:`model_id` string) here."""
        return self._measured(self._load().get("load", {}).get(model_id))

    # -- refining -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        with _LOCK, self._file_lock():
            data = self._load()
            yield data
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: the atomic rename still holds
            yield
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f"{self.path.name}.lock"), "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def record_run(self, key: WorkKey, *, chips: int, seconds: float,
                   prior_per_chip: float | None = None) -> None:
        """Refine the averages with a finished run (``chips`` computed in ``seconds``)."""
        if chips <= 0 or seconds <= 0:
            return
        per_chip = seconds / chips
        try:
            with self._update() as data:
                table = data.setdefault("per_chip", {})
                table[key.id] = _ema(table.get(key.id), per_chip)
                if prior_per_chip and prior_per_chip > 0:
                    ratios = data.setdefault("ratio", {})
                    ratios[key.device] = _ema(ratios.get(key.device), per_chip / prior_per_chip)
        except OSError as err:  # a read-only store must not fail the run
            logger.warning("cannot record throughput in %s: %s", self.path, err)

    def record_load(self, model: str, seconds: float) -> None:
        """Refine the average load time of ``model`` (a :func:`model_id` string)."""
        if seconds <= 0:
            return
        try:
            with self._update() as data:
                table = data.setdefault("load", {})
                table[model] = _ema(table.get(model), seconds)
        except OSError as err:
            logger.warning("cannot record load time in %s: %s", self.path, err)


def model_id(kind: str, size: str, outputs: tuple[str, ...], weights: str, device: str) -> str:
    """A model's identity for load times: kind, size, outputs (sorted), weights kind, device."""
    from inference.weights import weights_kind

    return "|".join([kind, size, ",".join(sorted(outputs)), weights_kind(weights),
                     device_id(device)])


def load_prior_s(outputs: int, *, terratorch_imported: bool) -> float:
    """Seconds to load a model before anything was measured here."""
    return (LOAD_PRIOR_S + LOAD_PRIOR_PER_OUTPUT_S * max(1, outputs)
            + (0.0 if terratorch_imported else IMPORT_PRIOR_S))


def estimate_run(store: ThroughputStore | None, key: WorkKey, *, chips: int, prior_s: float,
                 model: str | None, outputs: int = 1, terratorch_imported: bool = True,
                 ) -> Estimate:
    """The run time of ``chips`` chips under ``key``, plus loading ``model`` unless it is loaded.

    Args:
        store: Measurements (``None``: the prior only).
        key: The run's settings.
        chips: Chips to compute.
        prior_s: The fixed table's seconds for those chips (the prior).
        model: The model's :func:`model_id`, or ``None`` when it is loaded already.
        outputs: Output tokenizers the model loads (for the load prior).
        terratorch_imported: Whether this process imported terratorch already.
    """
    measured = store.seconds_per_chip(key) if store is not None else None
    ratio = store.device_ratio(key.device) if store is not None else None
    if measured is not None:
        run_s, source, runs = measured.value * chips, "measured", measured.runs
    elif ratio is not None:
        run_s, source, runs = prior_s * ratio.value, "scaled", ratio.runs
    else:
        run_s, source, runs = prior_s, "prior", 0
    load_s, load_source = 0.0, "loaded"
    if model is not None:
        load = store.load_seconds(model) if store is not None else None
        if load is not None:
            load_s, load_source = load.value, "measured"
        else:
            load_s = load_prior_s(outputs, terratorch_imported=terratorch_imported)
            load_source = "prior"
    return Estimate(chips=chips, run_s=run_s, load_s=load_s, source=source, runs=runs,
                    load_source=load_source)


__all__ = ["THROUGHPUT_FILE", "Estimate", "Measured", "ThroughputStore", "WorkKey",
           "device_id", "estimate_run", "load_prior_s", "model_id"]
