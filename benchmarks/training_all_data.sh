#!/usr/bin/env bash
# The decisive training experiment at 135M (issue 18): every usable DL21 and SciFact-train list, 20% of each
# dataset's queries held out (150 validation lists), the default's 16 heads in 15 layers, BM25 top-20, in the
# inference order; three recipes, each with its curves; resumable (checkpoint every --eval-every steps).
# usage: benchmarks/training_all_data.sh [NAME ...]   (default: regularised paper overfit)
# env: DATA (../shared/data), OUT (runs/t18), HEADS (docs/benchmark/depth/heads-d15.json)
# Encode the shared passage passes first (or let the first run do it): python -m benchmarks.warm_prefix_cache
#   --heads "$HEADS" --data-dir "$DATA" --dataset dl21 --dataset scifact-train --cache-dir runs/prefix-cache
#   --cache-dtype float16 --out unused
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/t18}
HEADS=${HEADS:-docs/benchmark/depth/heads-d15.json}
COMMON=(--data-dir "$DATA" --heads "$HEADS" --dataset dl21 --dataset scifact-train --validation 0.2 --list-size 20
  --loss dpo --train-order inference --lists-per-step 8 --eval-every 10 --train-sample 24
  --cache-dir runs/prefix-cache --cache-dtype float16)
declare -A CONFIGS=(
  # the over-fit recipe's rate, held near the untrained order over the whole list, early-stopped on validation
  [regularised]="--lr 3e-3 --epochs 4 --warmup 0.05 --kl 1.0 --lora-dropout 0.1 --weight-decay 0.01 --patience 4"
  # the paper's reading (TrainConfig's defaults) in the inference order; early-stopped like the others, which
  # bounds the hours and keeps the same best-on-validation checkpoint
  [paper]="--lr 2e-4 --epochs 2 --patience 4"
  # the recipe that fit DL21 (3e-3, no regulariser beyond the paper's), on all the data
  [overfit]="--lr 3e-3 --epochs 4 --patience 4"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(regularised paper overfit)
source benchmarks/train_configs.sh
run_configs "${names[@]}"
