"""Peak RSS and time of loading a GGUF model, each measurement in a fresh process (ru_maxrss is per process):
this loader (tensor by tensor into the run dtype) against the one it replaced (transformers' whole-model float32
dequantization, saved as a float32 copy, cast at load), at full depth and a given depth, on a fresh and a warm
cache. Weights of the cache's dtype stay mapped from its files and are read in by the first pass that uses them,
so the peak after one short forward pass is measured too. Prints a markdown table and writes the rows as JSON.

    python -m benchmarks.gguf_load --model embedded --dtype bfloat16 --depth 15 --out docs/models/embedded.json
    python -m benchmarks.gguf_load --model ~/.cache/headrank/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
        --dtype bfloat16 --depth 25 --loaders new --out docs/models/qwen25-coder-1p5b.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADERS = ("old", "new")
FORWARD_TOKENS = 64


def _old_load(model: str, dtype: str, depth: int | None, folder: Path):
    """The loader before the tensor-by-tensor one (commit 946bc33): a float32 copy of the whole model, then cast."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from headrank.engine.backbone import DTYPES, resolve_source
    from headrank.engine.family import set_depth

    _, path = resolve_source(model)
    if not folder.is_dir():
        whole = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        whole.hf_quantizer = None
        if hasattr(whole.config, "quantization_config"):
            del whole.config.quantization_config
        whole.save_pretrained(folder)
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(folder)
        del whole
    AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    if depth is not None and depth < config.num_hidden_layers:
        set_depth(config, depth)
    return AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=DTYPES[dtype])


def measure_one(loader: str, model: str, dtype: str, depth: int | None, cache: Path) -> dict:
    """One load in this process: seconds, peak RSS, the RSS before it (Python, torch, transformers imported) and
    the bytes of the parameters it keeps."""
    import torch
    import transformers  # noqa: F401 (imported before the baseline is read)

    from headrank.engine.backbone import load_backbone

    baseline = _rss()
    start = time.perf_counter()
    if loader == "new":
        lm = load_backbone(model, dtype=dtype, depth=depth).model
    else:
        lm = _old_load(model, dtype, depth, cache / "old-float32")
    seconds = time.perf_counter() - start
    kept = sum(p.numel() * p.element_size() for p in lm.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.no_grad():  # weights mapped from the cache are read in by the first pass that uses them
        lm(torch.zeros(1, FORWARD_TOKENS, dtype=torch.long))
    return {
        "seconds": seconds,
        "peak_rss": peak,
        "peak_rss_forward": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "baseline_rss": baseline,
        "weights": kept,
        "layers": lm.config.num_hidden_layers,
    }


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(loader: str, model: str, dtype: str, depth: int | None, cache: Path, state: str) -> dict:
    """Run `measure_one` in a child process with HEADRANK_CACHE=cache, so each peak is that load's alone."""
    argv = [sys.executable, "-m", "benchmarks.gguf_load", "--one", loader, "--model", model, "--dtype", dtype]
    argv += ["--depth", str(depth)] if depth is not None else []
    env = {**os.environ, "HEADRANK_CACHE": str(cache)}
    done = subprocess.run(argv + ["--cache", str(cache)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{loader} load failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"loader": loader, "depth": depth, "cache": state, "dtype": dtype, **row}


def table(rows: list[dict]) -> str:
    lines = [
        "| loader | depth | cache | weights kept (GB) | peak RSS loading (GB) | peak / weights | RSS before (GB) "
        f"| peak after a {FORWARD_TOKENS}-token forward (GB) | that / weights | load seconds (shared) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['loader']} | {r['layers']} | {r['cache']} | {r['weights'] / 1e9:.2f} | {r['peak_rss'] / 1e9:.2f} "
            f"| {r['peak_rss'] / r['weights']:.2f} | {r['baseline_rss'] / 1e9:.2f} "
            f"| {r['peak_rss_forward'] / 1e9:.2f} | {r['peak_rss_forward'] / r['weights']:.2f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--depth", type=int, default=None, help="the selected depth, measured beside full depth")
    parser.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=LOADERS)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", choices=LOADERS, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.model, args.dtype, args.depth, args.cache)))
        return []
    rows = []
    for loader in args.loaders:
        for depth in (None, args.depth) if args.depth is not None else (None,):
            with tempfile.TemporaryDirectory(prefix="gguf-load-") as cache:
                for state in ("fresh", "warm"):
                    rows.append(measure(loader, args.model, args.dtype, depth, Path(cache), state))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
