"""Benchmark: resident memory of the app's server process through a scripted session.

One fresh process per mode plays what a new user does, with the app's own functions (the
ones the pages and the job worker call) and untrained tiny weights, on a seeded S2L2A-like
window passed as the loaded scene (no catalog, no network):

1. three tiny LULC generations (seeds 1-3), one tiny S1GRD generation (1 step),
2. a zero-shot water run, a geolocation of the scene (16 samples),
3. the Layers page for every run: rasters read, each layer rendered to its PNG and its
   statistics computed, through the page's own byte-bounded cache,
4. the model manager cleared (as when Streamlit's caches are released).

The process's RSS is printed after each step, with the models held, the layer cache's size
and how many built models are still alive (weak references: an unloaded model must be gone).

Modes:

* ``bounded`` — the defaults of :mod:`app.settings`: ``TERRALENS_MAX_MODELS=1``,
  ``TERRALENS_LAYER_CACHE_MB=1024``, ``TERRALENS_MALLOC_ARENAS=2``, ``malloc_trim`` after
  every job (:func:`app.memory.trim_heap`);
* ``unbounded`` — what the server did before: three models kept, no arena cap, no trim,
  the layer cache effectively unbounded.

Usage::

    python bench/memory.py --pixels 448 --modes bounded,unbounded
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PIXEL_M = 10.0
MODES = {
    "bounded": {},
    "unbounded": {"TERRALENS_MAX_MODELS": "3", "TERRALENS_LAYER_CACHE_MB": "1000000"},
}


def _scene(pixels: int) -> tuple[Any, dict[str, Any], Any]:
    """A seeded S2L2A-like window (UTM 33N), its STAC Item stub and its AOI (the window)."""
    import numpy as np
    import rioxarray  # noqa: F401
    import xarray as xr
    from pyproj import Transformer

    from app.aoi import AOI
    from inference.modalities import S2L2A_BANDS

    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(pixels), np.arange(pixels), indexing="ij")
    bands = [900 + 120 * i + 600 * np.sin(rng.uniform(0.005, 0.03) * xx
                                          + rng.uniform(0.005, 0.03) * yy)
             for i in range(len(S2L2A_BANDS))]
    x0, y0 = 500_000.0, 4_986_000.0
    da = xr.DataArray(
        np.stack(bands).astype("float32"), dims=("band", "y", "x"),
        coords={"band": list(S2L2A_BANDS), "y": y0 - PIXEL_M * (np.arange(pixels) + 0.5),
                "x": x0 + PIXEL_M * (np.arange(pixels) + 0.5)},
        attrs={"scene_id": "bench-scene", "offset_applied": 0, "modality": "S2L2A",
               "collection": "sentinel-2-l2a"},
    ).rio.write_crs("EPSG:32633").rio.write_transform()
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    inset = 2 * PIXEL_M  # an AOI just inside the window
    west, south = to_lonlat.transform(x0 + inset, y0 - pixels * PIXEL_M + inset)
    east, north = to_lonlat.transform(x0 + pixels * PIXEL_M - inset, y0 - inset)
    item = {"id": "bench-scene", "collection": "sentinel-2-l2a", "properties": {}}
    return da, item, AOI.from_bbox(west, south, east, north)


def _session(mode: str, pixels: int, queue: Any) -> None:
    """Child process: the scripted session, RSS after each step."""
    import gc
    import os
    import weakref

    os.environ.update({"TERRALENS_WEIGHTS": "untrained", "TERRALENS_DEVICE": "cpu",
                       "TERRALENS_DATA_DIR": tempfile.mkdtemp(prefix="terralens-mem-"),
                       **MODES[mode]})
    import app.pipeline as pipeline
    from app.layers import display_layers_for, layer_statistics, render_png
    from app.memory import BytesLRU, limit_arenas, rss_mb, trim_heap
    from app.model_manager import ModelManager, load_model
    from app.runs import RunStore
    from app.settings import load_settings
    from app.tasks import Condition, JobSpec, Task
    from app.ui.layers_view import LAYER_CACHE_ENTRIES, MAP_MAX_SIZE, run_cache_key
    from inference.modalities import Modality

    settings = load_settings()
    if mode == "bounded":
        limit_arenas(settings.malloc_arenas)
    else:
        pipeline.trim_heap = lambda: False  # type: ignore[assignment]  # the old server
    alive: list[weakref.ref[Any]] = []

    def tracked_loader(key: Any) -> Any:
        model = load_model(key)
        alive.append(weakref.ref(model.module))
        return model

    models = ModelManager(tracked_loader, capacity=settings.max_models)
    store = RunStore(settings.runs_dir)
    cache: BytesLRU[Any] = BytesLRU(int(settings.layer_cache_mb * 2**20),
                                    max_entries=LAYER_CACHE_ENTRIES)
    scene, item, aoi = _scene(pixels)
    runs: list[Any] = []
    rows: list[dict[str, Any]] = []

    def step(name: str, seconds: float) -> None:
        gc.collect()
        rows.append({"step": name, "seconds": seconds, "rss_mb": rss_mb(),
                     "models": len(models.loaded()), "cache_mb": cache.bytes / 2**20,
                     "alive": sum(ref() is not None for ref in alive)})

    def job(name: str, spec: JobSpec) -> None:
        start = time.perf_counter()
        outcome = pipeline.execute(spec, settings=settings, store=store, models=models,
                                   scene=scene)
        if outcome.run is not None:
            runs.append(outcome.run)
        step(name, time.perf_counter() - start)

    step("start (app imported)", 0.0)
    start = time.perf_counter()
    from inference.terratorch_import import import_terratorch

    import_terratorch()
    step("terratorch imported", time.perf_counter() - start)
    common = {"scene_items": (item,), "aoi": aoi, "size": "tiny"}
    for seed in (1, 2, 3):
        job(f"generate LULC seed {seed}", JobSpec(task=Task.GENERATE, outputs=(Modality.LULC,),
                                                  timesteps=1, seed=seed, **common))
    job("generate S1GRD", JobSpec(task=Task.GENERATE, outputs=(Modality.S1GRD,), timesteps=1,
                                  seed=1, **common))
    job("water", JobSpec(task=Task.WATER, seed=1, **common))
    job("geolocate scene", JobSpec(task=Task.GEOLOCATE, condition=Condition.SCENE, samples=16,
                                   seed=1, **common))
    start = time.perf_counter()
    for run in runs:
        key = run_cache_key(run)
        rasters = cache.get_or_create(("layers", key), run.load_layers)
        for layer in display_layers_for(rasters):
            da = rasters[layer.source]
            cache.get_or_create(("png", key, layer.name),
                                lambda da=da, layer=layer: render_png(da, layer,
                                                                      max_size=MAP_MAX_SIZE))
            cache.get_or_create(("stats", key, layer.name),
                                lambda da=da, layer=layer: layer_statistics(da, layer))
    if mode == "bounded":
        trim_heap()
    step(f"Layers page of {len(runs)} runs", time.perf_counter() - start)
    start = time.perf_counter()
    models.clear()
    if mode == "bounded":
        trim_heap()
    step("models cleared", time.perf_counter() - start)
    queue.put(rows)


def main(argv: list[str] | None = None) -> None:
    """Run the scripted session once per mode, each in a fresh process; print the RSS table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=int, default=448, help="scene window side (10 m px)")
    parser.add_argument("--modes", default="bounded,unbounded")
    ns = parser.parse_args(argv)
    ctx = mp.get_context("spawn")
    for mode in ns.modes.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(target=_session, args=(mode, ns.pixels, queue))
        proc.start()
        rows = queue.get()
        proc.join()
        print(f"\nmode {mode}: {ns.pixels}x{ns.pixels} px scene, tiny, untrained, CPU")
        print(f"{'step':<28} {'s':>6} {'RSS MB':>8} {'models':>6} {'cache MB':>9} "
              f"{'alive':>5}")
        for r in rows:
            print(f"{r['step']:<28} {r['seconds']:6.1f} {r['rss_mb']:8.0f} {r['models']:6d} "
                  f"{r['cache_mb']:9.1f} {r['alive']:5d}", flush=True)


if __name__ == "__main__":
    main()
