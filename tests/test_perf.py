"""The benchmark's own arithmetic (no timings): FLOPs from the model's shapes, and the memory probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.timing import PeakMemory, pass_flops
from headrank.engine.family import ModelFamily
from headrank.engine.prompt import ListwisePrompt
from headrank.engine.scoring import encode_prefixes
from headrank.engine.testing import tiny_model

from .conftest import DOCS, FLEA_QUERY


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


def _lists(count: int = 2, texts: list[str] = DOCS):
    """`count` lists of the same passages, rotated by one each."""
    from headrank.data import Candidate, CandidateList

    return [
        CandidateList(f"q{i}", FLEA_QUERY, [Candidate(f"d{j}", t) for j, t in enumerate(texts[i:] + texts[:i])])
        for i in range(count)
    ]


def test_the_methods_table_counts_each_methods_passes_and_tokens():
    from benchmarks.perf import attention_cost, compare_methods
    from headrank.baselines.rankgpt import RankGPT, RankGPTConfig
    from headrank.engine.testing import tiny_backbone
    from headrank.heads.headset import HeadSet
    from headrank.ranker import HeadRanker, RankerConfig

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
        prompts = [headrank.prompts(lst.query, lst.head(depth).documents()) for lst in lists]
        tokens = [sum(len(p.input_ids) + len(p.calibration_ids) for p in ps) for ps in prompts]
        assert by["HeadRank", depth]["prompt tokens"] == sum(tokens) / len(tokens)  # both lists, with N/A twins
        assert by["HeadRank", depth]["forward passes"] == 2  # one window: its passages, then query and N/A
        generated = by["RankGPT", depth]
        assert generated["forward passes"] == generated["generated tokens"] >= generated["windows"]
        assert generated["s/query"] >= generated["prefill s"] + generated["decode s"] - 1e-6  # parts of one clock
        ratio = by["HeadRank", depth]["s/query"] / generated["s/query"]
        assert generated["HeadRank time / this"] == pytest.approx(ratio)  # HeadRank's time over this method's


def test_the_dtype_table_compares_bfloat16_with_an_independent_float32_ranking():
    """The bfloat16 row's agreement, nDCG@10 and delta, recomputed here from each dtype's own rankings (scipy's
    Kendall tau, ir-measures' nDCG@10): the table must match what the two rankers really did."""
    from scipy.stats import kendalltau

    from benchmarks.perf import dtype_table
    from headrank.engine.backbone import Backbone
    from headrank.engine.testing import tiny_model, tiny_tokenizer
    from headrank.evaluation.metrics import evaluate
    from headrank.ranker import HeadRanker

    def load(dtype: str) -> HeadRanker:
        model = tiny_model().to(getattr(torch, dtype))
        return HeadRanker(Backbone(model, tiny_tokenizer(), "tiny", "tiny"))

    lists = _lists(3, [f"{doc} {end.split()[-1]}" for doc in DOCS for end in DOCS[:2]])  # ten close passages
    qrels = {lst.qid: {"d2": 2, "d0": 1} for lst in lists}
    rows = {r["dtype"]: r for r in dtype_table(load, lists, qrels, "cpu")}
    ranked = {}
    for dtype in ("float32", "bfloat16"):
        ranker = load(dtype)
        ranked[dtype] = [[r.doc_id for r in ranker.rank(lst.query, lst.documents(), lst.docids())] for lst in lists]
    taus = [
        kendalltau([full.index(d) for d in full], [half.index(d) for d in full]).statistic
        for full, half in zip(ranked["float32"], ranked["bfloat16"])
    ]
    ndcg = {
        dtype: evaluate(
            {lst.qid: {d: -i for i, d in enumerate(r)} for lst, r in zip(lists, rankings)}, qrels, ["nDCG@10"]
        )["ndcg@10"]
        for dtype, rankings in ranked.items()
    }
    half = rows["bfloat16"]
    same = sum(a == b for a, b in zip(ranked["float32"], ranked["bfloat16"]))
    top = sum(a[:10] == b[:10] for a, b in zip(ranked["float32"], ranked["bfloat16"]))
    assert half["identical order"] == f"{same}/3" and half["identical top-10"] == f"{top}/3"
    assert half["Kendall tau vs float32"] == pytest.approx(np.mean(taus))
    assert half["min tau"] == pytest.approx(min(taus))
    assert half["nDCG@10"] == pytest.approx(ndcg["bfloat16"])
    assert rows["float32"]["nDCG@10"] == pytest.approx(ndcg["float32"])
    assert half["delta vs float32"] == pytest.approx(ndcg["bfloat16"] - ndcg["float32"])
    wins, losses, ties = map(int, half["W/L/T"].split("/"))
    assert wins + losses + ties == 3 and 0.0 <= half["p"] <= 1.0
