#!/usr/bin/env bash
# Reproduce the HeadRank results table: selection and training on TREC DL21, evaluation on TREC DL19 and
# SciFact test (BM25 top-20), every baseline and ablation on the same model and candidates.
# usage: benchmarks/headrank_table.sh            (DATA, OUT, MODEL, SCIFACT_LIMIT, EPOCHS override)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/table}
MODEL=${MODEL:-embedded}
SCIFACT_LIMIT=${SCIFACT_LIMIT:-100}   # SciFact test has 300 queries; the CPU default evaluates the first 100
EPOCHS=${EPOCHS:-2}
hr=.venv/bin/headrank
common=(--data-dir "$DATA" --model "$MODEL" --quiet)

# head statistics on dl21 once; selections reuse the table
$hr select-heads "${common[@]}" --dataset dl21 --k 16 --lam 0.5 --out "$OUT/select"
mkdir -p "$OUT/qrhead-heads" && cp "$OUT/select/head_table.npz" "$OUT/qrhead-heads/"
$hr select-heads --reuse --k 16 --lam 0 --out "$OUT/qrhead-heads" --quiet

train() {  # name, extra train options...
  local name=$1; shift
  [ -f "$OUT/$name/artifact/headrank.json" ] || \
    $hr train "${common[@]}" --dataset dl21 --epochs "$EPOCHS" --out "$OUT/$name/artifact" "$@"
}
train headrank --heads "$OUT/select/heads.json"
train ablation-no-entropy --heads "$OUT/qrhead-heads/heads.json"
train ablation-random-pairs --heads "$OUT/select/heads.json" --pairs random
train ablation-no-regularizer --heads "$OUT/select/heads.json" --gamma 0 --eta 0

evaluate() {  # row, dataset, eval options...
  local row=$1 dataset=$2; shift 2
  local limit=()
  [ "$dataset" = scifact ] && limit=(--limit "$SCIFACT_LIMIT")
  [ -f "$OUT/$row/$dataset/metrics.json" ] || \
    $hr eval "${common[@]}" --dataset "$dataset" --top-k 20 "${limit[@]}" --out "$OUT/$row/$dataset" "$@"
}
for dataset in dl19 scifact; do
  evaluate bm25 "$dataset" --method bm25
  evaluate icr "$dataset" --method icr
  evaluate qrhead "$dataset" --method qrhead --heads "$OUT/qrhead-heads/heads.json"
  evaluate selection-only "$dataset" --method selected --heads "$OUT/select/heads.json"
  for row in headrank ablation-no-entropy ablation-random-pairs ablation-no-regularizer; do
    evaluate "$row" "$dataset" --method headrank --artifact "$OUT/$row/artifact"
  done
  evaluate headrank-full-depth "$dataset" --method headrank --artifact "$OUT/headrank/artifact" --no-truncate
done
$hr analyze "$OUT/selection-only/dl19" "$OUT/headrank/dl19" --data-dir "$DATA" --dataset dl19 --out "$OUT/middle-zone"
.venv/bin/python benchmarks/results_table.py "$OUT"/*/*/metrics.json | tee "$OUT/table.md"
