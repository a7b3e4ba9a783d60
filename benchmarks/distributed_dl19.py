"""`headrank rerank-distributed` on TREC DL19 against a single-process `headrank eval` run of the same ranker.

Writes the judged DL19 candidate lists to OUT/candidates.jsonl.gz, runs the command line on them (Ray on this
machine, --workers N), and reports wall time, nDCG@10 and whether the run file equals the reference one:

    flock /tmp/headrank-cpu.lock .venv/bin/python benchmarks/distributed_dl19.py --data-dir ../shared/data \\
        --reference runs/dl19-icr/run.trec --out runs/dl19-ray --workers 2 --top-k 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from headrank.data import default_data_dir, load_run, scored, write_candidates
from headrank.datasets import load_dataset
from headrank.evaluation.metrics import evaluate, machine


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="dl19")
    parser.add_argument("--reference", required=True, help="run.trec of `headrank eval` with the same ranker")
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--model", default="embedded")
    args = parser.parse_args(argv)

    data = load_dataset(args.dataset, default_data_dir(args.data_dir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_candidates(out / "candidates.jsonl.gz", data.judged())
    command = [
        *(sys.executable, "-m", "headrank.cli", "rerank-distributed", "--model", args.model, "--tag", "icr"),
        *("--candidates", str(out / "candidates.jsonl.gz"), "--out", str(out / "run.trec")),
        *("--workers", str(args.workers), "--top-k", str(args.top_k), "--quiet"),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start

    def ndcg(path) -> float:
        return evaluate(scored(load_run(path)), data.qrels, ["nDCG@10"])["ndcg@10"]

    same = (out / "run.trec").read_text() == Path(args.reference).read_text()
    result = {
        "queries": len(data.judged()),
        "workers": args.workers,
        "top_k": args.top_k,
        "wall_s": round(wall, 1),
        "ndcg@10": round(ndcg(out / "run.trec"), 4),
        "reference_ndcg@10": round(ndcg(args.reference), 4),
        "identical_run_file": same,
        "machine": machine(),
        "command": " ".join(command),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
