"""The device checks of benchmarks/gpu.sh, each reported as passed or failed with what it measured:

* every family batched equals one prompt per pass (float32 and bfloat16, within 1e-5 of the list's largest score);
* no host synchronisation inside a scoring pass (`torch.cuda.set_sync_debug_mode("error")`);
* training steps (both losses, both adapter modes) and a learning-curve point run on the device;
* the server's scheduler: requests/s with 32 concurrent clients against 1, on Qwen3-0.6B shapes.

    python -m benchmarks.gpu_checks --device cuda --out DIR      # on CPU: --device cpu (the sync check is skipped)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from concurrent.futures import wait
from pathlib import Path

import numpy as np
import torch

from headrank.engine.backbone import Backbone
from headrank.engine.testing import DOCS, FAMILIES, FLEA_QUERY, tiny_model, tiny_tokenizer
from headrank.evaluation.metrics import format_table, machine
from headrank.ranker import HeadRanker, RankerConfig

LISTS = [(FLEA_QUERY, DOCS), ("wifi range", DOCS[:3]), ("war", DOCS[::-1] + ["a tank " * 12])]


def tiny_ranker(family: str, device: str, dtype: torch.dtype = torch.float32, **config) -> HeadRanker:
    backbone = Backbone(tiny_model(family=family).to(device, dtype), tiny_tokenizer(), family, family)
    return HeadRanker(backbone, RankerConfig(max_length=150, **config), truncate=False)


def check_families(device: str) -> dict:
    """Batched = alone in float32 and bfloat16: attention runs prompt by prompt in a padded batch, so what is left
    to differ is whether the device's matmuls give a row the same result whatever the batch around it."""
    measured, passed = [], True
    for dtype in (torch.float32, torch.bfloat16):
        worst, same, total = 0.0, 0, 0
        for family in FAMILIES:
            alone = tiny_ranker(family, device, dtype, max_batch_tokens=1)
            batched = alone.variant(max_batch_tokens=100_000)
            for (q, d), together in zip(LISTS, batched.score_batch(LISTS)):
                single = alone.score(q, d)
                worst = max(worst, max(abs(a - b) for a, b in zip(single, together)) / max(map(abs, single)))
                same += np.argsort(single).tolist() == np.argsort(together).tolist()
                total += 1
        passed = passed and worst <= 1e-5 and same == total
        measured.append(f"{str(dtype).removeprefix('torch.')}: max rel. diff {worst:.1e}, same {same}/{total}")
    return {"passed": passed, "measured": "; ".join(measured)}


def check_sync(device: str) -> dict:
    if not device.startswith("cuda"):
        return {"passed": None, "measured": "skipped: not a CUDA device"}
    ranker = tiny_ranker("qwen3", device, max_batch_tokens=100_000)
    prompts = [p for q, d in LISTS for p in ranker.prompts(q, d)]
    with torch.no_grad():
        ranker.score_prompts(prompts)  # warm-up: index tensors and weights are put on the device once
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            scored = ranker.score_prompts(prompts)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    host = torch.cat([s.scores for s in scored]).cpu()  # the one transfer, after the pass
    return {"passed": bool(torch.isfinite(host).all()), "measured": f"{len(prompts)} prompts, no synchronisation"}


def check_training(device: str) -> dict:
    from headrank.training import TrainConfig
    from headrank.training.lists import TrainingList
    from headrank.training.trainer import PreferenceTrainer

    item = TrainingList("q0", FLEA_QUERY, DOCS, np.array([1.0, 0.0, 2.0, 0.0, 0.0]), [2, 1])
    losses = []
    for loss, adapters in (("dpo", "query"), ("listwise", "query"), ("dpo", "all")):
        ranker = tiny_ranker("qwen3", device)
        trainer = PreferenceTrainer(ranker, TrainConfig(loss=loss, adapters=adapters, lr=5e-2, order="inference"))
        for step in range(3):
            trainer.optimizer.zero_grad()
            value, _ = trainer.list_loss(item, 0, random.Random(step))
            value.backward()
            trainer.optimizer.step()
            losses.append(float(value.detach()))
        trainer.evaluate([item], [item])
    return {"passed": all(np.isfinite(losses)), "measured": f"9 steps and 3 curve points; last loss {losses[-1]:.3f}"}


def check_scheduler(device: str, shapes: str, requests: int) -> dict:
    """Requests/s of the server's scheduler with `n` clients each waiting for its answer before the next."""
    from benchmarks.throughput import build_model, head_set
    from benchmarks.throughput import shapes as shape_of
    from headrank.serve.scheduler import Scheduler

    spec = shape_of(shapes)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    backbone = Backbone(build_model(spec, device, dtype), tiny_tokenizer(), spec.name, spec.name)
    ranker = HeadRanker(backbone, RankerConfig(heads=head_set(spec, spec.depth)))
    rng = random.Random(0)
    words = ["fleas", "wifi", "goldfish", "tank", "war", "range", "host", "year", "bluetooth", "states"]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(*spec.passage_tokens))) for _ in range(20)]
    rates = {}
    for clients in (1, 32):
        scheduler = Scheduler(ranker, queue_size=64, max_active=64, max_batch_requests=64)
        scheduler.start()
        try:
            scheduler.submit("warm up", docs).result()
            start, done = time.perf_counter(), 0
            while done < requests:
                wait([scheduler.submit(f"query {done + i}", docs) for i in range(clients)])
                done += clients
            rates[clients] = done / (time.perf_counter() - start)
        finally:
            scheduler.stop()
    ratio = rates[32] / rates[1]
    return {
        "passed": ratio >= 5 if device.startswith("cuda") else None,  # the 5x target is the GPU's
        "measured": f"{rates[1]:.1f} req/s at 1 client, {rates[32]:.1f} at 32 ({ratio:.1f}x; {spec.name})",
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scheduler-shapes", default="qwen3-0.6b")
    parser.add_argument("--scheduler-requests", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    checks = {
        "families: batched = one prompt per pass (float32, bfloat16)": lambda: check_families(args.device),
        "no host synchronisation inside a scoring pass": lambda: check_sync(args.device),
        "training steps and curves on the device": lambda: check_training(args.device),
        "scheduler: 32 concurrent clients vs 1": lambda: check_scheduler(
            args.device, args.scheduler_shapes, args.scheduler_requests
        ),
    }
    rows = []
    for name, check in checks.items():
        try:
            rows.append({"check": name, **check()})
        except Exception as err:  # a failed check is a result to report, not the end of the run
            rows.append({"check": name, "passed": False, "measured": f"{type(err).__name__}: {err}"[:300]})
            traceback.print_exc()
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks.gpu_checks", *(argv if argv is not None else sys.argv[1:])])
    footer = f"{machine()} | {args.device} | {command}"
    (out / "gpu_checks.json").write_text(json.dumps({"rows": rows, "machine": footer}, indent=1) + "\n")
    (out / "gpu_checks.md").write_text(format_table(rows, ["check", "passed", "measured"]) + f"\n\n{footer}\n")
    return rows


if __name__ == "__main__":
    main()
