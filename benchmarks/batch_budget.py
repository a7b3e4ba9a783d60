"""Batch budgets on real lists: seconds per query of `rank_batch` at each --max-batch-tokens, timed interleaved
chunk by chunk, and each budget's scores against one prompt per pass (largest difference relative to the list's
largest score, identical rankings). The CPU default is chosen on DL21 (training data); DL19 checks agreement.

    flock /tmp/headrank-cpu.lock .venv/bin/python -m benchmarks.batch_budget --data-dir ../shared/data \\
        --dataset dl21 --budgets 1,4096,8192,16384 --out docs/benchmark/batching
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from headrank.artifact import DEFAULT_ARTIFACT
from headrank.data import default_data_dir
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import format_table, machine
from headrank.ranker import HeadRanker


def measure(ranker: HeadRanker, requests: list, budgets: list[int], chunk: int) -> list[dict]:
    rankers = {b: ranker.variant(max_batch_tokens=b) for b in budgets}
    rankers[budgets[0]].rank_batch(requests[:1], progress=False)  # warm-up
    seconds = dict.fromkeys(budgets, 0.0)
    results: dict[int, list] = {b: [] for b in budgets}
    for start in range(0, len(requests), chunk):
        part = requests[start : start + chunk]
        for budget, r in rankers.items():
            begin = time.perf_counter()
            results[budget] += r.rank_batch(part, progress=False, chunk=chunk)
            seconds[budget] += time.perf_counter() - begin
    reference = results[1]
    rows = []
    for budget in budgets:
        worst, same = 0.0, 0
        for a, b in zip(reference, results[budget]):
            score_a = {x.doc_id: x.score for x in a}
            largest = max(abs(v) for v in score_a.values())
            worst = max(worst, max(abs(score_a[x.doc_id] - x.score) for x in b) / largest)
            same += [x.doc_id for x in a] == [x.doc_id for x in b]
        rows.append(
            {
                "max_batch_tokens": budget,
                "s/query": seconds[budget] / len(requests),
                "time / one prompt per pass": seconds[budget] / seconds[1],
                "max rel. score diff": f"{worst:.1e}",
                "identical rankings": f"{same}/{len(requests)}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="dl21")
    parser.add_argument("--artifact", default=str(DEFAULT_ARTIFACT))
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--queries", type=int, default=0, help="the first N judged queries (0: all)")
    parser.add_argument("--budgets", default="1,4096,8192,16384")
    parser.add_argument("--chunk", type=int, default=8, help="queries per timed rank_batch call")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    budgets = sorted({1, *(int(b) for b in args.budgets.split(","))})
    data = load_dataset(args.dataset, default_data_dir(args.data_dir))
    lists = data.judged()[: args.queries or None]
    requests = [(lst.query, lst.head(args.top_k).documents(), lst.docids()[: args.top_k]) for lst in lists]
    ranker = HeadRanker.from_artifact(args.artifact, dtype=args.dtype)
    rows = measure(ranker, requests, budgets, args.chunk)
    command = " ".join(["python -m benchmarks.batch_budget", *(argv if argv is not None else sys.argv[1:])])
    footer = f"{machine()} | dtype {ranker.backbone.precision.dtype} | {command}"
    text = f"## {args.dataset}, top-{args.top_k}, {len(requests)} queries\n\n" + format_table(rows, list(rows[0]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.dataset}-{ranker.backbone.precision.dtype}"
    (out / f"{stem}.md").write_text(text + f"\n\n{footer}\n")
    (out / f"{stem}.json").write_text(json.dumps({"rows": rows, "machine": footer}, indent=1) + "\n")
    print(text + f"\n\n{footer}")


if __name__ == "__main__":
    main()
