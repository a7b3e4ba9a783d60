"""Choose on validation, with a paired test: each trained artifact's best checkpoint against the untrained heads
it started from, per validation list (nDCG@10 in the inference order), with wins/losses/ties and the paired
randomization p. The frozen passage passes come from the training runs' prefix cache.

usage: benchmarks/validation_compare.py RUN_DIR... --data-dir ../shared/data [--cache-dir runs/prefix-cache]
       [--lists-from RUN_DIR]   (runs trained on other data, judged on one common set of validation lists)
       [--selected-on DATASET[:LIMIT] ...]   (also without the validation lists whose queries chose the heads)"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from headrank.artifact import read_manifest
from headrank.datasets import judged_lists
from headrank.evaluation.metrics import format_table, ndcg_at
from headrank.evaluation.significance import randomization_p
from headrank.ranker import HeadRanker
from headrank.training.curves import list_scores
from headrank.training.lists import held_out, training_lists
from headrank.training.prefix_cache import PrefixStore


def validation_lists(manifest: dict, data_dir: Path):
    size = manifest["training"]["list_size"]
    wanted = set(manifest["data"]["validation_qids"])
    lists = []
    for name in manifest["data"]["datasets"]:
        lists += [i for i in training_lists(*judged_lists(name, data_dir, size), size) if i.qid in wanted]
    return lists


def selection_qids(specs: list[str], data_dir: Path, size: int) -> set[str]:
    """The queries `headrank select-heads --dataset D [--limit N]` chose heads on (its default split)."""
    chosen: set[str] = set()
    for spec in specs:
        name, _, limit = spec.partition(":")
        usable, held = held_out(*judged_lists(name, data_dir, size, int(limit) if limit else None), size, 0.2)
        chosen |= {i.qid for i in usable} - held
    return chosen


def paired(before: np.ndarray, after: np.ndarray) -> dict:
    diff = after - before
    return {
        "lists": len(diff),
        "untrained": float(before.mean()),
        "trained (best checkpoint)": float(after.mean()),
        "delta": float(diff.mean()),
        "W/L/T": f"{int((diff > 1e-9).sum())}/{int((diff < -1e-9).sum())}/{int((abs(diff) <= 1e-9).sum())}",
        "p": randomization_p(diff),
    }


def per_list_ndcg(ranker: HeadRanker, items, cache_dir: Path | None) -> np.ndarray:
    store = PrefixStore(ranker, "float16", cache_dir)
    scores = list_scores(ranker, items, store.get)
    return np.array([ndcg_at(s[None], i.grades, i.ideal)[0] for s, i in zip(scores, items)])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--cache-dir", default="runs/prefix-cache")
    parser.add_argument("--lists-from", help="score every run on this artifact's validation lists (one common set)")
    parser.add_argument(
        "--selected-on",
        action="append",
        default=[],
        metavar="DATASET[:LIMIT]",
        help="the heads were selected on these (select-heads' default split): also report without those queries",
    )
    parser.add_argument("--out", help="TABLE.md; beside it TABLE.json with the rows and every list's two nDCG@10")
    args = parser.parse_args(argv)
    rows, untrained, per_list = [], {}, {}
    for run in args.runs:
        manifest = read_manifest(run)
        items = validation_lists(read_manifest(args.lists_from or run), Path(args.data_dir))
        key = (tuple(map(tuple, ([h["layer"], h["head"]] for h in manifest["heads"]))), tuple(i.qid for i in items))
        if key not in untrained:
            heads = ",".join(f"{h['layer']}-{h['head']}" for h in manifest["heads"])
            base = HeadRanker.from_pretrained(manifest["base_model"], heads=heads, dtype="float32")
            untrained[key] = per_list_ndcg(base, items, Path(args.cache_dir))
        trained = per_list_ndcg(HeadRanker.from_artifact(run, dtype="float32"), items, Path(args.cache_dir))
        before = untrained[key]
        row = {"run": Path(run).name, "best step": manifest["training"]["best_step"], **paired(before, trained)}
        if args.selected_on:
            chosen = selection_qids(args.selected_on, Path(args.data_dir), manifest["training"]["list_size"])
            keep = np.array([i.qid not in chosen for i in items])
            clean = paired(before[keep], trained[keep])
            row |= {"lists w/o selection queries": clean["lists"], "delta w/o": clean["delta"], "p w/o": clean["p"]}
        rows.append(row)
        per_list[row["run"]] = {i.qid: [float(b), float(t)] for i, b, t in zip(items, before, trained)}
    table = format_table(rows, list(rows[0]))
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
        Path(args.out).with_suffix(".json").write_text(
            json.dumps({"rows": rows, "per_list": per_list}, indent=1) + "\n"
        )
    return rows


if __name__ == "__main__":
    main()
