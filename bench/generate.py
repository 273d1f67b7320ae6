"""Benchmark: TerraLens ``generate()`` against the IBM notebooks' tiled-inference path.

For each output set, the same TerraMind model (same size, weights, timesteps, seed) generates
the same S2L2A window along two paths:

* OURS — :func:`inference.generate.generate` (chips of 224 px, 32 px blended overlap, batched,
  de-standardised outputs on the input grid, LULC softmax + argmax);
* REFERENCE — what the TerraMind notebooks do: ``terratorch.tasks.tiled_inference.
  tiled_inference(model_forward, x, crop=224, stride=192, batch_size=16)`` with
  ``model_forward`` concatenating the generated modalities.

With ``--aoi corridor`` the AOI is a river-like diagonal band across the window instead of
the whole window: OURS gets it as ``aoi_mask`` (as the app passes the drawn polygon) and runs only
the chips it touches; the notebook path has no notion of an AOI polygon and tiles the bounding
box. ``--ref-precision notebook`` (default) runs the reference in float32 as the notebooks do;
``same`` gives it OURS' autocast (bf16/fp16 on CUDA; nothing changes on CPU).

Both paths run alternately on one loaded model in a child process per output set. Printed per
path: wall time of the generation alone (model build and one warm-up batch excluded; best of
``--repeat``), time per km² of AOI (10 m pixels), CPU time of the process (all threads; less
sensitive than wall time to other processes sharing the cores), RSS of the process with the
model loaded, peak RSS growth during the run (lowest of ``--repeat``: what is left of the heap
after the other path's run makes single readings noisy), CUDA peak memory when on a GPU, and
OURS/REFERENCE ratios. Never asserts.

Usage::

    python -m bench.generate --size tiny --timesteps 1 --pixels 448 --device cpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SETS = ("LULC", "S1GRD", "S1GRD+LULC+NDVI+DEM")
PIXEL_M = 10.0


def _aoi_mask(pixels: int, aoi: str) -> Any:
    """``None`` for the whole window, else a diagonal band one sixth of the window wide."""
    import numpy as np

    if aoi == "box":
        return None
    yy, xx = np.mgrid[0:pixels, 0:pixels]
    return np.abs(yy - xx) < pixels / 12


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _window(pixels: int) -> Any:
    """A seeded, smooth S2L2A-like window (the bench must not depend on ../shared)."""
    import numpy as np
    import rioxarray  # noqa: F401
    import xarray as xr

    from inference.modalities import S2L2A_BANDS

    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(pixels), np.arange(pixels), indexing="ij")
    bands = [
        900 + 120 * i + 600 * np.sin(rng.uniform(0.005, 0.03) * xx + rng.uniform(0.005, 0.03) * yy)
        for i in range(len(S2L2A_BANDS))
    ]
    da = xr.DataArray(
        np.stack(bands).astype("float32"),
        dims=("band", "y", "x"),
        coords={
            "band": list(S2L2A_BANDS),
            "y": 4_986_000 - PIXEL_M * (np.arange(pixels) + 0.5),
            "x": 500_000 + PIXEL_M * (np.arange(pixels) + 0.5),
        },
        attrs={"scene_id": "bench", "offset_applied": 0},
    )
    return da.rio.write_crs("EPSG:32633")


class _RssSampler:
    """Samples this process's RSS every few ms; ``peak`` is the highest seen (MB)."""

    def __init__(self, period_s: float = 0.005) -> None:
        self.period_s = period_s
        self.peak = _rss_now_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, _rss_now_mb())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_now_mb())


def _measure(outputs: list[str], args: dict[str, Any], queue: Any) -> None:
    """Child process: build the model once, then alternate OURS and REFERENCE runs on it.

    Alternating (ours, ref, then ref, ours...) on one loaded model spreads load from other
    processes and warm-up over both paths; the best time of each is kept. Memory is the RSS
    growth over the loaded model during each run (sampled every 5 ms), CUDA the peak allocated.
    """
    import gc
    import random

    import torch

    from inference.build import load_generation_model

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    model = load_generation_model(
        args["size"], outputs, weights=args["weights"], device=args["device"],
        timesteps=args["timesteps"],
    )
    s2 = _window(args["pixels"])
    aoi_mask = _aoi_mask(args["pixels"], args["aoi"])
    _warm_up(model, s2, outputs, args)
    cuda = model.device.type == "cuda"
    results: dict[str, dict[str, Any]] = {}
    for repeat in range(args["repeat"]):
        for path in ("ours", "ref") if repeat % 2 == 0 else ("ref", "ours"):
            gc.collect()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            chips: list[int] = []
            random.seed(0)
            torch.manual_seed(0)
            base = _rss_now_mb()
            with _RssSampler() as rss:
                start, cpu_start = time.perf_counter(), time.process_time()
                _one_run(path, model, s2, aoi_mask, outputs, args, chips)
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                cpu_seconds = time.process_time() - cpu_start
            best = results.setdefault(
                path, {"seconds": float("inf"), "cpu_seconds": float("inf"),
                       "run_rss_mb": float("inf")}
            )
            best["seconds"] = min(best["seconds"], seconds)
            best["cpu_seconds"] = min(best["cpu_seconds"], cpu_seconds)
            best["run_rss_mb"] = min(best["run_rss_mb"], rss.peak - base)
            best["model_rss_mb"] = base
            best["chips"] = chips[-1] if path == "ours" else sum(chips)
            peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
            best["cuda_peak_mb"] = max(best.get("cuda_peak_mb") or 0, peak_cuda or 0) or None
            best["device"] = str(model.device)
    queue.put(results)


def _warm_up(model: Any, s2: Any, outputs: list[str], args: dict[str, Any]) -> None:
    """One unmeasured model call on a full batch of chips, so that neither path pays for the
    process's first allocations (thread pools, oneDNN primitive caches, heap growth)."""
    import numpy as np

    from inference.generate import ChipGenerator, GenerationTask

    task = GenerationTask(outputs=tuple(outputs), timesteps=args["timesteps"],
                          batch_size=args["batch_size"])
    chip = np.asarray(s2.values[:, :224, :224], dtype=np.float32)
    batch = np.repeat(chip[None], max(args["batch_size"], 16), axis=0)
    ChipGenerator(model, task)(batch, list(range(len(batch))))


def _one_run(
    path: str,
    model: Any,
    s2: Any,
    aoi_mask: Any,
    outputs: list[str],
    args: dict[str, Any],
    chips: list[int],
) -> None:

    from inference.generate import GenerationTask, generate

    if path == "ours":
        task = GenerationTask(
            outputs=tuple(outputs), timesteps=args["timesteps"], seed=0,
            batch_size=args["batch_size"],
        )
        generate(model, s2, task, progress=lambda done, total: chips.append(total),
                 aoi_mask=aoi_mask)
        return
    from terratorch.tasks.tiled_inference import tiled_inference

    from inference import sampler

    # The notebook path runs terratorch's own code: its two-sort top-p filter too.
    sampler.uninstall(model.module)
    try:
        _reference_run(model, s2, outputs, args, chips, tiled_inference)
    finally:
        if model.speed.fast_sampler:
            sampler.install(model.module)


def _reference_run(
    model: Any, s2: Any, outputs: list[str], args: dict[str, Any], chips: list[int],
    tiled_inference: Any,
) -> None:
    import torch

    x = torch.from_numpy(s2.values[None]).to(model.device)

    def model_forward(batch: torch.Tensor) -> torch.Tensor:
        chips.append(len(batch))
        generated = model.module(batch, timesteps=args["timesteps"])
        return torch.concat([generated[m] for m in outputs], dim=1)

    with torch.no_grad():
        if model.autocast is not None and args["ref_precision"] == "same":
            with torch.autocast(model.device.type, dtype=model.autocast):
                tiled_inference(model_forward, x, crop=224, stride=192, batch_size=16)
        else:
            tiled_inference(model_forward, x, crop=224, stride=192, batch_size=16)


def _run_child(outputs: list[str], args: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(outputs, args, queue))
    proc.start()
    result = queue.get()  # before join: a full queue would block the child's exit
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"bench for {outputs} failed (exit code {proc.exitcode})")
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run every output set through both paths, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--timesteps", type=int, default=1)
    parser.add_argument("--pixels", type=int, default=448, help="side of the square window")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default="untrained")
    parser.add_argument("--batch-size", type=int, default=16, help="OURS chips per call")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path; best is kept")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--aoi", default="box", choices=["box", "corridor"],
                        help="whole window, or a diagonal band (OURS runs only its chips)")
    parser.add_argument("--ref-precision", default="notebook", choices=["notebook", "same"],
                        help="reference in float32 (as the notebooks) or with OURS' autocast")
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS), help="e.g. LULC,S1GRD+DEM")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    ns = parser.parse_args(argv)
    args = vars(ns) | {"json": None}
    km2 = (ns.pixels * PIXEL_M / 1000) ** 2
    mask = _aoi_mask(ns.pixels, ns.aoi)
    aoi_km2 = km2 if mask is None else float(mask.mean()) * km2
    rows = []
    print(
        f"TerraMind {ns.size}, {ns.timesteps} step(s), {ns.pixels}x{ns.pixels} px "
        f"({km2:.2f} km²), AOI {ns.aoi} ({aoi_km2:.2f} km²), weights={ns.weights}, "
        f"device={ns.device}, ours batch={ns.batch_size}, reference precision "
        f"{ns.ref_precision}, best of {ns.repeat}; s/km² is per km² of AOI"
    )
    header = (
        f"{'outputs':<22}{'path':<6}{'chips':>6}{'time s':>9}{'s/km²':>9}{'CPU s':>8}"
        f"{'model RSS MB':>14}"
        f"{'run +RSS MB':>13}{'CUDA MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for output_set in ns.sets.split(","):
        outputs = output_set.split("+")
        result = _run_child(outputs, args)
        for path, r in result.items():
            cuda = f"{r['cuda_peak_mb']:.0f}" if r["cuda_peak_mb"] is not None else "-"
            print(
                f"{output_set:<22}{path:<6}{r['chips']:>6}{r['seconds']:>9.1f}"
                f"{r['seconds'] / aoi_km2:>9.2f}{r['cpu_seconds']:>8.1f}"
                f"{r['model_rss_mb']:>14.0f}{r['run_rss_mb']:>13.0f}"
                f"{cuda:>9}"
            )
        ratio_t = result["ours"]["seconds"] / result["ref"]["seconds"]
        ratio_c = result["ours"]["cpu_seconds"] / result["ref"]["cpu_seconds"]
        ratio_m = result["ours"]["run_rss_mb"] / max(result["ref"]["run_rss_mb"], 1.0)
        rates = ", ".join(f"{p} {r['chips'] / r['seconds']:.2f} chips/s" for p, r in result.items())
        print(
            f"{output_set:<22}{'ratio':<6} ours/ref: time {ratio_t:.2f}, CPU time {ratio_c:.2f}, "
            f"run +RSS {ratio_m:.2f}; {rates}"
        )
        flat = {f"{p}_{k}": v for p, r in result.items() for k, v in r.items()}
        rows.append({"outputs": output_set, **flat})
    if ns.json:
        ns.json.write_text(json.dumps({"args": args, "km2": km2, "aoi_km2": aoi_km2,
                                       "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
