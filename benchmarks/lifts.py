"""Where a reranked long list's top-10 comes from. For each run: the passages it lifts into its top-10 from below
the first stage's top-`depth` (passages a top-`depth` rerank can never show), the passages of the reference's
top-10 (the top-`depth` rerank) that it leaves out, and how often each kind is relevant. A long list beats its
top-`depth` rerank only where the first are relevant more often than the second. From run files alone (no model).

    PYTHONPATH=$PWD python benchmarks/lifts.py --qrels ../shared/data/dl21/qrels.tsv --relevant-grade 2 \\
        --first-stage runs/fuse/dl21-bm25/run.trec --reference runs/fuse/dl21-top20/run.trec \\
        step10=runs/fuse/dl21-top100/run.trec step15=runs/step/dl21-s15/run.trec \\
        --out docs/benchmark/long-lists/step/lifts-dl21.json"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headrank.data import Qrels, RankedRun, load_qrels, load_run


def lifts(
    run: RankedRun, first: RankedRun, reference: RankedRun, qrels: Qrels, relevant: int, depth: int, cut: int
) -> dict:
    """Per-query means of what `run`'s top-`cut` lifts from below the first stage's top-`depth` and of what it
    leaves out of the reference's top-`cut`, each with the fraction of them that is relevant (None: none)."""
    counts = {"lifted": [0, 0], "left_out": [0, 0]}
    for qid, docs in run.items():
        top = [d for d, _ in docs[:cut]]
        shallow = {d for d, _ in first[qid][:depth]}
        kinds = {"lifted": [d for d in top if d not in shallow]}
        kinds["left_out"] = [d for d, _ in reference[qid][:cut] if d not in top]
        for kind, found in kinds.items():
            counts[kind][0] += len(found)
            counts[kind][1] += sum(qrels.get(qid, {}).get(d, 0) >= relevant for d in found)
    row: dict = {"queries": len(run)}
    for kind, (n, hits) in counts.items():
        row |= {f"{kind}_per_query": round(n / len(run), 3), f"{kind}_relevant": round(hits / n, 3) if n else None}
    return row


def labelled(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_FILE, got {text!r}")
    return label, path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=labelled, help="LABEL=RUN_FILE of each reranked long list")
    parser.add_argument("--qrels", required=True)
    parser.add_argument("--relevant-grade", type=int, default=1, help="the lowest grade counted relevant")
    parser.add_argument("--first-stage", required=True, help="the input order's run (TREC)")
    parser.add_argument("--reference", required=True, help="the top-depth rerank's run (TREC)")
    parser.add_argument("--depth", type=int, default=20, help="the reference's rerank depth")
    parser.add_argument("--cut", type=int, default=10, help="the top that is read")
    parser.add_argument("--out", required=True, help="a JSON file of the rows")
    args = parser.parse_args(argv)
    if args.depth < 1 or args.cut < 1:
        parser.error("--depth and --cut must be 1 or more")
    qrels, first, reference = load_qrels(args.qrels), load_run(args.first_stage), load_run(args.reference)
    rows = []
    for label, path in args.runs:
        run = load_run(path)
        missing = sorted(set(run) - set(first) | set(run) - set(reference))
        if missing:
            parser.error(f"{label}: the first stage or the reference has no ranking for query {missing[0]}")
        rows.append({"run": label, **lifts(run, first, reference, qrels, args.relevant_grade, args.depth, args.cut)})
        print(json.dumps(rows[-1]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings = {"depth": args.depth, "cut": args.cut, "relevant_grade": args.relevant_grade}
    Path(args.out).write_text(json.dumps({**settings, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
