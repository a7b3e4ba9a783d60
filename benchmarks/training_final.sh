#!/usr/bin/env bash
# Test sets, once, for the configuration chosen on validation (issue 9): DL19 (43 q) and SciFact test (the
# first SCIFACT_LIMIT queries), with paired comparisons against BM25, ICR, QRHead, the untrained selected heads
# and the MiniLM bi-encoder. usage: benchmarks/training_final.sh ARTIFACT   env: DATA, OUT (runs/final), SCIFACT_LIMIT
set -euo pipefail
cd "$(dirname "$0")/.."
ARTIFACT=${1:?usage: benchmarks/training_final.sh ARTIFACT}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/final}
SCIFACT_LIMIT=${SCIFACT_LIMIT:-100}
DATASETS=${DATASETS:-dl19 scifact}
hr() { .venv/bin/headrank "$@"; }
for dataset in $DATASETS; do
  limit=(); [ "$dataset" = scifact ] && limit=(--limit "$SCIFACT_LIMIT")
  common=(--data-dir "$DATA" --dataset "$dataset" --top-k 20 --quiet "${limit[@]}")
  run() { local name=$1; shift; [ -f "$OUT/$dataset/$name/metrics.json" ] || hr eval "${common[@]}" "$@" --out "$OUT/$dataset/$name"; }
  run bm25 --method bm25
  run dense --method dense
  run trained --method headrank --artifact "$ARTIFACT"
  run selected --method selected --heads docs/headrank/heads-selected.json
  run qrhead --method qrhead --heads docs/headrank/heads-qrhead.json
  run icr --method icr
  for base in bm25 icr qrhead selected dense; do
    hr compare "$OUT/$dataset/$base" "$OUT/$dataset"/{trained,selected,qrhead,icr,dense,bm25} --data-dir "$DATA" \
      --dataset "$dataset" --out "$OUT/$dataset/compare-vs-$base.json" | tee "$OUT/$dataset/compare-vs-$base.md"
  done
done
