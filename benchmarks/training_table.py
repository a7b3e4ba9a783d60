"""One row per trained artifact under a folder: validation nDCG@10 untrained and at the best checkpoint,
training-sample nDCG@10, steps and seconds. The configuration to carry forward is read off this table.

usage: python benchmarks/training_table.py [FOLDER]   (default runs/grid)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from headrank.evaluation.metrics import format_table


def rows(folder: Path) -> list[dict]:
    out = []
    for manifest_path in sorted(folder.glob("*/headrank.json")):
        training = json.loads(manifest_path.read_text())["training"]
        history = json.loads((manifest_path.parent / "history.json").read_text())
        last = history["evals"][-1]
        first = history["evals"][0]
        out.append(
            {
                "run": manifest_path.parent.name,
                "data": "+".join(json.loads(manifest_path.read_text())["data"]["datasets"]),
                "loss": training["loss"],
                "order": training["order"],
                "adapters": training["adapters"],
                "lr": training["lr"],
                "epochs": training["epochs"],
                "val ndcg step0": training["validation_step0"]["ndcg@10"],
                "val ndcg best": training["validation_best"]["ndcg@10"],
                "val ndcg last": last["validation"]["ndcg@10"],
                "best step": training["best_step"],
                "steps": training["steps"],
                "train ndcg step0": first["train"]["ndcg@10"],
                "train ndcg last": last["train"]["ndcg@10"],
                "train pairs step0": first["train"]["pair_accuracy"],
                "train pairs last": last["train"]["pair_accuracy"],
                "val pairs step0": training["validation_step0"]["pair_accuracy"],
                "val pairs best": training["validation_best"]["pair_accuracy"],
                "s/step": training["seconds_per_step"],
                "minutes": training["seconds_this_session"] / 60,
            }
        )
    return out


def main(argv: list[str]) -> str:
    table = rows(Path(argv[0] if argv else "runs/grid"))
    return format_table(table, list(table[0]) if table else ["run"])


if __name__ == "__main__":
    print(main(sys.argv[1:]))
