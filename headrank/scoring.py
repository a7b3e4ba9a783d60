"""Per-head passage scores from query-span attention, with ICR's "N/A" calibration and token mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from headrank.capture import Capture, capturing
from headrank.headset import HeadSet
from headrank.prompt import ListwisePrompt


@dataclass(frozen=True)
class ScoringConfig:
    calibrate: bool = True
    """subtract the attention of the same span with the query replaced by "N/A" (ICR)."""
    token_mask: bool = False
    """ICR's mask: drop passage tokens whose calibrated score falls below mean - 2 sigma."""


@dataclass
class ListScores:
    """Scores of one forward pass, indexed by input position."""

    per_head: torch.Tensor
    """[heads, passages]: s~_h(i), calibrated if asked, times the number of passages."""
    scores: torch.Tensor
    """[passages]: the weighted sum over heads."""


def _suffix_batch(prompt: ListwisePrompt, calibrate: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Query span (and its N/A twin) right-padded into one batch; padded rows come last so causality hides them."""
    suffixes = [prompt.query_ids] + ([prompt.calibration_ids] if calibrate else [])
    width = max(len(s) for s in suffixes)
    ids = torch.zeros(len(suffixes), width, dtype=torch.long, device=device)
    rows = torch.zeros(len(suffixes), width, dtype=torch.bool, device=device)
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = torch.tensor(s, device=device)
        rows[i, : len(s)] = True
    return ids, rows


def query_attention(
    model, prompt: ListwisePrompt, heads: HeadSet, calibrate: bool, prefix_grad: bool = True
) -> torch.Tensor:
    """[1 or 2, heads, prefix_len]: mean attention of the query span (and the N/A span) to each prefix token.

    One pass over the prefix fills the KV cache; the query and the N/A spans then run as a batch of two
    short passes over that cache. Differentiable when called with grad enabled; `prefix_grad=False` keeps
    the passages' keys and values out of the graph (gradients reach the query span only: far cheaper).
    """
    from transformers import DynamicCache

    decoder = model.model
    device = decoder.embed_tokens.weight.device
    cache = DynamicCache(config=model.config)
    prefix = torch.tensor([prompt.prefix_ids], device=device)
    with torch.set_grad_enabled(prefix_grad and torch.is_grad_enabled()):
        decoder(input_ids=prefix, cache=cache, use_cache=True)
    suffix, row_mask = _suffix_batch(prompt, calibrate, device)
    if suffix.shape[0] > 1:
        cache.batch_repeat_interleave(suffix.shape[0])
    capture = Capture(heads=heads.by_layer(), row_mask=row_mask)
    with capturing(capture):
        decoder(input_ids=suffix, cache=cache, use_cache=True)
    per_layer = [capture.attention[layer][:, i] for layer, i in _head_slots(heads)]
    return torch.stack(per_layer, dim=1)[:, :, : prompt.query_start]


def _head_slots(heads: HeadSet) -> list[tuple[int, int]]:
    """(layer, slot within that layer's capture) for each head in HeadSet order."""
    by_layer = heads.by_layer()
    return [(layer, by_layer[layer].index(head)) for layer, head in heads.heads]


def passage_index(prompt: ListwisePrompt) -> torch.Tensor:
    """For each prefix token, the input position of the passage it belongs to, or -1."""
    index = torch.full((prompt.query_start,), -1, dtype=torch.long)
    for position, (start, end) in enumerate(prompt.passage_spans):
        index[start:end] = position
    return index


def score_list(attention: torch.Tensor, prompt: ListwisePrompt, heads: HeadSet, config: ScoringConfig) -> ListScores:
    """Reduce token attention to passage scores (DESIGN.md): sum over each span, per head, then weighted."""
    tokens = attention[0] - attention[1] if config.calibrate else attention[0]
    index = passage_index(prompt).to(tokens.device)
    inside = index >= 0
    weights = torch.tensor(heads.weight_vector(), dtype=tokens.dtype, device=tokens.device)
    keep = torch.ones(int(inside.sum()), dtype=tokens.dtype, device=tokens.device)
    if config.token_mask:
        combined = weights @ tokens[:, inside]
        threshold = combined.mean() - 2 * combined.std()
        keep = (combined >= threshold).to(tokens.dtype)
    n = len(prompt.passage_spans)
    per_head = torch.zeros(tokens.shape[0], n, dtype=tokens.dtype, device=tokens.device)
    per_head = per_head.index_add(1, index[inside], tokens[:, inside] * keep) * n
    return ListScores(per_head=per_head, scores=weights @ per_head)
