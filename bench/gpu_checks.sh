#!/usr/bin/env bash
# Every GPU check of the project in one go, for a session on a CUDA host (issue 19):
#   bench/gpu_checks.sh [OUTDIR]        (from the repository root; PYTHON=.venv/bin/python by default)
# 1. the device: nvidia-smi, torch and CUDA versions;
# 2. the `gpu` tests (tests/test_gpu.py): fused vs custom parity on CUDA in float32 (atol 1e-4,
#    rtol 1e-3), a run on the GPU with no flags (result.json device = cuda...), a local sweep of two
#    runs sharing one GPU, one DDP run on two GPUs when there are two; skips say why;
# 3. the CUDA benchmark tables: bench.benchmarks.cells --device cuda (every cell vs torch.nn, fwd+bwd)
#    at the README's size (B64 T100 H256) and a larger one (B256 T500 H512), and the packing benchmark;
# 4. one adding run end to end on the GPU and the same on the CPU, wall times side by side.
# Everything it prints is also written under OUTDIR (default gpu_checks_out/). About 5-8 minutes.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-gpu_checks_out}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
export PYTHONPATH=$PWD RNNBENCH_GPU_TESTS=1 WANDB_MODE=disabled
step() { echo; echo "=== $1"; }
{
  step "device"
  nvidia-smi || echo "nvidia-smi: not found"
  "$PY" -c "import torch; n = torch.cuda.device_count(); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'devices', n, [torch.cuda.get_device_name(i) for i in range(n)])"

  step "gpu tests"
  timeout 900 "$PY" -m pytest tests/test_gpu.py -m gpu -rs -q -p no:cacheprovider
  echo "pytest rc=$?"

  step "cells --device cuda (B64 T100 H256)"
  timeout 600 "$PY" -m bench.benchmarks.cells --device cuda --repeats 7 --warmup 3
  step "cells --device cuda (B256 T500 H512)"
  timeout 600 "$PY" -m bench.benchmarks.cells --device cuda --batch 256 --T 500 --hidden 512 --repeats 5 --warmup 2
  step "packing benchmark (bench.benchmarks.packed; its runs take trainer.accelerator=auto, so the GPU if they go through bench.train/bench.packed)"
  timeout 600 "$PY" -m bench.benchmarks.packed || echo "bench.benchmarks.packed rc=$?"

  step "one run end to end: GPU (no flags) vs CPU"
  for acc in auto cpu; do
    t0=$(date +%s.%N)
    timeout 600 "$PY" -m bench.cli train task=adding task.T=100 model.hidden_size=128 trainer.max_steps=300 \
      trainer.val_every=100 trainer.accelerator=$acc --store "$OUT/store_$acc" --wandb disabled
    echo "accelerator=$acc: $(echo "$(date +%s.%N) - $t0" | bc) s wall"
  done
  grep -H '"device"\|"wall_time_s"' "$OUT"/store_*/runs/*/result.json
} 2>&1 | tee "$OUT/gpu_checks.log"
