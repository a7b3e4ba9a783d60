"""The benchmark's own arithmetic (no timings): FLOPs from the model's shapes, and the memory probe."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.perf import PeakMemory, pass_flops
from headrank.prompt import ListwisePrompt
from headrank.scoring import encode_prefix
from headrank.testing import tiny_model


def test_projection_flops_match_torch_counter():
    model = tiny_model(num_layers=3)
    tokens = 300
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.model(input_ids=torch.randint(0, 400, (1, tokens)))
    matmuls = counter.get_flop_counts()["Global"][torch.ops.aten.mm]
    config = model.config
    causal_pairs = tokens * (tokens + 1) / 2
    attention = 3 * 4 * config.num_attention_heads * config.head_dim * causal_pairs  # QK^T and AV, both 2 FLOPs
    assert pass_flops(config, 3, tokens, 0, 1, exit_early=False)["prefix"] == matmuls + attention


def test_early_exit_flops_match_torch_counter():
    """The prefix pass computes only queries, keys and values in its last layer: two full layers plus that."""
    model = tiny_model(num_layers=3)
    tokens = 300
    prompt = ListwisePrompt(list(range(tokens)), [1], [2], [(0, tokens)], [0])
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encode_prefix(model, prompt)
    matmuls = counter.get_flop_counts()["Global"][torch.ops.aten.mm]
    config = model.config
    attention = 2 * 4 * config.num_attention_heads * config.head_dim * tokens * (tokens + 1) / 2
    assert pass_flops(config, 3, tokens, 0, 1)["prefix"] == matmuls + attention
    assert (
        pass_flops(config, 3, tokens, 0, 1)["prefix"] < pass_flops(config, 3, tokens, 0, 1, exit_early=False)["prefix"]
    )


def test_suffix_flops_grow_with_the_cached_prefix():
    config = tiny_model(num_layers=2).config
    short, long = pass_flops(config, 2, 100, 2, 10), pass_flops(config, 2, 1000, 2, 10)
    assert long["suffix"] > short["suffix"] and long["total"] == long["prefix"] + long["suffix"]


def test_peak_memory_sees_an_allocation():
    with PeakMemory("cpu") as memory:
        block = torch.ones(16 * 2**20)  # 64 MB, touched
    assert memory.growth_mb >= 48 and block.sum() > 0
