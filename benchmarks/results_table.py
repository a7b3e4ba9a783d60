"""Collect the metrics.json of `headrank eval` folders into one markdown table (the README's results table).

usage: python benchmarks/results_table.py runs/table/*/*/metrics.json > table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from headrank.evaluation.metrics import format_table

COLUMNS = ["row", "dataset", "queries", "ndcg@10", "seconds_per_query", "peak_rss_mb", "layers_run"]


def main(paths: list[str]) -> str:
    rows = []
    for path in paths:
        metrics = json.loads(Path(path).read_text())
        metrics["row"] = Path(path).parent.parent.name  # runs/table/<row>/<dataset>/metrics.json
        rows.append(metrics)
    rows.sort(key=lambda m: (m["dataset"], m["row"]))
    return format_table(rows, COLUMNS)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
