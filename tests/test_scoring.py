"""Scores: calibration, token mask, head weights, depth truncation, and that they follow the relevant passage."""

from __future__ import annotations

import pytest
import torch

from headrank.engine.prompt import PromptBuilder
from headrank.engine.scoring import ScoringConfig, SuffixLayout, passage_scores
from headrank.engine.testing import tiny_backbone
from headrank.heads.headset import HeadSet, HeadSetError
from headrank.ranker import HeadRanker, RankerConfig

from .conftest import DOCS, FLEA_QUERY


def _prompt(backbone):
    builder = PromptBuilder(backbone.tokenizer)
    return builder.build(FLEA_QUERY, builder.encode_passages(DOCS), [4, 3, 2, 1, 0])


def test_calibration_subtracts_the_na_pass(tiny):
    prompt = _prompt(tiny)
    heads = HeadSet.of([(0, 1), (2, 3)])
    ranker = HeadRanker(tiny, RankerConfig(heads=heads))
    with torch.no_grad():
        attention = ranker.token_attention([prompt])[0]
        scored = ranker.prompt_scores(prompt)
    # by hand: each head's attention summed over each passage's span, times the number of passages
    n = len(prompt.passage_spans)
    raw = torch.stack([attention[0, :, a:b].sum(-1) * n for a, b in prompt.passage_spans], dim=1)
    na = torch.stack([attention[1, :, a:b].sum(-1) * n for a, b in prompt.passage_spans], dim=1)
    assert torch.allclose(scored.raw, raw, atol=1e-6)
    assert torch.allclose(scored.per_head, raw - na, atol=1e-6)
    assert torch.allclose(scored.scores, scored.per_head.sum(0))
    uncalibrated = HeadRanker(tiny, RankerConfig(heads=heads, scoring=ScoringConfig(calibrate=False)))
    with torch.no_grad():
        assert torch.allclose(uncalibrated.prompt_scores(prompt).per_head, raw, atol=1e-6)


def test_token_mask_drops_outlier_tokens(tiny):
    prompt = _prompt(tiny)
    ranker = HeadRanker(tiny, RankerConfig(heads=HeadSet.of([(1, 0)])))
    with torch.no_grad():
        attention = ranker.token_attention([prompt])
    start = prompt.passage_spans[0][0]
    attention[0, 0, 0, start] = attention[0, 1, 0, start] - 1.0  # an outlier far below mean - 2 sigma
    layout = SuffixLayout.build([prompt], True, attention.shape[-1])
    weights = torch.ones(1)
    plain, _ = passage_scores(attention, layout, weights, ScoringConfig(token_mask=False))
    masked, _ = passage_scores(attention, layout, weights, ScoringConfig(token_mask=True))
    assert plain[0, 0, 0] < -4.0
    assert masked[0, 0, 0] > plain[0, 0, 0] + 4.0
    assert torch.allclose(masked[0, 0, 1:], plain[0, 0, 1:])


def test_weights_scale_heads(tiny):
    weighted = HeadRanker(tiny, RankerConfig(heads=HeadSet.of([(0, 0), (1, 1)], [2.0, -1.0])))
    per_head = weighted.per_head_scores(FLEA_QUERY, DOCS)
    assert weighted.score(FLEA_QUERY, DOCS) == pytest.approx((2 * per_head[0] - per_head[1]).tolist(), abs=1e-6)


def test_truncation_runs_fewer_layers_with_identical_scores():
    heads = HeadSet.of([(0, 2), (1, 3)])
    full = HeadRanker(tiny_backbone(), RankerConfig(heads=heads), truncate=False)
    cut = HeadRanker(tiny_backbone(), RankerConfig(heads=heads), truncate=True)
    calls = {"full": 0, "cut": 0}
    for name, ranker in (("full", full), ("cut", cut)):
        for layer in ranker.family.layers:
            layer.register_forward_pre_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    lm_head_calls = []
    cut.model.lm_head.register_forward_hook(lambda *_: lm_head_calls.append(1))
    assert full.score(FLEA_QUERY, DOCS) == cut.score(FLEA_QUERY, DOCS)
    assert cut.depth == 2 and cut.layer_calls() == 2
    assert calls == {"full": 4 * 2, "cut": 2 * 2}  # prefix pass + query pass, per layer
    assert lm_head_calls == []


def test_early_exit_skips_the_last_layers_tail_with_identical_attention(tiny):
    prompt = _prompt(tiny)
    heads = HeadSet.of([(0, 1), (3, 2)])
    ranker = HeadRanker(tiny, RankerConfig(heads=heads), truncate=False)
    last = ranker.family.layers[-1]
    tails = []
    handles = [m.register_forward_hook(lambda m, *_: tails.append(m)) for m in (last.mlp, last.self_attn.o_proj)]
    with torch.no_grad():
        early = ranker.token_attention([prompt])
        assert tails == []  # neither pass ran the last layer's attention output or MLP
        full = ranker.token_attention([prompt], exit_early=False)
    for handle in handles:
        handle.remove()
    assert len(tails) == 4  # o_proj and MLP, in the prefix pass and the query pass
    assert torch.equal(early, full)


def test_relevant_passage_wins_wherever_it_sits(lexical):
    others = [d for d in DOCS if "fleas" not in d]
    scores = []
    for position in range(len(DOCS)):
        docs = others[:position] + [DOCS[2]] + others[position:]
        ranked = HeadRanker(lexical, RankerConfig(order="forward")).rank(FLEA_QUERY, docs)
        assert ranked[0].index == position and ranked[0].document == DOCS[2]
        scores.append(ranked[0].score)
    assert max(scores) - min(scores) < 1e-4
    # and the score of that slot changes when the passage moves away from it
    ranker = HeadRanker(lexical, RankerConfig(order="forward"))
    before = ranker.score(FLEA_QUERY, DOCS)
    after = ranker.score(FLEA_QUERY, [DOCS[1], DOCS[0], DOCS[3], DOCS[2], DOCS[4]])
    assert before[2] == pytest.approx(after[3], abs=1e-4) and abs(before[2] - after[2]) > 0.2


def test_head_set_parsing(tmp_path):
    assert HeadSet.parse("3-1, 0-2").heads == ((0, 2), (3, 1))
    assert HeadSet.parse("all").heads is None
    path = tmp_path / "heads.json"
    HeadSet.of([(1, 1), (0, 3)], [0.5, 2.0]).save(path)
    loaded = HeadSet.parse(path)
    assert loaded.heads == ((0, 3), (1, 1)) and loaded.weights == (2.0, 0.5)
    (tmp_path / "heads.yaml").write_text("heads: ['2-1', '0-0']\n")
    assert HeadSet.parse(tmp_path / "heads.yaml").heads == ((0, 0), (2, 1))
    with pytest.raises(HeadSetError, match="layer-head"):
        HeadSet.parse("3x1")
    with pytest.raises(HeadSetError, match="does not exist"):
        HeadSet.parse("9-0").resolve(4, 4)
    with pytest.raises(HeadSetError, match="not found"):
        HeadSet.parse(tmp_path / "missing.json")
