"""How to rank a list split into windows, chosen on training data: each merge of the library (headrank/rounds.py)
ranks the same lists, the windows they share scored once.

    PYTHONPATH=$PWD python benchmarks/long_lists.py --data-dir ../shared/data --dataset scifact-train \\
        --top-k 100 --max-length 2400 --limit 60 --out runs/long-lists/scifact-train

Merges (`--merges`): `scaled` (each window's scores as they are: the first merge), `tournament` (each window's
leaders go on to a final window whose ranking is put above the rest), `sliding` (RankGPT's windows of
`--slide-size` passages, `--slide-step` apart, from the bottom of the first-stage list up, each one pass of ours
reordering its positions). Writes OUT/MERGE/run.trec (for `headrank compare`) and OUT/table.md: nDCG@10, prompts,
tokens and seconds per query (a merge's seconds leave out the windows an earlier merge scored), and the paired test
against BM25 and against `--reference`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from headrank.artifact import DEFAULT_ARTIFACT
from headrank.data import run_from_ranking, scored, write_run
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import format_table, machine
from headrank.evaluation.significance import compare_runs
from headrank.ranker import HeadRanker, RankerConfig
from headrank.results import best_first


def merge_results(ranker: HeadRanker, lists, merges: list[str]) -> dict:
    """Per merge: (orders, prompts, tokens, seconds) per list, from `score_requests` with a memo that they share."""
    memo: dict = {}
    requests = [(lst.query, lst.documents()) for lst in lists]
    results = {}
    for merge in merges:
        start = time.perf_counter()
        scored_lists = ranker.variant(merge=merge).score_requests(requests, memo)
        seconds = (time.perf_counter() - start) / len(lists)
        results[merge] = (
            [best_first(s) for s in scored_lists],
            [s.prompts for s in scored_lists],
            [s.tokens for s in scored_lists],
            [seconds] * len(lists),
        )
        print(f"{merge}: {seconds:.2f} s/query", flush=True)
    return results


def order_results(ranker: HeadRanker, lists, orders: list[str]) -> dict:
    """The same lists ranked with each input order (`random:SEED` shuffles the passages' positions)."""
    results = {}
    for spec in orders:
        order, _, seed = spec.partition(":")
        variant = ranker.variant(order=order, seed=int(seed or 0))
        start = time.perf_counter()
        ranked = variant.rank_batch([(lst.query, lst.documents()) for lst in lists], progress=False)
        seconds = (time.perf_counter() - start) / len(lists)
        results[spec] = (
            [[r.index for r in x] for x in ranked],
            [x.prompts for x in ranked],
            [x.tokens for x in ranked],
            [seconds] * len(lists),
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="the first N judged queries")
    parser.add_argument("--artifact", default=str(DEFAULT_ARTIFACT))
    parser.add_argument("--merges", default="scaled,tournament,sliding", help="merges to compare, in this order")
    parser.add_argument("--reference", default="tournament", help="the merge each other one is tested against")
    parser.add_argument("--slide-size", type=int, default=RankerConfig.slide_size)
    parser.add_argument("--slide-step", type=int, default=RankerConfig.slide_step)
    parser.add_argument("--orders", help="instead of merges: these input orders, e.g. reverse,random:0,random:1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    data = load_dataset(args.dataset, args.data_dir)
    lists = [lst.head(args.top_k) for lst in data.judged()[: args.limit]]
    ranker = HeadRanker.from_artifact(
        args.artifact, max_length=args.max_length, slide_size=args.slide_size, slide_step=args.slide_step
    )
    first_stage = [list(range(len(lst.candidates))) for lst in lists]
    results = {"bm25": (first_stage, [0] * len(lists), [0] * len(lists), [0.0] * len(lists))}
    if args.orders:
        report(args, data, lists, ranker, results | order_results(ranker, lists, args.orders.split(",")), "reverse")
    else:
        report(
            args, data, lists, ranker, results | merge_results(ranker, lists, args.merges.split(",")), args.reference
        )


def report(args, data, lists, ranker: HeadRanker, results: dict, reference: str) -> None:
    """Runs under OUT/NAME, and the table: nDCG@10, cost, paired tests against BM25 and `reference`."""
    runs = {}
    for name, (orders, *_) in results.items():
        ids = [lst.docids() for lst in lists]
        run = run_from_ranking([(lst.qid, [i[d] for d in o]) for lst, i, o in zip(lists, ids, orders)])
        (args.out / name).mkdir(parents=True, exist_ok=True)
        write_run(args.out / name / "run.trec", run, tag=name)
        runs[name] = scored(run)
    vs_bm25 = {c.system: c for c in compare_runs(runs["bm25"], runs, data.qrels)}
    vs_ref = {c.system: c for c in compare_runs(runs[reference], runs, data.qrels)}
    rows = []
    for name, (_, prompts_, tokens, seconds) in results.items():
        a, b = vs_bm25[name], vs_ref[name]
        rows.append(
            {
                "strategy": name,
                "nDCG@10": round(a.mean, 4),
                "prompts/query": round(sum(prompts_) / len(lists), 2),
                "tokens/query": round(sum(tokens) / len(lists)),
                "s/query": round(sum(seconds) / len(lists), 2),
                "vs BM25 (W/L, p)": f"{a.delta:+.4f} ({a.wins}/{a.losses}, {a.p_value:.3g})",
                f"vs {reference} (W/L, p)": f"{b.delta:+.4f} ({b.wins}/{b.losses}, {b.p_value:.3g})",
            }
        )
    windows = sum(len(ranker.prompts(lst.query, lst.documents())) for lst in lists) / len(lists)
    header = (
        f"{args.dataset}, {len(lists)} judged queries, top-{args.top_k}, max_length {ranker.max_length} "
        f"({windows:.2f} windows/query), artifact {Path(args.artifact).name}, {machine()}\n\n"
    )
    table = header + format_table(rows, list(rows[0]))
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(table)


if __name__ == "__main__":
    main()
