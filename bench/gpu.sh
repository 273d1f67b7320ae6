#!/usr/bin/env bash
# GPU checks and benchmark, for one CUDA machine (< 6 minutes on an H100-class GPU).
#
#   bash bench/gpu.sh [PYTHON]        # default PYTHON: .venv/bin/python
#
# 1. the CUDA tests (pinned copies, bf16 tolerance, generation on the GPU) and the CPU speed
#    tests, on this machine;
# 2. cold start of base + 4 tokenizers from a local hub-layout folder (written once);
# 3. ours vs the notebook path, base, S1GRD+LULC+NDVI+DEM, 10 steps, 1000 x 1000 px:
#    float32 reference, then the reference under our autocast (like for like).
# Numbers print to stdout; paste them into bench/README.md ("GPU").
set -euo pipefail
PY=${1:-.venv/bin/python}
WEIGHTS=${TERRALENS_BENCH_WEIGHTS:-/tmp/terralens-bench-weights}
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv || true
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_speed.py
MAKE=()
[ -f "$WEIGHTS/TerraMind_v1_base.pt" ] || MAKE=(--make-weights)
timeout 150 "$PY" bench/coldstart.py --weights "$WEIGHTS" "${MAKE[@]}" --size base \
    --outputs S1GRD,LULC,NDVI,DEM --paths after,before --first-chip
for precision in notebook same; do
    timeout 150 "$PY" bench/generate.py --device cuda --size base --timesteps 10 \
        --pixels 1000 --batch-size 32 --sets S1GRD+LULC+NDVI+DEM --ref-precision "$precision"
done
