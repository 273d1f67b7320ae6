"""Benchmark: cold start of a TerraMind generation model from a local weights folder.

Prints, for a fresh process each, the seconds from "nothing built" to "model ready" (terratorch
already imported, so its import — the same for both — is not counted) along two paths:

* BEFORE — what TerraLens did until now, and what the notebooks do: ``registry.build(...,
  pretrained=False)`` (a full random initialisation), then ``torch.load`` of every file,
  terratorch's checkpoint filter and ``load_state_dict`` (copying into the random tensors);
* AFTER — :func:`inference.build.load_generation_model`: parameters built on ``meta``, files
  memory-mapped and assigned, SHA-256 of every file recorded, each phase timed; tokenizer
  files read two at a time while the files are hashed (``load_workers=2``, the default);
* AFTER-SEQUENTIAL (``--paths ...,after-sequential``) — the same, one file after the other
  (``TERRALENS_LOAD_WORKERS=1``): what loading in parallel gains.

``--first-chip`` also times one 224² chip, 1 step, after the build (memory-mapped weights are
read from the page cache on first use; this shows nothing is merely deferred).

The weights folder (hub layout) is written once by ``--make-weights`` from a seeded untrained
model: the files have the hub's names and keys, so loading them costs what the hub's files cost.

Usage::

    python bench/coldstart.py --weights /tmp/tm-weights --make-weights --size base \
        --outputs S1GRD,LULC,NDVI,DEM --repeat 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_TOKENIZER_FILES = {
    "tok_sen1grd@224": "S1GRD", "tok_sen1rtc@224": "S1RTC", "tok_lulc@224": "LULC",
    "tok_ndvi@224": "NDVI", "tok_dem@224": "DEM", "tok_sen2l2a@224": "S2L2A",
}


def make_weights(folder: Path, size: str, outputs: list[str]) -> None:
    """Write a hub-layout weights folder from a seeded, untrained model."""
    import torch

    from inference.build import load_generation_model

    folder.mkdir(parents=True, exist_ok=True)
    model = load_generation_model(size, outputs, weights="untrained", device="cpu", timesteps=1)
    prefix = "sampler.model."
    own = {k.removeprefix(prefix): v for k, v in model.module.state_dict().items()
           if k.startswith(prefix)}
    torch.save(own, folder / f"TerraMind_v1_{size}.pt")
    for key, tok in model.module.tokenizer.items():
        torch.save(tok.state_dict(), folder / f"TerraMind_Tokenizer_{_TOKENIZER_FILES[key]}.pt")
    model.unload()


def _before(size: str, outputs: list[str], weights: str) -> dict[str, float]:
    import torch
    from terratorch.models.backbones.terramind.model import terramind_register as reg
    from terratorch.registry import FULL_MODEL_REGISTRY

    from inference.weights import required_weight_files, resolve_weight_files

    phases: dict[str, float] = {}
    start = time.perf_counter()
    files = required_weight_files(f"terramind_v1_{size}_generate", modalities=["S2L2A"],
                                  output_modalities=outputs)
    paths = resolve_weight_files(files, weights)
    module = FULL_MODEL_REGISTRY.build(
        f"terramind_v1_{size}_generate", pretrained=False, modalities=["S2L2A"],
        output_modalities=outputs, standardize=True, timesteps=1,
    )
    phases["build (random init)"] = time.perf_counter() - start
    mark = time.perf_counter()
    state = torch.load(paths["model"], map_location="cpu", weights_only=True)
    module.load_state_dict(reg.checkpoint_filter_fn_generate(state, module), strict=True)
    for key, tok in module.tokenizer.items():
        tok.load_state_dict(torch.load(paths[key], map_location="cpu", weights_only=True))
    module.eval()
    phases["load files"] = time.perf_counter() - mark
    phases["ready"] = time.perf_counter() - start
    _keep.append(module)
    return phases


_keep: list[Any] = []


def _after(size: str, outputs: list[str], weights: str, *, workers: int = 2
           ) -> dict[str, float]:
    from inference.build import load_generation_model
    from inference.speed import SpeedOptions

    speed = dataclasses.replace(SpeedOptions.from_env(), load_workers=workers)
    start = time.perf_counter()
    model = load_generation_model(size, outputs, weights=weights, device="cpu", timesteps=1,
                                  speed=speed)
    phases = dict(model.load_phases)
    phases["ready"] = time.perf_counter() - start
    _keep.append(model.module)
    return phases


def _child(path: str, args: dict[str, Any], queue: Any) -> None:
    import torch
    from terratorch.registry import FULL_MODEL_REGISTRY  # noqa: F401  (import not timed)

    if args["threads"]:
        torch.set_num_threads(args["threads"])
    outputs = args["outputs"].split(",")
    if path == "before":
        phases = _before(args["size"], outputs, str(args["weights"]))
    else:
        phases = _after(args["size"], outputs, str(args["weights"]),
                        workers=1 if path == "after-sequential" else 2)
    if args["first_chip"]:
        import random

        random.seed(0)
        torch.manual_seed(0)
        x = torch.full((1, 12, 224, 224), 1500.0)
        start = time.perf_counter()
        with torch.no_grad():
            _keep[-1]({"S2L2A": x}, timesteps=1)
        phases["first chip"] = time.perf_counter() - start
    queue.put(phases)


def _run(path: str, args: dict[str, Any]) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(path, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"{path} failed (exit code {proc.exitcode})")
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, (optionally) write the weights, time both paths."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="hub-layout folder")
    parser.add_argument("--make-weights", action="store_true", help="write it first")
    parser.add_argument("--size", default="base", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--outputs", default="S1GRD,LULC,NDVI,DEM")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per path")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--first-chip", action="store_true", help="also time one chip")
    parser.add_argument("--paths", default="before,after",
                        help="of before, after, after-sequential")
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args(argv)
    args = vars(ns) | {"weights": str(ns.weights), "json": None}
    if ns.make_weights:
        start = time.perf_counter()
        make_weights(ns.weights, ns.size, ns.outputs.split(","))
        print(f"wrote {ns.weights} in {time.perf_counter() - start:.1f} s")
    size_gb = sum(p.stat().st_size for p in ns.weights.glob("*.pt")) / 1e9
    print(f"TerraMind {ns.size} + {ns.outputs} from {ns.weights} ({size_gb:.1f} GB), "
          f"fresh process per run, terratorch import excluded")
    results: dict[str, list[dict[str, float]]] = {}
    for i in range(ns.repeat):
        paths = ns.paths.split(",")
        for path in paths if i % 2 == 0 else paths[::-1]:
            phases = _run(path, args)
            results.setdefault(path, []).append(phases)
            detail = ", ".join(f"{k} {v:.2f}" for k, v in phases.items() if k != "ready")
            print(f"{path:<16} ready {phases['ready']:6.1f} s   ({detail})", flush=True)
    best = {p: min(r["ready"] for r in rs) for p, rs in results.items()}
    print("best ready: " + ", ".join(f"{p} {t:.2f} s" for p, t in best.items()))
    if "before" in best and "after" in best:
        print(f"after/before {best['after'] / best['before']:.2f}")
    if "after-sequential" in best and "after" in best:
        print(f"after (parallel) / after-sequential {best['after'] / best['after-sequential']:.2f}")
    if ns.json:
        ns.json.write_text(json.dumps({"args": args, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
