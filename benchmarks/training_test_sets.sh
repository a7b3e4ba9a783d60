#!/usr/bin/env bash
# Issue 18's test-set step, run once for the configuration chosen on validation: SciFact test (all 300 queries,
# in-domain for SciFact-train) and DL19 (in-domain for DL21), BM25 top-20 reranked by the chosen artifact, its
# untrained heads (the d15 artifact: same heads, prompt and scoring, no adapter), ICR and the MiniLM
# bi-encoder; then the paired tests of the chosen artifact against each baseline that ran. Each eval is skipped
# when its run exists, so the script resumes.
# usage: benchmarks/training_test_sets.sh [CHOSEN_ARTIFACT]
# env: DATA (../shared/data), OUT (runs/t18/test), DATASETS ("dl19 scifact"), METHODS ("bm25 dense untrained
#      trained icr": ICR, the dearest with 30 layers, last)
# Without CHOSEN_ARTIFACT only the baselines run (they do not depend on the choice, so they can run first).
set -euo pipefail
cd "$(dirname "$0")/.."
CHOSEN=${1:-}
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/t18/test}
DATASETS=${DATASETS:-dl19 scifact}
METHODS=${METHODS:-bm25 dense untrained trained icr}
declare -A METHOD=([bm25]="--method bm25" [dense]="--method dense" [icr]="--method icr"
  [untrained]="--method headrank --artifact headrank/artifacts/smollm2-135m-d15"
  [trained]="--method headrank --artifact $CHOSEN")
for dataset in $DATASETS; do
  for name in $METHODS; do
    [ "$name" = trained ] && [ -z "$CHOSEN" ] && continue
    [ -f "$OUT/$dataset/$name/run.trec" ] && continue
    # shellcheck disable=SC2086
    .venv/bin/headrank eval --data-dir "$DATA" --dataset "$dataset" --top-k 20 ${METHOD[$name]} \
      --out "$OUT/$dataset/$name" --quiet
  done
  [ -n "$CHOSEN" ] || continue
  for baseline in untrained bm25 icr dense; do
    if [ ! -f "$OUT/$dataset/$baseline/run.trec" ]; then
      echo "$dataset: no $baseline run, so no trained-vs-$baseline test" >&2
      continue
    fi
    .venv/bin/headrank compare --data-dir "$DATA" --dataset "$dataset" "$OUT/$dataset/$baseline" \
      "$OUT/$dataset/trained" --out "$OUT/$dataset/trained-vs-$baseline.json"
  done
done
