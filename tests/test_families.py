"""Every decoder family through one engine: the captured query-span rows are the model's own eager attention
over the same prompt (sliding windows and alternating layers included), batches of prompts of different lengths
score as the prompts alone, and selection and training run on each."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from headrank.data import Candidate, CandidateList
from headrank.engine.backbone import Backbone
from headrank.engine.family import ModelFamily
from headrank.engine.testing import FAMILIES, TINY_WINDOW, tiny_model, tiny_tokenizer
from headrank.heads.selection import collect_head_table, head_stats, select_heads
from headrank.ranker import HeadRanker, RankerConfig
from headrank.training import TrainConfig
from headrank.training.lists import TrainingList
from headrank.training.trainer import PreferenceTrainer

from .conftest import DOCS, FLEA_QUERY


def _backbone(family: str) -> Backbone:
    return Backbone(tiny_model(family=family), tiny_tokenizer(), family, family)


def _ranker(family: str, **config) -> HeadRanker:
    return HeadRanker(_backbone(family), RankerConfig(**config), truncate=False)


def eager_rows(model, ids: list[int], start: int, end: int) -> list[torch.Tensor]:
    """Reference: the model's own eager attention maps over the whole prompt (its own masks, windows and
    positions), rows from `start` on averaged, keys before `end`: [heads, end] per layer."""
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    finally:
        model.config._attn_implementation = "headrank"
    return [a[0, :, start:, :end].mean(dim=1) for a in out.attentions]


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_rows_are_the_models_eager_attention(family):
    ranker = _ranker(family, order="forward")
    model = ranker.model
    prompts = ranker.prompts(FLEA_QUERY, DOCS) + ranker.prompts("wifi", DOCS[:2])
    assert len(prompts[0].input_ids) > 2 * TINY_WINDOW  # the windows of Mistral and Gemma 3 do bite
    with torch.no_grad():
        got = ranker.token_attention(prompts)  # both prompts in one padded batch
    for b, prompt in enumerate(prompts):
        start = prompt.query_start
        query = eager_rows(model, prompt.input_ids, start, start)
        na = eager_rows(model, prompt.prefix_ids + prompt.calibration_ids, start, start)
        want = torch.stack([query[layer][head] for layer, head in ranker.heads.heads])
        want_na = torch.stack([na[layer][head] for layer, head in ranker.heads.heads])
        assert got.dtype == torch.float32
        assert (got[b, 0, :, :start] - want).abs().max() < 1e-5
        assert (got[b, 1, :, :start] - want_na).abs().max() < 1e-5
        assert got[b, :, :, start:].abs().sum() == 0  # the padding of the shorter prompt is never seen


def test_sliding_layers_see_only_their_window():
    """Gemma 3's sliding layers give the first passages nothing; its full layers do."""
    ranker = _ranker("gemma3", order="forward")
    prompt = ranker.prompts(FLEA_QUERY, DOCS)[0]
    with torch.no_grad():
        rows = ranker.token_attention([prompt])[0, 0]
    first = slice(*prompt.passage_spans[0])
    sliding = [i for i, (layer, _) in enumerate(ranker.heads.heads) if layer % 2 == 0]
    full = [i for i, (layer, _) in enumerate(ranker.heads.heads) if layer % 2 == 1]
    assert rows[sliding, first].abs().max() == 0
    assert rows[full, first].sum() > 0
    assert ModelFamily(ranker.model).sliding_windows() == [TINY_WINDOW, None, TINY_WINDOW, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_prompts_score_as_prompts_alone(family, dtype):
    """In bfloat16 too: padding changes how SDPA blocks a sequence, and so its rounding (2e-3 before attention
    ran prompt by prompt), so a prompt's scores would depend on which prompts shared its pass."""
    lists = [(FLEA_QUERY, DOCS), ("what is the range of wifi", DOCS[:3]), ("war", DOCS[::-1] + ["a tank " * 12])]
    model = tiny_model(family=family).to(dtype)
    alone = HeadRanker(
        Backbone(model, tiny_tokenizer(), family, family),
        RankerConfig(max_batch_tokens=1, max_length=150),
        truncate=False,
    )
    batched = alone.variant(max_batch_tokens=100_000)
    prompts = [p for q, d in lists for p in alone.prompts(q, d)]
    assert len({len(p.input_ids) for p in prompts}) > 2 and len(batched.batches(prompts)) == 1
    single = [alone.score(q, d) for q, d in lists]
    together = batched.score_batch(lists)
    for a, b in zip(single, together):
        assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-5 * max(abs(x) for x in a)
        assert np.argsort(a).tolist() == np.argsort(b).tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_selection_and_training_run_on_every_family(family):
    ranker = _ranker(family, max_length=150)
    lists = [
        CandidateList(f"q{i}", query, [Candidate(f"d{j}", t) for j, t in enumerate(DOCS)])
        for i, query in enumerate((FLEA_QUERY, "what is wifi", "goldfish tank"))
    ]
    qrels = {"q0": {"d2": 2, "d0": 1}, "q1": {"d0": 2, "d4": 1}, "q2": {"d3": 1}}
    table = collect_head_table(ranker, lists, qrels, progress=False)
    chosen = select_heads(head_stats(table), k=3, lam=0.5, max_depth=2)
    assert len(chosen.heads) == 3 and chosen.depth <= 2

    trained = HeadRanker(_backbone(family), RankerConfig(heads=chosen, max_length=150))
    assert trained.layer_calls() == chosen.depth
    trainer = PreferenceTrainer(trained, TrainConfig(lr=5e-2, gamma=0.0, eta=0.0, order="inference"))
    item = TrainingList("q0", FLEA_QUERY, DOCS, np.array([1.0, 0.0, 2.0, 0.0, 0.0]), [2, 1])
    before = trained.score(FLEA_QUERY, DOCS)
    for step in range(3):
        trainer.optimizer.zero_grad()
        loss, record = trainer.list_loss(item, 0, random.Random(step))
        loss.backward()
        trainer.optimizer.step()
    assert np.isfinite(record["loss"])
    assert trained.score(FLEA_QUERY, DOCS) != before  # the adapters moved the scores


def test_lora_targets_follow_the_family():
    assert ModelFamily(tiny_model(family="phi3")).lora_targets() == ["qkv_proj", "o_proj"]
    assert ModelFamily(tiny_model(family="llama")).lora_targets() == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_loading_stops_at_the_deepest_head(tmp_path):
    from headrank.engine.testing import save_tiny

    folder = save_tiny(tmp_path / "tiny", num_layers=4)
    ranker = HeadRanker.from_pretrained(str(folder), heads="1-0,0-2", dtype="float32")
    assert ranker.layer_calls() == 2 and len(ranker.model.model.layers) == 2
    full = HeadRanker.from_pretrained(str(folder), heads="1-0,0-2", dtype="float32", truncate=False)
    assert full.layer_calls() == 4
    assert ranker.score(FLEA_QUERY, DOCS) == pytest.approx(full.score(FLEA_QUERY, DOCS), abs=1e-6)


def test_head_plan_reads_each_key_head_once():
    from headrank.engine.capture import HeadPlan

    plan = HeadPlan.build([5, 0, 4, 1, 7], groups=4, device="cpu")  # key heads 1, 0, 1, 0, 1
    assert plan.kv_index.tolist() == [0, 1] and plan.per_kv == 3
    grouped = plan.q_index.tolist()
    assert [grouped[i] for i in plan.out_index.tolist()] == [5, 0, 4, 1, 7]
