#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct's shipped head set and its test-set rows (issue 33, items 3 and 4).
#   select: full-depth head tables (all heads, bfloat16) of DL21 and the first SCIFACT_TRAIN judged SciFact-train
#           queries, then depth_pareto.py: heads chosen on the training side of `headrank train`'s split, the depth
#           budget chosen on the held-out validation side (the shallowest within 0.005 of the unbudgeted selection).
#   test:   DL19 (43 q) and the first SCIFACT_LIMIT SciFact test queries, top-20, once: BM25, the embedded default,
#           the 1.5B with its shipped heads (`--model GGUF`, no --heads), ICR on the 1.5B; paired comparisons.
# Every model run goes through the shared heavy-job lock (the Pareto only reads the tables: seconds); a run whose output exists is skipped (resume).
# usage: benchmarks/models_1p5b.sh select|test   env: DATA, OUT (runs/models-1p5b), MODEL, SCIFACT_TRAIN (60),
#        SCIFACT_LIMIT (50), LOCK (/work/notes/heavy.lock), PY (.venv/bin/python), RUNS, DATASETS (test: the runs to make)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/models-1p5b}
MODEL=${MODEL:-${HEADRANK_CACHE:-$HOME/.cache/headrank}/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf}
LOCK=${LOCK:-/work/notes/heavy.lock}
PY=${PY:-.venv/bin/python}
hr() { PYTHONPATH=$PWD "$PY" -m headrank.cli "$@"; }
heavy() { PYTHONPATH=$PWD flock "$LOCK" "$PY" "$@"; }

select_stage() {
  for spec in "dl21:" "scifact-train:${SCIFACT_TRAIN:-60}"; do
    name=${spec%%:*}; limit=${spec#*:}
    [ -f "$OUT/tables/$name/head_table.npz" ] || heavy -m headrank.cli select-heads --model "$MODEL" \
      --data-dir "$DATA" --dataset "$name" ${limit:+--limit "$limit"} --dtype bfloat16 --top-k 20 \
      --out "$OUT/tables/$name"
  done
  PYTHONPATH=$PWD "$PY" benchmarks/depth_pareto.py --data-dir "$DATA" --train "dl21=$OUT/tables/dl21/head_table.npz" \
    --train "scifact-train=$OUT/tables/scifact-train/head_table.npz" --time-queries 0 \
    --out "$OUT/pareto"
}

test_stage() {
  for dataset in ${DATASETS:-dl19 scifact}; do
    limit=(); [ "$dataset" = scifact ] && limit=(--limit "${SCIFACT_LIMIT:-50}")
    common=(--data-dir "$DATA" --dataset "$dataset" --top-k 20 --quiet "${limit[@]}")
    for name in ${RUNS:-bm25 1p5b-heads default 1p5b-icr}; do
      case $name in
        bm25) flags=(--method bm25) ;;
        default) flags=() ;;
        1p5b-heads) flags=(--model "$MODEL") ;;
        1p5b-icr) flags=(--model "$MODEL" --method icr) ;;
      esac
      [ -f "$OUT/$dataset/$name/metrics.json" ] || heavy -m headrank.cli eval "${common[@]}" "${flags[@]}" \
        --out "$OUT/$dataset/$name"
    done
    runs=$(ls -d "$OUT/$dataset"/*/ | sed 's:/$::')
    for base in bm25 1p5b-heads; do
      [ -d "$OUT/$dataset/$base" ] || continue
      hr compare "$OUT/$dataset/$base" $(echo "$runs" | grep -v "/$base$") --data-dir "$DATA" --dataset "$dataset" \
        --out "$OUT/$dataset/compare-vs-$base.json" | tee "$OUT/$dataset/compare-vs-$base.md"
    done
  done
}

case ${1:-} in
  select) select_stage ;;
  test) test_stage ;;
  *) echo "usage: $0 select|test" >&2; exit 2 ;;
esac
