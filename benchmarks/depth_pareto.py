"""Depth as a measured trade-off: for each depth budget, the heads selection keeps within it (chosen on the
training side of the split), their nDCG@10 on the held-out validation queries and on the test sets, the layers
run and the seconds per query measured in one process, beside ICR. The default budget is chosen on validation
only: the shallowest whose validation nDCG@10 is within --tolerance of the unbudgeted selection's.

    benchmarks/depth_pareto.py --data-dir ../shared/data --out DIR \\
        --train dl21=T/dl21/head_table.npz --train scifact-train=T/scifact-train/head_table.npz \\
        --test dl19=T/dl19/head_table.npz --test scifact=T/scifact/head_table.npz

Head tables come from `headrank select-heads` (all heads, full depth, float32): a head set's ranking is the sum
of its heads' rows there, exactly what a ranker with those heads computes (truncation changes no kept layer), so
every budget is scored without running the model again. Only the timing runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from headrank.data import default_data_dir
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import format_table, machine
from headrank.evaluation.significance import randomization_p
from headrank.heads.headset import HeadSet
from headrank.heads.selection import HeadTable, SelectionSpec, head_stats, merge_tables, select_heads, split_table


def named_tables(specs: list[str]) -> dict[str, HeadTable]:
    """NAME=PATH pairs: each table's queries get NAME as their source."""
    tables = {}
    for item in specs:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"expected NAME=PATH, got {item!r}")
        table = HeadTable.load(path)
        table.sources = [name] * len(table.qids)
        tables[name] = table
    return tables


def first_stage_ndcg(table: HeadTable) -> np.ndarray:
    """The candidates' own order (BM25), scored like a head set."""
    from headrank.evaluation.metrics import ndcg_at

    return np.asarray(
        [ndcg_at(-np.arange(len(g), dtype=float)[None, :], g, ideal)[0] for g, ideal in zip(table.grades, table.ideal)]
    )


def source_means(table: HeadTable, per_query: np.ndarray) -> dict[str, float]:
    """The mean of a per-query measure over each source's queries."""
    sources = np.asarray([table.source_of(i) for i in range(len(table.qids))])
    return {name: float(per_query[sources == name].mean()) for name in dict.fromkeys(sources.tolist())}


def macro(table: HeadTable, per_query: np.ndarray) -> float:
    """Mean per source, then over sources (as selection weighs them)."""
    return float(np.mean(list(source_means(table, per_query).values())))


def seconds_per_query(head_sets: dict[str, HeadSet], lists: list, model: str, dtype: str) -> tuple[dict, str]:
    """(seconds per query of each head set, interleaved list by list on the same lists; the dtype they ran in
    and why)."""
    from headrank.ranker import HeadRanker

    rankers = {name: HeadRanker.from_pretrained(model, heads, dtype=dtype) for name, heads in head_sets.items()}
    spent = dict.fromkeys(rankers, 0.0)
    for ranker in rankers.values():  # first calls pay one-off setup
        ranker.score(lists[0].query, lists[0].documents()[:5])
    for lst in lists:
        for name, ranker in rankers.items():
            start = time.perf_counter()
            ranker.score(lst.query, lst.documents())
            spent[name] += time.perf_counter() - start
    precision = next(iter(rankers.values())).backbone.precision
    return {name: total / len(lists) for name, total in spent.items()}, f"{precision.dtype} ({precision.reason})"


def pareto(args, command: str) -> tuple[list[dict], dict]:
    data_dir = default_data_dir(args.data_dir)
    train_tables = named_tables(args.train)
    test_tables = named_tables(args.test)
    table = merge_tables(list(train_tables.values()))
    limits = {name: len(t.qids) for name, t in train_tables.items()}  # a table holds the first N judged queries
    train, validation = split_table(table, limits, data_dir, args.list_size, args.validation, args.seed)
    stats = head_stats(train)
    num_layers = max(layer for layer, _ in table.heads) + 1

    candidates: dict[str, HeadSet] = {"ICR (all heads)": HeadSet.of(table.heads)}
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else list(range(2, num_layers + 1))
    for budget in budgets:
        candidates[f"budget {budget}"] = select_heads(stats, args.k, args.lam, args.measure, budget)
    reference = validation.set_ndcg(select_heads(stats, args.k, args.lam, args.measure))
    reference_mean = macro(validation, reference)

    rows = []
    for name, heads in candidates.items():
        per_query = validation.set_ndcg(heads)
        mean = macro(validation, per_query)
        row = {
            "selection": name,
            "heads": heads.describe() if name != "ICR (all heads)" else "all",
            "layers run": heads.depth,
            "validation nDCG@10": mean,
            "vs unbudgeted": mean - reference_mean,
            "p": randomization_p((per_query - reference).tolist()),
        }
        row |= {f"val {source}": value for source, value in source_means(validation, per_query).items()}
        for test_name, test in test_tables.items():
            row[f"{test_name} nDCG@10"] = float(test.set_ndcg(heads).mean())
        rows.append(row)
    bm25 = {"selection": "BM25 (first stage)", "heads": "-", "layers run": 0}
    bm25["validation nDCG@10"] = macro(validation, first_stage_ndcg(validation))
    for test_name, test in test_tables.items():
        bm25[f"{test_name} nDCG@10"] = float(first_stage_ndcg(test).mean())

    budgeted = [r for r in rows if r["selection"].startswith("budget")]
    chosen = min(
        (r for r in budgeted if r["vs unbudgeted"] >= -args.tolerance), key=lambda r: (r["layers run"], r["selection"])
    )
    chosen_budget = int(chosen["selection"].split()[-1])

    timed_dtype = None
    if args.time_queries:
        lists = [lst.head(args.list_size) for lst in load_dataset(args.time_dataset, data_dir).judged()]
        unique = {}  # one ranker per distinct head set
        for name, heads in candidates.items():
            unique.setdefault(heads.describe(), (name, heads))
        seconds, timed_dtype = seconds_per_query(
            dict(unique.values()), lists[: args.time_queries], args.model, args.dtype
        )
        icr = seconds["ICR (all heads)"]
        for row, heads in zip(rows, candidates.values()):
            row["s/query"] = seconds[unique[heads.describe()][0]]
            row["time / ICR"] = row["s/query"] / icr
    meta = {
        "machine": machine(),
        "dtype of the timings": timed_dtype,
        "timed on": f"the first {args.time_queries} judged {args.time_dataset} queries, top-{args.list_size}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "train queries": dict(Counter(train.sources)),
        "validation queries": dict(Counter(validation.sources)),
        "test queries": {name: len(t.qids) for name, t in test_tables.items()},
        "selection": f"k {args.k}, lambda {args.lam}, {args.measure}",
        "rule": f"the shallowest budget within {args.tolerance} validation nDCG@10 of the unbudgeted selection",
        "chosen": chosen["selection"],
        "chosen heads": chosen["heads"],
        "bm25": bm25,
        "selection record": SelectionSpec(
            args.k, args.lam, args.measure, chosen_budget, args.validation, args.seed
        ).record(list(train_tables), train, len(validation.qids)),
    }
    return rows, meta


def plot(rows: list[dict], meta: dict, tests: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgeted = [r for r in rows if r["selection"].startswith("budget")]
    icr = next(r for r in rows if r["selection"].startswith("ICR"))
    x_key = "s/query" if "s/query" in rows[0] else "layers run"
    fig, ax = plt.subplots(figsize=(9, 4.8))
    series = [("validation nDCG@10", "tab:green")] + [
        (f"{t} nDCG@10", c) for t, c in zip(tests, ["tab:blue", "tab:red"])
    ]
    for key, colour in series:
        points = sorted({(r[x_key], r[key], r["layers run"]) for r in budgeted})
        ax.plot(
            [p[0] for p in points], [p[1] for p in points], "o-", color=colour, ms=3, label=key.replace(" nDCG@10", "")
        )
        ax.plot([icr[x_key]], [icr[key]], "x", color=colour, ms=8)
        ax.axhline(meta["bm25"][key], color=colour, ls=":", lw=0.8)
        for p in points[:: max(1, len(points) // 10)]:
            ax.annotate(str(p[2]), (p[0], p[1]), fontsize=6, xytext=(2, 3), textcoords="offset points")
    chosen = next(r for r in rows if r["selection"] == meta["chosen"])
    ax.axvline(
        chosen[x_key], color="black", lw=0.8, ls="--", label=f"chosen on validation: {chosen['layers run']} layers"
    )
    ax.set_xlabel("seconds per query" if x_key == "s/query" else "layers run")
    ax.set_ylabel("nDCG@10")
    ax.set_title("Depth budget: quality against cost (numbers: layers run; x: ICR, all heads; dotted: BM25)")
    ax.legend(fontsize=7)
    fig.text(
        0.01, 0.005, f"{meta['machine']} | {meta['dtype of the timings']} | {meta['command']}", fontsize=5, wrap=True
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> tuple[list[dict], dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--train", action="append", required=True, help="NAME=head_table.npz of a training dataset")
    parser.add_argument("--test", action="append", default=[], help="NAME=head_table.npz of a test set (reported only)")
    parser.add_argument("--budgets", help="depth budgets (default: every depth from 2 to the model's)")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--lam", type=float, default=0.5)
    parser.add_argument("--measure", default="ndcg")
    parser.add_argument("--validation", type=float, default=0.2, help="held-out share, as `headrank train`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--list-size", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="auto", help="dtype of the timings")
    parser.add_argument("--time-dataset", default="dl19")
    parser.add_argument("--time-queries", type=int, default=5, help="queries timed per head set (0: no timing)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, meta = pareto(args, " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]))
    tests = [t.partition("=")[0] for t in args.test]
    plot(rows, meta, tests, out / "depth_pareto.png")
    chosen = next(r for r in rows if r["selection"] == meta["chosen"])
    record = meta.pop("selection record")
    HeadSet.parse(chosen["heads"]).save(out / "heads.json", record | {"depth_rule": meta["rule"]})
    (out / "depth_pareto.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    columns = list(dict.fromkeys(c for r in rows for c in r if c != "heads"))
    lines = [f"* {k}: {v}" for k, v in meta.items() if k != "bm25"]
    lines += ["", format_table([meta["bm25"], *rows], columns), "", "![depth_pareto](depth_pareto.png)"]
    (out / "depth_pareto.md").write_text("\n".join(lines) + "\n")
    print((out / "depth_pareto.md").read_text())
    print(f"chosen: {meta['chosen']} -> {out / 'heads.json'}")
    return rows, meta


if __name__ == "__main__":
    main()
