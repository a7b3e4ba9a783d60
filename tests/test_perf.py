"""The benchmark's own arithmetic (no timings): FLOPs from the model's shapes, and the memory probe."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.perf import PeakMemory, pass_flops
from headrank.family import ModelFamily
from headrank.prompt import ListwisePrompt
from headrank.scoring import encode_prefixes
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
        encode_prefixes(ModelFamily(model), [prompt])
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


def _lists(count: int = 2):
    from headrank.data import Candidate, CandidateList

    from .conftest import DOCS, FLEA_QUERY

    return [
        CandidateList(f"q{i}", FLEA_QUERY, [Candidate(f"d{j}", t) for j, t in enumerate(DOCS[i:] + DOCS[:i])])
        for i in range(count)
    ]


def test_the_methods_table_counts_each_methods_passes_and_tokens():
    from benchmarks.perf import attention_cost, compare_methods
    from headrank.baselines.rankgpt import RankGPT, RankGPTConfig
    from headrank.headset import HeadSet
    from headrank.ranker import HeadRanker, RankerConfig
    from headrank.testing import tiny_backbone

    lists = _lists()
    headrank = HeadRanker(tiny_backbone(), RankerConfig(heads=HeadSet.parse("1-0,1-3")))
    cost = attention_cost(headrank, lists[0], "cpu")
    assert cost.ranking == [r.doc_id for r in headrank.rank(lists[0].query, lists[0].documents(), lists[0].docids())]
    prompt = headrank.prompts(lists[0].query, lists[0].documents())[0]
    assert cost.prompt_tokens == len(prompt.input_ids) + len(prompt.calibration_ids) and cost.forward_passes == 2
    rankgpt = RankGPT(tiny_backbone(), RankGPTConfig(window=3, step=2, max_passage_tokens=8, max_new_tokens=4))
    rows = compare_methods({"HeadRank": headrank, "RankGPT": rankgpt}, lists, [3, 5], "cpu")
    by = {(r["method"], r["list depth"]): r for r in rows}
    assert by["HeadRank", 5]["layers run"] == 2 and by["RankGPT", 5]["layers run"] == 4
    assert by["RankGPT", 3]["windows"] == 1 and by["RankGPT", 5]["windows"] == 2  # windows (2,5), (0,3)
    assert by["HeadRank", 5]["windows"] == 1 and by["HeadRank", 5]["generated tokens"] == 0
    for depth in (3, 5):
        generated = by["RankGPT", depth]
        assert generated["forward passes"] == generated["generated tokens"] >= generated["windows"]
        assert generated["s/query"] >= generated["prefill s"] + generated["decode s"] - 1e-6
        assert by["HeadRank", depth]["HeadRank time / this"] == 1.0


def test_the_dtype_table_compares_rankings_with_float32():
    from benchmarks.perf import dtype_table
    from headrank.backbone import Backbone
    from headrank.ranker import HeadRanker
    from headrank.testing import tiny_model, tiny_tokenizer

    def load(dtype: str) -> HeadRanker:
        model = tiny_model().to(getattr(torch, dtype))
        return HeadRanker(Backbone(model, tiny_tokenizer(), "tiny", "tiny"))

    lists = _lists(3)
    qrels = {lst.qid: {"d2": 2, "d0": 1} for lst in lists}
    rows = {r["dtype"]: r for r in dtype_table(load, lists, qrels, "cpu")}
    reference = rows["float32"]
    assert reference["identical top-10"] == "3/3" and reference["Kendall tau vs float32"] == 1.0
    assert reference["delta vs float32"] == 0.0 and reference["p"] == 1.0
    half = rows["bfloat16"]
    assert -1.0 <= half["min tau"] <= half["Kendall tau vs float32"] <= 1.0
    assert 0.0 <= half["nDCG@10"] <= 1.0 and half["time / float32"] > 0
