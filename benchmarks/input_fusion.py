"""Would fusing a split list's ranking with the input order help? Reciprocal rank fusion of a reranked run (the
sliding chain's) with the first stage's run, over a grid of RRF's constant k and the first stage's weight, each
compared with the reranked run, a reference run (the top-20) and the first stage by the paired randomization test.
Computed from run files alone (no model); issue 35 tried it on training data and kept the chain (docs/long-lists.md).

    PYTHONPATH=$PWD python benchmarks/input_fusion.py --qrels ../shared/data/dl21/qrels.tsv \\
        --chain runs/fuse/dl21-top100/run.trec --first-stage runs/fuse/dl21-bm25/run.trec \\
        --reference runs/fuse/dl21-top20/run.trec --out docs/benchmark/long-lists/input-fusion-dl21.json"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from headrank.data import RankedRun, load_qrels, load_run, scored
from headrank.evaluation.significance import compare_runs


def rrf(chain: Sequence[str], first: Sequence[str], k: int, weight: float) -> list[tuple[str, float]]:
    """The documents of `chain`, best first by 1/(k + chain rank) + weight/(k + first-stage rank); ties keep the
    chain's order. A document the first stage lacks gets its last rank plus one."""
    where = {d: r for r, d in enumerate(first)}
    fused = {d: 1 / (k + r + 1) + weight / (k + where.get(d, len(first)) + 1) for r, d in enumerate(chain)}
    return sorted(fused.items(), key=lambda item: -item[1])


def non_negatives(kind: type) -> Callable[[str], list]:
    """An argparse type: comma-separated numbers of `kind`, each 0 or more (RRF divides by k + rank)."""

    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",")]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from err
        if any(v < 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected values of 0 or more, got {text!r}")
        return values

    return parse


def fused_run(chain: RankedRun, first: RankedRun, k: int, weight: float) -> RankedRun:
    return {q: rrf([d for d, _ in docs], [d for d, _ in first[q]], k, weight) for q, docs in chain.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qrels", required=True)
    parser.add_argument("--chain", required=True, help="the reranked run (TREC)")
    parser.add_argument("--first-stage", required=True, help="the input order's run (TREC)")
    parser.add_argument("--reference", help="another run to compare with (e.g. the top-20 rerank)")
    parser.add_argument("--k", type=non_negatives(int), default=[1, 5, 20, 60], help="RRF constants")
    parser.add_argument("--weights", type=non_negatives(float), default=[0.5, 1.0, 2.0], help="first-stage weights")
    parser.add_argument("--out", required=True, help="a JSON file of the rows")
    args = parser.parse_args(argv)
    qrels = load_qrels(args.qrels)
    chain, first = load_run(args.chain), load_run(args.first_stage)
    missing = sorted(set(chain) - set(first))
    if missing:
        parser.error(f"the first stage has no ranking for {len(missing)} queries of the chain (first: {missing[0]})")
    others = {"chain": chain, "first_stage": first}
    if args.reference:
        others["reference"] = load_run(args.reference)
    rows = []
    for k, weight in itertools.product(args.k, args.weights):
        run = scored(fused_run(chain, first, k, weight))
        row: dict = {"k": k, "weight": weight}
        for name, other in others.items():
            (c,) = compare_runs(scored(other), {"rrf": run}, qrels)
            row |= {"ndcg@10": round(c.mean, 4), f"{name}_ndcg@10": round(c.baseline_mean, 4)}
            row |= {f"vs_{name}": {"delta": round(c.delta, 4), "wins": c.wins, "losses": c.losses, "p": c.p_value}}
        rows.append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"queries": len(chain), "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
