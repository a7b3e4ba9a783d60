"""How to merge a list split into windows, chosen on training data: every list's windows are scored once, then
each strategy ranks from those scores, running the extra forward passes it needs itself.

    PYTHONPATH=$PWD python benchmarks/long_lists.py --data-dir ../shared/data --dataset dl21 \\
        --top-k 100 --max-length 2400 --out runs/long-lists/dl21

Strategies: `scaled` (each window's scores as they are: the old merge), `tournament-m` (each window's top m, or as
many whole rounds as fit for `fill`, go on to a final window whose ranking is put above the rest, the others keep
the scaled order below), `sliding` (RankGPT's windows of `--slide` passages, `--slide // 2` apart, from the bottom
of the first-stage list up, each window one scoring of ours reordering its passages), and `first-window` (only the
window holding the first-stage top is reranked, the other windows follow in first-stage order: the prior kept).
Writes OUT/STRATEGY/run.trec (for `headrank compare`) and OUT/table.md: nDCG@10, prompts and tokens per query,
and the paired test against BM25 and against `scaled`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headrank.artifact import DEFAULT_ARTIFACT
from headrank.data import run_from_ranking, scored, write_run
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import format_table, machine
from headrank.evaluation.significance import compare_runs
from headrank.ranker import HeadRanker
from headrank.results import best_first


def scaled_orders(ranker, lists, windows, scores) -> list[list[int]]:
    return [
        best_first(ranker.combine(len(lst.candidates), [(p.order, s) for p, s in zip(ps, ss)]))
        for lst, ps, ss in zip(lists, windows, scores)
    ]


def tournament(ranker: HeadRanker, lists, windows, scores) -> tuple[list[list[int]], list[int], list[int]]:
    """Orders, extra prompts and extra tokens per list of the tournament, from the cached first round."""
    rounds = [[[(p.order, s) for p, s in zip(ps, ss)]] for ps, ss in zip(windows, scores)]
    extra_prompts, extra_tokens = [0] * len(lists), [0] * len(lists)
    pending = [ranker.next_round(ps, ss) for ps, ss in zip(windows, scores)]
    while any(pending):
        scored_ = iter(ranker.score_many([p for ps in pending for p in ps]))
        for i, ps in enumerate(pending):
            ss = [next(scored_) for _ in ps]
            if ps:
                rounds[i].append([(p.order, s) for p, s in zip(ps, ss)])
                extra_prompts[i] += len(ps)
                extra_tokens[i] += sum(ranker.prompt_tokens(p) for p in ps)
                pending[i] = ranker.next_round(ps, ss)
    orders = [best_first(ranker.combine(len(lst.candidates), *r)) for lst, r in zip(lists, rounds)]
    return orders, extra_prompts, extra_tokens


def sliding(ranker: HeadRanker, lists, size: int) -> tuple[list[list[int]], list[int], list[int]]:
    """RankGPT's sliding windows from the bottom up, each window scored by us and reordered by its scores; the
    windows of every list at one step are scored together."""
    step = max(1, size // 2)
    orders = [list(range(len(lst.candidates))) for lst in lists]
    prompts_, tokens = [0] * len(lists), [0] * len(lists)
    docs = [lst.documents() for lst in lists]
    starts = [list(range(max(0, len(lst.candidates) - size), -1, -step)) for lst in lists]
    for depth in range(max(map(len, starts))):
        jobs = []
        for i, st in enumerate(starts):
            if depth < len(st):
                chosen = orders[i][st[depth] : st[depth] + size]
                jobs.append((i, st[depth], chosen, ranker.prompts(lists[i].query, [docs[i][d] for d in chosen])))
        flat = [p for *_, ps in jobs for p in ps]
        scored_ = iter(ranker.score_many(flat))
        for i, start, chosen, ps in jobs:
            local = ranker.combine(len(chosen), [(p.order, next(scored_)) for p in ps])
            orders[i][start : start + len(chosen)] = [chosen[j] for j in best_first(local)]
            prompts_[i] += len(ps)
            tokens[i] += sum(ranker.prompt_tokens(p) for p in ps)
    return orders, prompts_, tokens


def first_window(windows) -> list[list[int]]:
    """The window with the first-stage best passage reranked by its own scores, the rest in first-stage order."""
    out = []
    for ps, ss in windows:
        top = next(k for k, p in enumerate(ps) if 0 in p.order)
        local = ss[top].scores.tolist()
        head = [ps[top].order[j] for j in best_first(local)]
        reranked = set(head)
        out.append(head + [d for d in range(sum(len(p.order) for p in ps)) if d not in reranked])
    return out


def order_results(ranker: HeadRanker, lists, orders: list[str]) -> dict:
    """The same lists ranked with each input order (`random:SEED` shuffles the passages' positions)."""
    results = {}
    for spec in orders:
        order, _, seed = spec.partition(":")
        variant = ranker.variant(order=order, seed=int(seed or 0))
        ranked = variant.rank_batch([(lst.query, lst.documents()) for lst in lists], progress=False)
        results[spec] = (
            [[r.index for r in x] for x in ranked],
            [x.prompts for x in ranked],
            [x.tokens for x in ranked],
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
    parser.add_argument("--leaders", default="1,2,3,5,fill", help="tournament leaders per window to try")
    parser.add_argument("--slide", type=int, default=20, help="sliding window size in passages (0: skip)")
    parser.add_argument("--orders", help="instead of merges: these input orders, e.g. reverse,random:0,random:1")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    data = load_dataset(args.dataset, args.data_dir)
    lists = [lst.head(args.top_k) for lst in data.judged()[: args.limit]]
    ranker = HeadRanker.from_artifact(args.artifact, max_length=args.max_length)
    if args.orders:
        results = {"bm25": ([list(range(len(lst.candidates))) for lst in lists], [0] * len(lists), [0] * len(lists))}
        report(args, data, lists, ranker, results | order_results(ranker, lists, args.orders.split(",")), "reverse")
        return
    windows = [ranker.prompts(lst.query, lst.documents()) for lst in lists]
    flat = iter(ranker.score_many([p for ps in windows for p in ps]))
    scores = [[next(flat) for _ in ps] for ps in windows]
    base_prompts = [len(ps) for ps in windows]
    base_tokens = [sum(ranker.prompt_tokens(p) for p in ps) for ps in windows]

    results = {"bm25": ([list(range(len(lst.candidates))) for lst in lists], [0] * len(lists), [0] * len(lists))}
    results["scaled"] = (scaled_orders(ranker, lists, windows, scores), base_prompts, base_tokens)
    results["first-window"] = (first_window(list(zip(windows, scores))), base_prompts, base_tokens)
    for m in args.leaders.split(","):
        variant = ranker.variant(leaders=None if m == "fill" else int(m))
        orders, extra_p, extra_t = tournament(variant, lists, windows, scores)
        results[f"tournament-{m}"] = (
            orders,
            [a + b for a, b in zip(base_prompts, extra_p)],
            [a + b for a, b in zip(base_tokens, extra_t)],
        )
    if args.slide:
        results[f"sliding-{args.slide}"] = sliding(ranker, lists, args.slide)
    report(args, data, lists, ranker, results, "scaled")


def report(args, data, lists, ranker: HeadRanker, results: dict, reference: str) -> None:
    """Runs under OUT/NAME, and the table: nDCG@10, cost, paired tests against BM25 and `reference`."""
    runs = {}
    for name, (orders, _, _) in results.items():
        ids = [lst.docids() for lst in lists]
        run = run_from_ranking([(lst.qid, [i[d] for d in o]) for lst, i, o in zip(lists, ids, orders)])
        (args.out / name).mkdir(parents=True, exist_ok=True)
        write_run(args.out / name / "run.trec", run, tag=name)
        runs[name] = scored(run)
    vs_bm25 = {c.system: c for c in compare_runs(runs["bm25"], runs, data.qrels)}
    vs_ref = {c.system: c for c in compare_runs(runs[reference], runs, data.qrels)}
    rows = []
    for name, (_, prompts_, tokens) in results.items():
        a, b = vs_bm25[name], vs_ref[name]
        rows.append(
            {
                "strategy": name,
                "nDCG@10": round(a.mean, 4),
                "prompts/query": round(sum(prompts_) / len(lists), 2),
                "tokens/query": round(sum(tokens) / len(lists)),
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
