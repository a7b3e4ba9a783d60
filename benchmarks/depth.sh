#!/usr/bin/env bash
# Depth as a measured trade-off, end to end (issue 11): full-depth head tables (all heads, float32) of the
# training data and the test sets, the Pareto over depth budgets with the default chosen on validation, the
# chosen recipe of the training experiment (docs/training.md) at that depth, and its validation comparison.
# usage: benchmarks/depth.sh   env: DATA (../shared/data), OUT (runs/depth), SCIFACT_TRAIN (200), SCIFACT (100)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/depth}
hr() { .venv/bin/headrank "$@"; }
for spec in "dl21:" "scifact-train:${SCIFACT_TRAIN:-200}" "dl19:" "scifact:${SCIFACT:-100}"; do
  name=${spec%%:*}; limit=${spec#*:}
  [ -f "$OUT/tables/$name/head_table.npz" ] || hr select-heads --data-dir "$DATA" --dataset "$name" \
    ${limit:+--limit "$limit"} --dtype float32 --top-k 20 --out "$OUT/tables/$name" --quiet
done
tables=(--train "dl21=$OUT/tables/dl21/head_table.npz" --train "scifact-train=$OUT/tables/scifact-train/head_table.npz"
        --test "dl19=$OUT/tables/dl19/head_table.npz" --test "scifact=$OUT/tables/scifact/head_table.npz")
flock /tmp/headrank-cpu.lock .venv/bin/python benchmarks/depth_pareto.py --data-dir "$DATA" "${tables[@]}" \
  --time-queries 5 --out "$OUT/pareto"
depth=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['meta']['chosen'].split()[-1])" \
  "$OUT/pareto/depth_pareto.json")
[ -f "$OUT/trained-d$depth/headrank.json" ] || hr train --data-dir "$DATA" --heads "$OUT/pareto/heads.json" \
  --dataset dl21 --epochs 10 --lists-per-step 4 --lr 3e-3 --eval-every 10 --train-sample 16 --loss dpo \
  --train-order inference --cache-dir runs/prefix-cache --out "$OUT/trained-d$depth"
.venv/bin/python benchmarks/validation_compare.py "$OUT/trained-d$depth" --data-dir "$DATA" \
  --cache-dir runs/prefix-cache --out "$OUT/validation_compare.md"
