"""Per-head passage scores from query-span attention, with ICR's "N/A" calibration and token mask."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
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


PrefixCache = list[tuple[torch.Tensor, torch.Tensor]]
"""keys and values of every layer after the pass over the prefix (batch 1)."""


def _last_layer(model, exit_early: bool) -> int | None:
    """Where a pass may stop (see `Capture.stop_layer`); None runs every layer to the end, as before."""
    return len(model.model.layers) - 1 if exit_early else None


def encode_prefix(
    model,
    prompt: ListwisePrompt,
    prefix_context: Callable[[], AbstractContextManager] | None = None,
    exit_early: bool = True,
) -> PrefixCache:
    """One pass over the passages. Of the last layer only its keys and values are computed (`exit_early`).

    `prefix_context` (e.g. a peft model's `disable_adapter`) wraps the pass and it then runs without grad: a
    trained ranker's adapters act on the query span only, so the passages are encoded by the frozen base and
    one prefix serves the reference and the trained model alike."""
    from transformers import DynamicCache

    decoder = model.model
    cache = DynamicCache(config=model.config)
    prefix = torch.tensor([prompt.prefix_ids], device=decoder.embed_tokens.weight.device)
    stop = Capture(heads={}, stop_layer=_last_layer(model, exit_early))
    if prefix_context is None:
        with capturing(stop):
            decoder(input_ids=prefix, cache=cache, use_cache=True)
    else:
        with torch.no_grad(), prefix_context(), capturing(stop):
            decoder(input_ids=prefix, cache=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def query_attention(
    model,
    prompt: ListwisePrompt,
    heads: HeadSet,
    calibrate: bool,
    prefix_context: Callable[[], AbstractContextManager] | None = None,
    prefix: PrefixCache | None = None,
    exit_early: bool = True,
) -> torch.Tensor:
    """[1 or 2, heads, prefix_len]: mean attention of the query span (and the N/A span) to each prefix token.

    The query and the N/A spans run as a batch of two short passes over the prefix's KV cache (computed
    here unless `prefix` is given, which is left untouched and can be reused). Both passes end at the last
    layer's attention (`exit_early=False` runs them to the end: the same result, for before/after timings).
    Differentiable when called with grad enabled.
    """
    from transformers import DynamicCache

    if prefix is None:
        prefix = encode_prefix(model, prompt, prefix_context, exit_early)
    device = model.model.embed_tokens.weight.device
    suffix, row_mask = _suffix_batch(prompt, calibrate, device)
    cache = DynamicCache(config=model.config)
    for layer, (keys, values) in enumerate(prefix):
        batch = (suffix.shape[0], *keys.shape[1:])
        cache.update(keys.expand(batch), values.expand(batch), layer)
    capture = Capture(heads=heads.by_layer(), row_mask=row_mask, stop_layer=_last_layer(model, exit_early))
    with capturing(capture):
        model.model(input_ids=suffix, cache=cache, use_cache=True)
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
