"""Encode the frozen passage passes of every training and validation list once, before the training runs that
share them (`headrank train --cache-dir`): takes `headrank train`'s own arguments, so the ranker, lists and
cache folder are exactly the ones those runs use. Validation lists first (the step-0 curve point needs them).

    python -m benchmarks.warm_prefix_cache --heads docs/benchmark/depth/heads-d15.json --data-dir ../shared/data \
        --dataset dl21 --dataset scifact-train --cache-dir runs/prefix-cache --cache-dtype float16 --out unused
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from headrank.cli import build_parser
from headrank.data import default_data_dir
from headrank.methods import reference_ranker
from headrank.options import RankerOptions
from headrank.training.lists import load_training_data
from headrank.training.prefix_cache import PrefixStore


def main(argv: list[str]) -> None:
    args = build_parser().parse_args(["train", *argv])
    args.dataset = args.dataset or ["dl21"]  # `headrank train`'s default, which its main sets after parsing
    if not args.cache_dir:
        raise SystemExit("--cache-dir is needed: the point is to fill it")
    ranker = reference_ranker(RankerOptions.from_args(args), args.heads)
    data = load_training_data(
        args.dataset, default_data_dir(args.data_dir), args.list_size, args.validation, args.seed, args.limit
    )
    store = PrefixStore(ranker, args.cache_dtype, Path(args.cache_dir), max_bytes=0)
    items = data.validation + data.train
    print(f"{len(data.validation)} validation + {len(data.train)} training lists -> {store.folder}", flush=True)
    start = time.perf_counter()
    for item in tqdm(items, unit="list", mininterval=30):
        for prompt in ranker.prompts(item.query, item.texts):
            store.get(prompt)
    print(f"computed {store.computed} prefixes in {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
