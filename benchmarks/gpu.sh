#!/usr/bin/env bash
# Issue 16's GPU table in under 7 minutes on one H100/H200 (torch and transformers preinstalled there, no network;
# nothing else is needed: the package runs from the checkout). Writes to $OUT (default runs/gpu):
#   gpu_checks.md/json   families batched = alone, no host sync in a pass, training on the device, scheduler 32 vs 1
#   qwen3-4b/throughput.md/json   top-20 and top-100: budgets, one prompt per pass, 15/36 vs 36 layers, generation
#   qwen3-8b/throughput.md        top-20 at 8B shapes
# CI runs these steps on tiny shapes in that machine's minimal stack (scripts/minimal_env.sh: torch, transformers
# 5.17, peft, accelerate and nothing else), so an import that machine lacks fails in CI, before a GPU session.
# usage: benchmarks/gpu.sh          (device tool: run with command "OUT=$OUT bash benchmarks/gpu.sh", timeout 430)
# each step has its own limit; throughput.py writes each table as it finishes, so a step cut short still reports
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
log="$OUT/log.txt"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
torch.cuda.get_device_name())" 2>&1 | tee "$log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
step() { local limit=$1; shift; echo "== $*" | tee -a "$log"; timeout "$limit" "$@" 2>&1 | tee -a "$log"; }
step 120 python -m benchmarks.gpu_checks --device cuda --out "$OUT"
step 200 python -m benchmarks.throughput --shapes qwen3-4b --device cuda --top-k 20,100 --queries 32 \
  --budgets 16384,65536,131072 --repeats 2 --generation-batch 32 --agreement 16 --out "$OUT/qwen3-4b"
step 80 python -m benchmarks.throughput --shapes qwen3-8b --device cuda --top-k 20 --queries 32 \
  --budgets 65536 --repeats 2 --generate-at "" --agreement 8 --out "$OUT/qwen3-8b"
rm -f "$OUT/qwen3-8b/throughput.json"  # at most 8 files come back from the device
