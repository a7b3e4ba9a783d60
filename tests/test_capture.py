"""The captured query-span rows are the eager attention rows, through the KV cache too, and differentiable."""

from __future__ import annotations

import torch

from headrank.capture import Capture, capturing
from headrank.headset import HeadSet
from headrank.prompt import PromptBuilder
from headrank.scoring import query_attention

from .conftest import DOCS, FLEA_QUERY


def eager_rows(model, ids: list[int], start: int) -> list[torch.Tensor]:
    """Reference: full eager attention maps, rows from `start` on, averaged: [heads, len] per layer."""
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    finally:
        model.config._attn_implementation = "headrank"
    return [a[0, :, start:, :].mean(dim=1) for a in out.attentions]


def test_captured_rows_match_eager(tiny):
    model = tiny.model
    prompt = PromptBuilder(tiny.tokenizer).build(
        FLEA_QUERY, PromptBuilder(tiny.tokenizer).encode_passages(DOCS), [4, 3, 2, 1, 0]
    )
    ids, start = prompt.input_ids, prompt.query_start
    reference = eager_rows(model, ids, start)
    row_mask = torch.zeros(1, len(ids), dtype=torch.bool)
    row_mask[0, start:] = True
    capture = Capture(heads={0: [0, 3], 2: [1, 2]}, row_mask=row_mask)
    with torch.no_grad(), capturing(capture):
        model(input_ids=torch.tensor([ids]))
    assert set(capture.attention) == {0, 2}
    for layer, heads in capture.heads.items():
        got = capture.attention[layer][0]
        assert got.dtype == torch.float32
        assert torch.allclose(got, reference[layer][heads], atol=1e-5, rtol=0)
        assert torch.allclose(got.sum(-1), torch.ones(len(heads)), atol=1e-5)


def test_cached_query_pass_matches_eager(tiny):
    builder = PromptBuilder(tiny.tokenizer)
    prompt = builder.build(FLEA_QUERY, builder.encode_passages(DOCS), [0, 1, 2, 3, 4])
    heads = HeadSet.all().resolve(4, 4)
    with torch.no_grad():
        got = query_attention(tiny.model, prompt, heads, calibrate=True)
    reference = eager_rows(tiny.model, prompt.input_ids, prompt.query_start)
    want = torch.stack([reference[layer][head] for layer, head in heads.heads])[:, : prompt.query_start]
    assert got.shape == (2, 16, prompt.query_start)
    assert (got[0] - want).abs().max() < 1e-5
    calibration = eager_rows(tiny.model, prompt.prefix_ids + prompt.calibration_ids, prompt.query_start)
    want_na = torch.stack([calibration[layer][head] for layer, head in heads.heads])[:, : prompt.query_start]
    assert (got[1] - want_na).abs().max() < 1e-5


def test_capture_is_differentiable(tiny):
    builder = PromptBuilder(tiny.tokenizer)
    prompt = builder.build(FLEA_QUERY, builder.encode_passages(DOCS), [0, 1, 2, 3, 4])
    attention = query_attention(tiny.model, prompt, HeadSet.of([(1, 0), (3, 2)]), calibrate=True)
    (attention[0, :, prompt.passage_spans[2][0]].sum() - attention[1].sum()).backward()
    grads = [tiny.model.model.layers[i].self_attn.q_proj.weight.grad for i in (0, 1, 3)]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_no_capture_outside_context(tiny):
    capture = Capture(heads={0: [0]})
    with capturing(capture):
        pass
    with torch.no_grad():
        tiny.model(input_ids=torch.tensor([[1, 2, 3]]))
    assert capture.attention == {}
