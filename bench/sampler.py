"""Benchmark: terratorch's top-p filter (two sorts) against ours (one sort), same logits.

Prints the best of ``--repeat`` timings of one filter call on ``[rows, vocab]`` logits — one
decoding step of a batch (8 chips × 196 tokens, the 15360-token vocabulary of S1GRD/DEM/NDVI)
— and checks the two masks are identical. Never asserts.

Usage::

    python bench/sampler.py --rows 1568 --vocab 15360 --repeat 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    """Time both filters and print the ratio."""
    import torch
    from terratorch.models.backbones.terramind.model.generate import GenerationSampler

    from inference.sampler import top_k_top_p_filtering

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8 * 196)
    parser.add_argument("--vocab", type=int, default=15360)
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0)
    ns = parser.parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    sampler = GenerationSampler(torch.nn.Identity())
    logits = 3 * torch.randn(ns.rows, ns.vocab, generator=torch.Generator().manual_seed(0))
    best = {}
    for name, fn in (("terratorch", sampler.top_k_top_p_filtering),
                     ("ours", lambda x, k, p: top_k_top_p_filtering(sampler, x, k, p))):
        times = []
        for _ in range(ns.repeat):
            x = logits.clone()
            start = time.perf_counter()
            out = fn(x, 0, ns.top_p)
            times.append(time.perf_counter() - start)
        best[name] = (min(times), torch.isinf(out))
    same = torch.equal(best["terratorch"][1], best["ours"][1])
    print(f"top-p filter, [{ns.rows}, {ns.vocab}] logits, top_p={ns.top_p}, "
          f"{torch.get_num_threads()} threads, best of {ns.repeat}")
    for name, (seconds, _) in best.items():
        print(f"{name:<11} {seconds * 1000:8.1f} ms")
    print(f"ours/terratorch {best['ours'][0] / best['terratorch'][0]:.2f}, identical masks: {same}")


if __name__ == "__main__":
    main()
