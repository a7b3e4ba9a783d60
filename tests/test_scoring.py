"""Scores: calibration, token mask, head weights, depth truncation, and that they follow the relevant passage."""

from __future__ import annotations

import pytest
import torch

from headrank.headset import HeadSet, HeadSetError
from headrank.prompt import PromptBuilder
from headrank.ranker import HeadRanker, RankerConfig
from headrank.scoring import ScoringConfig, query_attention, score_list
from headrank.testing import tiny_backbone

from .conftest import DOCS, FLEA_QUERY


def _prompt(backbone):
    builder = PromptBuilder(backbone.tokenizer)
    return builder.build(FLEA_QUERY, builder.encode_passages(DOCS), [4, 3, 2, 1, 0])


def test_calibration_subtracts_the_na_pass(tiny):
    prompt = _prompt(tiny)
    heads = HeadSet.of([(0, 1), (2, 3)])
    with torch.no_grad():
        attention = query_attention(tiny.model, prompt, heads, calibrate=True)
    raw = score_list(attention[:1], prompt, heads, ScoringConfig(calibrate=False))
    calibrated = score_list(attention, prompt, heads, ScoringConfig(calibrate=True))
    na = score_list(attention[1:], prompt, heads, ScoringConfig(calibrate=False))
    assert torch.allclose(calibrated.per_head, raw.per_head - na.per_head, atol=1e-6)
    # by hand: head 0, passage at input position 2, summed over its span, times the number of passages
    start, end = prompt.passage_spans[2]
    assert raw.per_head[0, 2].item() == pytest.approx(attention[0, 0, start:end].sum().item() * 5, rel=1e-5)
    assert torch.allclose(raw.scores, raw.per_head.sum(0))


def test_token_mask_drops_outlier_tokens(tiny):
    prompt = _prompt(tiny)
    heads = HeadSet.of([(1, 0)])
    with torch.no_grad():
        attention = query_attention(tiny.model, prompt, heads, calibrate=True)
    tokens = attention[0, 0] - attention[1, 0]
    start = prompt.passage_spans[0][0]
    tokens[start] = -1.0  # an outlier far below mean - 2 sigma
    attention = torch.stack([tokens + attention[1, 0], attention[1, 0]])[:, None]
    plain = score_list(attention, prompt, heads, ScoringConfig(token_mask=False))
    masked = score_list(attention, prompt, heads, ScoringConfig(token_mask=True))
    assert plain.scores[0] < -4.0
    assert masked.scores[0] > plain.scores[0] + 4.0
    assert torch.allclose(masked.scores[1:], plain.scores[1:])


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
        for layer in ranker.model.model.layers:
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
    last = tiny.model.model.layers[-1]
    tails = []
    handles = [m.register_forward_hook(lambda m, *_: tails.append(m)) for m in (last.mlp, last.self_attn.o_proj)]
    with torch.no_grad():
        early = query_attention(tiny.model, prompt, heads, calibrate=True)
        assert tails == []  # neither pass ran the last layer's attention output or MLP
        full = query_attention(tiny.model, prompt, heads, calibrate=True, exit_early=False)
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
