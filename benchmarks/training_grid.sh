#!/usr/bin/env bash
# The training experiment (issue 9): loss x input order (x adapter mode) on DL21 + SciFact train, each run with
# its learning curves; every choice is read off the validation lists (20% of each dataset's queries, seeded).
# usage: benchmarks/training_grid.sh [NAME ...]   (default: the four query-span runs; see CONFIGS below)
# env: DATA (../shared/data), OUT (runs/grid), HEADS (docs/headrank/heads-selected.json), SCIFACT_LIMIT (60)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/grid}
HEADS=${HEADS:-docs/headrank/heads-selected.json}
SCIFACT_LIMIT=${SCIFACT_LIMIT:-60}
COMMON=(--data-dir "$DATA" --heads "$HEADS" --dataset dl21 --dataset scifact-train --limit "$SCIFACT_LIMIT"
  --epochs 3 --lists-per-step 4 --lr 1e-3 --beta 1 --eval-every 10 --train-sample 16 --shuffles 1
  --cache-dir runs/prefix-cache --quiet)
declare -A CONFIGS=(
  [dpo-inference]="--loss dpo --train-order inference --adapters query"
  [listwise-inference]="--loss listwise --train-order inference --adapters query"
  [dpo-random]="--loss dpo --train-order random --adapters query"
  [listwise-random]="--loss listwise --train-order random --adapters query"
  [dpo-inference-all]="--loss dpo --train-order inference --adapters all --epochs 1"
  [listwise-inference-all]="--loss listwise --train-order inference --adapters all --epochs 1"
  [dpo-inference-lr3e-4]="--loss dpo --train-order inference --adapters query --lr 3e-4"
  [listwise-inference-lr3e-4]="--loss listwise --train-order inference --adapters query --lr 3e-4"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(dpo-inference listwise-inference dpo-random listwise-random)
source benchmarks/train_configs.sh
run_configs "${names[@]}"
.venv/bin/python benchmarks/training_table.py "$OUT" | tee "$OUT/table.md"
