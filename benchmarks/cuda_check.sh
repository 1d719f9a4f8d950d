#!/usr/bin/env bash
# One-call GPU check for a session with a lent CUDA machine (well under 8 minutes, no network):
#   1. set up: editable install of this repo against the torch already installed there;
#   2. the CUDA tests (every test with "cuda" in its name; they skip on machines without CUDA);
#   3. a short fusion-stage run at MOSI size with a BERT-base-sized text encoder built from
#      BertConfig() (random weights, nothing downloaded), bf16 autocast: forward, DMMSA objective
#      with GDWG, backward, AdamW; prints samples/s and peak memory (torch.cuda.max_memory_allocated),
#      then the same in float32 for comparison.
#
# Usage:   bash benchmarks/cuda_check.sh            (on the GPU machine)
#          bash benchmarks/cuda_check.sh --cpu      (tiny sizes on CPU: checks the script here)
# Exit status: 0 when every step passed, else the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
MODE=cuda
[ "${1:-}" = "--cpu" ] && MODE=cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # works even if the install below fails
failed=0
step() { echo; echo "=== $* ($(date +%T))"; }

step "setup"
if [ "$MODE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || failed=$((failed + 1))
  "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . \
    || echo "pip install -e . failed; using PYTHONPATH=$PWD"
fi
"$PY" - <<'EOF' || failed=$((failed + 1))
import torch, mtobjectives
print("torch", torch.__version__, "| cuda available:", torch.cuda.is_available(),
      "| device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "-",
      "| mtobjectives", mtobjectives.__version__)
EOF

step "CUDA tests (pytest -k cuda)"
# Files whose optional imports are missing there fail to collect; the others still run.
timeout 180 "$PY" -m pytest -q -rs -k cuda --continue-on-collection-errors \
  -o addopts="-p no:cacheprovider" tests || failed=$((failed + 1))

if [ "$MODE" = cuda ]; then
  BENCH=(--device cuda --warmup 3 --repeats 10 --steps 30)
else
  BENCH=(--device cpu --small --warmup 1 --repeats 2 --steps 2 --threads 1)
fi
step "fusion-stage run, bf16 autocast, BERT-base-sized text encoder from config"
timeout 150 "$PY" benchmarks/bench_objective.py "${BENCH[@]}" --bf16 || failed=$((failed + 1))
step "same in float32"
timeout 90 "$PY" benchmarks/bench_objective.py "${BENCH[@]}" || failed=$((failed + 1))

step "done: $failed failed step(s)"
exit "$failed"
