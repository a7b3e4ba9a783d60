"""Throughput on real shapes: queries/s, tokens/s and achieved TFLOP/s of HeadRank's batched forward against the
device's measured bf16 matmul peak, per batch budget, beside the one-prompt-per-pass path, full depth, and
RankGPT-style generation on the same shapes. Writes throughput.md and throughput.json to --out.

    .venv/bin/python -m benchmarks.throughput --shapes tiny --out runs/throughput-cpu           # a test runs this
    python -m benchmarks.throughput --shapes qwen3-4b --device cuda --out $OUT/throughput       # benchmarks/gpu.sh

Models are built in code from the public configs with random weights: speed does not depend on the weights, and
no weights can be downloaded where this runs. Prompts are synthetic token ids with the listwise layout (header,
numbered passages of DL19-like lengths, the query span and its N/A twin), so every shape runs offline.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.timing import matmul_throughput, pass_flops, timed
from headrank.engine.backbone import Backbone
from headrank.engine.prompt import ListwisePrompt
from headrank.engine.testing import tiny_config, tiny_tokenizer
from headrank.evaluation.metrics import format_table, machine
from headrank.heads.headset import HeadSet
from headrank.ranker import HeadRanker, RankerConfig

QWEN3 = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32),
}
"""the public Qwen3 configs (all: 8 key/value heads of 128, vocabulary 151,936, 40,960 positions)."""


@dataclass(frozen=True)
class Shapes:
    name: str
    config: object
    passage_tokens: tuple[int, int]
    """passage lengths drawn uniformly in this range (DL19's BM25 top-20: 1.5k-2.5k tokens a prompt)."""
    query_tokens: int
    depth: int
    """the truncated depth HeadRank runs (15 of 36 for Qwen3-4B/8B, as the embedded default's 15 of 30)."""


def shapes(name: str) -> Shapes:
    if name == "tiny":
        return Shapes(name, tiny_config("qwen3", num_layers=4), (8, 16), 8, 2)
    from transformers import Qwen3Config

    config = Qwen3Config(
        **QWEN3[name],
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        max_position_embeddings=40960,
        tie_word_embeddings=name != "qwen3-8b",
    )
    return Shapes(name, config, (60, 140), 24, 15)


def build_model(spec: Shapes, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    from headrank.engine.capture import IMPLEMENTATION, register_attention

    register_attention()
    spec.config._attn_implementation = IMPLEMENTATION
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(spec.config, dtype=dtype)
    model.config._attn_implementation = IMPLEMENTATION
    return model.eval()


def synthetic_prompt(spec: Shapes, passages: int, rng: random.Random) -> ListwisePrompt:
    """Random token ids laid out as a listwise prompt: header, `[i]` markers and passages, query and N/A spans."""
    vocab = min(spec.config.vocab_size, 30000)
    ids = [rng.randrange(vocab) for _ in range(12)]
    spans = []
    for _ in range(passages):
        ids += [rng.randrange(vocab) for _ in range(4)]  # the "\n\n[i]" marker
        length = rng.randint(*spec.passage_tokens)
        spans.append((len(ids), len(ids) + length))
        ids += [rng.randrange(vocab) for _ in range(length)]
    query = [rng.randrange(vocab) for _ in range(spec.query_tokens + 20)]  # instruction + query + chat tail
    na = [rng.randrange(vocab) for _ in range(22)]
    return ListwisePrompt(ids, query, na, spans, list(range(passages)))


def head_set(spec: Shapes, depth: int, count: int = 16) -> HeadSet:
    """`count` heads spread over the first `depth` layers, the deepest in the last of them."""
    heads = spec.config.num_attention_heads
    layers = [depth - 1 - (i * depth) // count for i in range(count)]
    return HeadSet.of({(layer, (7 * i) % heads) for i, layer in enumerate(layers)})


def measured(fn, device: str, repeats: int) -> tuple[float, float]:
    """(median wall seconds, peak memory MB) of `repeats` calls after one warm-up."""
    fn()
    timing, _ = timed(fn, device, repeats)
    return timing.per_query, timing.peak_mb


def useful_flops(config, depth: int, prompts: list[ListwisePrompt]) -> float:
    """FLOPs of the unpadded truncated forward of every prompt (padding is not useful work)."""
    return sum(
        pass_flops(config, depth, p.query_start, 1, len(p.query_ids) + len(p.calibration_ids))["total"] for p in prompts
    )


def encode_all(ranker: HeadRanker, prompts, groups) -> None:
    """The prefix passes alone, each batch's keys and values dropped before the next (holding every batch's would
    time the allocator, not the pass)."""
    for group in groups:
        ranker.encode([prompts[i] for i in group])


def headrank_rows(ranker: HeadRanker, prompts, budgets, peak: float, device: str, repeats: int, label: str):
    rows = []
    tokens = sum(len(p.input_ids) + len(p.calibration_ids) for p in prompts)
    flops = useful_flops(ranker.model.config, ranker.depth, prompts)
    for budget in budgets:
        variant = ranker.variant(max_batch_tokens=budget)
        groups = variant.batches(prompts)
        total, memory = measured(lambda v=variant: v.score_many(prompts), device, repeats)
        prefix, _ = measured(lambda v=variant, g=groups: encode_all(v, prompts, g), device, repeats)
        rows.append(
            {
                "path": f"HeadRank, {label}" + (", one prompt per pass" if budget == 1 else ""),
                "max_batch_tokens": budget,
                "passes": 2 * len(groups),
                "queries/s": len(prompts) / total,
                "tokens/s": tokens / total,
                "TFLOP/s": flops / total / 1e12,
                "of peak": flops / total / peak,
                "prefix s": prefix,
                "suffix s": max(total - prefix, 0.0),
                "peak MB": memory,
            }
        )
    return rows


@torch.no_grad()
def generation_row(model, prompts, new_tokens: int, batch: int, device: str) -> dict:
    """RankGPT-style listwise generation on the same prompts: a full-depth prefill, then `new_tokens` forced
    decoding steps (a permutation of the window), `batch` prompts at a time (cut to one length)."""
    length = min(len(p.input_ids) for p in prompts[:batch])
    ids = torch.tensor([p.input_ids[:length] for p in prompts[:batch]], device=device)

    def run():
        model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )

    seconds, memory = measured(run, device, 1)
    return {
        "path": f"generation (RankGPT-style, full depth, {new_tokens} tokens, batch {len(ids)})",
        "max_batch_tokens": len(ids) * length,
        "passes": new_tokens,
        "queries/s": len(ids) / seconds,
        "tokens/s": len(ids) * (length + new_tokens) / seconds,
        "TFLOP/s": None,
        "of peak": None,
        "prefix s": None,
        "suffix s": None,
        "peak MB": memory,
    }


def agreement(ranker: HeadRanker, prompts: list[ListwisePrompt], budget: int) -> dict:
    """Batched against one prompt per pass in the run's dtype: the largest score difference relative to the
    prompt's largest score, and whether every ranking is the same."""
    single = ranker.variant(max_batch_tokens=1).score_many(prompts)
    batched = ranker.variant(max_batch_tokens=budget).score_many(prompts)
    worst, same = 0.0, 0
    for a, b in zip(single, batched):
        worst = max(worst, float((a.scores - b.scores).abs().max() / a.scores.abs().max().clamp_min(1e-12)))
        same += a.scores.argsort(descending=True).tolist() == b.scores.argsort(descending=True).tolist()
    return {"prompts": len(prompts), "max relative difference": worst, "identical rankings": same}


@torch.no_grad()  # the encode calls timed here would otherwise keep every layer's activations for autograd
def run(args, save=lambda result: None) -> dict:
    """Full depth first (and generation, which needs every layer), then the same model cut to the truncated
    depth in place: one model in memory, the same weights and prompts for every row. `save` gets the result
    after each table, so a run stopped at its time limit still leaves the tables it finished."""
    spec = shapes(args.shapes)
    dtype = getattr(torch, args.dtype)
    model = build_model(spec, args.device, dtype)
    backbone = Backbone(model, tiny_tokenizer(), spec.name, spec.name)
    peak = matmul_throughput(args.device, args.peak_size, args.peak_size, args.peak_size, dtype=dtype)
    rng = random.Random(0)
    prompts = {k: [synthetic_prompt(spec, k, rng) for _ in range(args.queries)] for k in args.top_k}
    budgets = sorted({1, *args.budgets})
    layers = spec.config.num_hidden_layers
    result = {"peak TFLOP/s": peak / 1e12, "tables": {}}
    tables = result["tables"]
    for k in args.top_k:
        tables[f"top-{k}"] = {"prompt tokens (mean)": statistics.fmean(len(p.input_ids) for p in prompts[k])}
        tables[f"top-{k}"] |= {"rows": [], "agreement": None}
    full = HeadRanker(backbone, RankerConfig(heads=head_set(spec, layers)))
    for k in args.top_k:
        rows = headrank_rows(full, prompts[k], [1, budgets[-1]], peak, args.device, args.repeats, f"all {layers}")
        if k in args.generate_at:
            rows.append(generation_row(model, prompts[k], 4 * k, args.generation_batch, args.device))
        tables[f"top-{k}"]["rows"] = rows
        save(result)
    cut = HeadRanker(backbone, RankerConfig(heads=head_set(spec, spec.depth)))  # cuts the model in place
    for k in args.top_k:
        truncated = headrank_rows(cut, prompts[k], budgets, peak, args.device, args.repeats, f"{spec.depth} layers")
        best = max(truncated, key=lambda r: r["queries/s"])["max_batch_tokens"]
        tables[f"top-{k}"]["rows"] = truncated + tables[f"top-{k}"]["rows"]
        tables[f"top-{k}"]["agreement"] = agreement(cut, prompts[k][: args.agreement], best)
        save(result)
    return result


def markdown(result: dict, meta: dict) -> str:
    columns = ["path", "max_batch_tokens", "passes", "queries/s", "tokens/s", "TFLOP/s", "of peak"]
    columns += ["prefix s", "suffix s", "peak MB"]
    lines = [
        f"# Throughput: {meta['shapes']} shapes, {meta['dtype']}, {meta['device']}",
        "",
        f"Peak (bf16 matmul {meta['peak_size']}^3, measured in this run): {result['peak TFLOP/s']:.2f} TFLOP/s. "
        f"{meta['queries']} queries per table.",
        "",
    ]
    for name, table in result["tables"].items():
        agree = table["agreement"]
        lines += [
            f"## {name} ({table['prompt tokens (mean)']:.0f} prompt tokens on average)",
            "",
            format_table(table["rows"], columns),
            "",
            f"Batched vs one prompt per pass ({agree['prompts']} prompts): max relative score difference "
            f"{agree['max relative difference']:.2e}, identical rankings {agree['identical rankings']}/"
            f"{agree['prompts']}."
            if agree
            else "Not finished: the truncated rows and the agreement check did not run.",
            "",
        ]
    lines += [f"{meta['machine']} | {meta['command']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="tiny", choices=["tiny", *QWEN3])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--top-k", type=lambda s: [int(x) for x in s.split(",")], default=[20, 100])
    parser.add_argument("--budgets", type=lambda s: [int(x) for x in s.split(",")], default=[4096, 16384, 65536])
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generate-at", type=lambda s: [int(x) for x in s.split(",") if x], default=[20])
    parser.add_argument("--generation-batch", type=int, default=16)
    parser.add_argument("--agreement", type=int, default=8, help="prompts compared batched vs alone")
    parser.add_argument("--peak-size", type=int, default=8192)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    meta = {
        **vars(args),
        "machine": machine(),
        "command": " ".join(["python -m benchmarks.throughput", *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:
        (out / "throughput.json").write_text(json.dumps({"meta": meta, **result}, indent=1, default=str) + "\n")
        (out / "throughput.md").write_text(markdown(result, meta))

    result = run(args, save)
    print(markdown(result, meta))
    return result


if __name__ == "__main__":
    main()
