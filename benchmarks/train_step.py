"""Seconds per training list, before and after the prefix cache, measured in one process on the same lists.

before: every step runs the frozen passage pass again (what training did until the cache); after: the pass is
read from the cache (float16, in memory). Steps alternate between the two so drift on the machine hits both.
Also: the all-token adapter mode (gradient through the passage pass), and the float16 cache's score error.

usage: benchmarks/train_step.py --data-dir ../shared/data [--dataset dl21] [--lists 4] [--repeats 2] [--out F]
       [--model embedded --heads docs/headrank/heads-selected.json]"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from headrank.evaluation.metrics import machine
from headrank.ranker import HeadRanker
from headrank.training import TrainConfig
from headrank.training.lists import load_training_data
from headrank.training.trainer import PreferenceTrainer


def step_seconds(trainer: PreferenceTrainer, item, repeats: int) -> list[float]:
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        trainer.optimizer.zero_grad()
        loss, _ = trainer.list_loss(item, 0, random.Random(repeat))
        loss.backward()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="dl21")
    parser.add_argument("--model", default="embedded", help="the base model the heads are read from")
    parser.add_argument("--heads", default="docs/headrank/heads-selected.json")
    parser.add_argument("--lists", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    items = load_training_data([args.dataset], Path(args.data_dir), 20, 0.2).train[: args.lists]
    rows = {}
    for mode in ("query", "all"):
        ranker = HeadRanker.from_pretrained(args.model, heads=args.heads, dtype="float32")
        trainer = PreferenceTrainer(ranker, TrainConfig(adapters=mode, order="inference"))
        store = trainer.prefixes
        for item in items:  # references (and, for query mode, the cached prefixes) outside the timing
            for prompt in trainer.prompts(item, 0):
                trainer.reference(prompt)
                trainer.prefix(prompt)
        if mode == "query":
            cached, recomputed = [], []
            for item in items:
                cached += step_seconds(trainer, item, args.repeats)
                trainer.prefixes = None  # before: the passage pass runs in every step
                recomputed += step_seconds(trainer, item, args.repeats)
                trainer.prefixes = store
            rows["query span, prefix recomputed (before)"] = float(np.mean(recomputed))
            rows["query span, prefix cached (after)"] = float(np.mean(cached))
            prompt = trainer.prompts(items[0], 0)[0]
            with torch.no_grad():
                exact = ranker.prompt_scores(prompt, ranker.encode([prompt])).scores
                half = ranker.prompt_scores(prompt, store.get(prompt)).scores
            rows["float16 cache: max score error / score std"] = float((exact - half).abs().max() / exact.std())
        else:
            rows["all tokens (gradient through the passages)"] = float(
                np.mean([t for item in items for t in step_seconds(trainer, item, args.repeats)])
            )
    before, after = rows["query span, prefix recomputed (before)"], rows["query span, prefix cached (after)"]
    result = {
        "machine": machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "model": args.model,
        "dataset": args.dataset,
        "lists": len(items),
        "repeats": args.repeats,
        "seconds_per_list": rows,
        "speed-up of the cache": before / after,
        "all tokens / cached query span": rows["all tokens (gradient through the passages)"] / after,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
