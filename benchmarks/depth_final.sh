#!/usr/bin/env bash
# Test sets, once, for the default chosen on validation (issue 11): the depth-budget ranker ARTIFACT at the
# machine's dtype (auto) and in float32, the previous default, ICR and BM25, and on DL19 also the same heads at
# full depth in float32 and the previous default in float32; DL19 (43 q) and SciFact test (first SCIFACT_LIMIT q), with paired comparisons.
# usage: benchmarks/depth_final.sh ARTIFACT PREVIOUS_ARTIFACT   env: DATA, OUT (runs/depth/final), SCIFACT_LIMIT
set -euo pipefail
cd "$(dirname "$0")/.."
ARTIFACT=${1:?usage: benchmarks/depth_final.sh ARTIFACT PREVIOUS_ARTIFACT}
PREVIOUS=${2:?usage: benchmarks/depth_final.sh ARTIFACT PREVIOUS_ARTIFACT}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/depth/final}
SCIFACT_LIMIT=${SCIFACT_LIMIT:-100}
hr() { .venv/bin/headrank "$@"; }
for dataset in dl19 scifact; do
  limit=(); [ "$dataset" = scifact ] && limit=(--limit "$SCIFACT_LIMIT")
  common=(--data-dir "$DATA" --dataset "$dataset" --top-k 20 --quiet "${limit[@]}")
  run() { local name=$1; shift; [ -f "$OUT/$dataset/$name/metrics.json" ] || flock /tmp/headrank-cpu.lock .venv/bin/headrank eval "${common[@]}" "$@" --out "$OUT/$dataset/$name"; }
  run bm25 --method bm25
  run default --method headrank --artifact "$ARTIFACT"
  run default-float32 --method headrank --artifact "$ARTIFACT" --dtype float32
  run previous --method headrank --artifact "$PREVIOUS"
  run icr --method icr
  if [ "$dataset" = dl19 ]; then  # the dtype and depth references, on DL19 only (SciFact's prompts cost 3x)
    run previous-float32 --method headrank --artifact "$PREVIOUS" --dtype float32
    run default-float32-full-depth --method headrank --artifact "$ARTIFACT" --dtype float32 --no-truncate
  fi
  for base in bm25 icr previous default-float32; do
    hr compare "$OUT/$dataset/$base" $(ls -d "$OUT/$dataset"/*/ | grep -v "/$base/$") --data-dir "$DATA" \
      --dataset "$dataset" --out "$OUT/$dataset/compare-vs-$base.json" | tee "$OUT/$dataset/compare-vs-$base.md"
  done
done
