"""Per-head passage scores of a batch of prompts: one pass over their passages, one over their query and N/A
spans, then ICR's calibration and token mask, all on the device with one transfer of indices per batch.

Prompts of different lengths share a pass: prefixes are right-padded (causality hides the padding from every
real row), and the suffix pass lays each prompt's query span and N/A span side by side in one row of the batch,
with explicit positions and a mask that lets each span see its own prefix and itself, never the other span or
the padding. So the prefix's keys and values are held once for both spans."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from headrank.engine.capture import EnginePass, HeadPlan, PromptRanges, running
from headrank.engine.family import ModelFamily
from headrank.engine.prompt import ListwisePrompt
from headrank.heads.headset import HeadSet


@dataclass(frozen=True)
class ScoringConfig:
    calibrate: bool = True
    """subtract the attention of the same span with the query replaced by "N/A" (ICR)."""
    token_mask: bool = False
    """ICR's mask: drop passage tokens whose calibrated score falls below mean - 2 sigma."""


@dataclass
class ListScores:
    """Scores of one prompt, indexed by input position."""

    per_head: torch.Tensor
    """[heads, passages]: s~_h(i), calibrated if asked, times the number of passages."""
    scores: torch.Tensor
    """[passages]: the weighted sum over heads."""
    raw: torch.Tensor | None = None
    """[heads, passages]: the query span's attention mass, uncalibrated and unmasked (head statistics)."""


@dataclass
class PrefixBatch:
    """Keys and values of every layer after the pass over a batch of prefixes, right-padded."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    """per layer ([batch, kv_heads, longest prefix, head_dim], the same for values)."""
    lengths: list[int]

    def to(self, device=None, dtype=None) -> PrefixBatch:
        return PrefixBatch([(k.to(device, dtype), v.to(device, dtype)) for k, v in self.kv], list(self.lengths))

    @classmethod
    def stack(cls, items: Sequence[PrefixBatch]) -> PrefixBatch:
        """One batch from several, padded to the longest (the padding is masked in the suffix pass)."""
        if len(items) == 1:
            return items[0]
        width = max(max(item.lengths) for item in items)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[2]))

        layers = len(items[0].kv)
        kv = [
            (
                torch.cat([pad(item.kv[layer][0]) for item in items]),
                torch.cat([pad(item.kv[layer][1]) for item in items]),
            )
            for layer in range(layers)
        ]
        return cls(kv, [n for item in items for n in item.lengths])


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device` without a host synchronisation: pinned, then copied asynchronously (on CUDA)."""
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _padded(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def _probe_mask(batch: int, device) -> torch.Tensor:
    """A 4-D mask the model passes through untouched (the engine masks in its attention function), so that no
    family spends time building one of its own."""
    return torch.ones(batch, 1, 1, 1, dtype=torch.bool, device=device)


def encode_prefixes(
    family: ModelFamily,
    prompts: Sequence[ListwisePrompt],
    prefix_context: Callable[[], AbstractContextManager] | None = None,
    exit_early: bool = True,
) -> PrefixBatch:
    """One pass over the passages of every prompt. Of the last layer only its keys and values are computed.

    `prefix_context` (e.g. a peft model's `disable_adapter`) wraps the pass and it then runs without grad: a
    trained ranker's adapters act on the query span only, so the passages are encoded by the frozen base and
    one prefix serves the reference and the trained model alike."""
    device = family.device
    lengths = [len(p.prefix_ids) for p in prompts]
    ids = to_device(_padded([p.prefix_ids for p in prompts]), device)
    positions = torch.arange(ids.shape[1], device=device)[None].expand(len(prompts), -1)
    run = EnginePass(
        query_positions=positions,
        key_positions=positions,
        ranges=[PromptRanges(((0, n),), ((0, n),)) for n in lengths] if len(set(lengths)) > 1 else None,
        keep_kv=True,
        stop_layer=family.num_layers - 1 if exit_early else None,
    )
    frozen = prefix_context is not None
    with torch.no_grad() if frozen else nullcontext(), prefix_context() if frozen else nullcontext(), running(run):
        family.run(ids, positions, _probe_mask(len(prompts), device))
    return PrefixBatch([run.kv[layer] for layer in range(family.num_layers)], lengths)


@dataclass(frozen=True)
class SuffixLayout:
    """Host-side layout of a suffix pass, moved to the device in one go."""

    ids: torch.Tensor
    """[batch, width]: query span, then (calibrating) the N/A span, each padded to its longest."""
    positions: torch.Tensor
    """[batch, width]: each span continues its own prompt's prefix."""
    segment: torch.Tensor
    """[width]: 0 for the query span's columns, 1 for the N/A span's."""
    real: torch.Tensor
    """[batch, width] bool: a token, not padding."""
    passage: torch.Tensor
    """[batch, longest prefix]: each prefix token's passage (input position), or `most` for none."""
    counts: torch.Tensor
    """[batch] passages per prompt."""
    prefix_lengths: torch.Tensor
    """[batch] tokens of each prompt's prefix (the rest of the prefix batch is padding)."""
    most: int
    """the most passages of any prompt: `passage` marks prefix tokens outside every passage with it."""
    span_lengths: tuple[tuple[int, ...], ...] = ()
    """per prompt, the tokens of its query span (and N/A span): on the host, to find each prompt's own rows."""

    @classmethod
    def build(cls, prompts: Sequence[ListwisePrompt], calibrate: bool, prefix_width: int) -> SuffixLayout:
        spans = [[p.query_ids for p in prompts]] + ([[p.calibration_ids for p in prompts]] if calibrate else [])
        blocks = [_padded(span) for span in spans]
        lengths = torch.tensor([p.query_start for p in prompts])
        positions = torch.cat([lengths[:, None] + torch.arange(b.shape[1])[None] for b in blocks], dim=1)
        segment = torch.cat([torch.full((b.shape[1],), s) for s, b in enumerate(blocks)])
        real = torch.cat(
            [
                torch.arange(b.shape[1])[None] < torch.tensor([len(r) for r in span])[:, None]
                for b, span in zip(blocks, spans)
            ],
            dim=1,
        )
        most = max(len(p.passage_spans) for p in prompts)
        passage = torch.full((len(prompts), prefix_width), most, dtype=torch.long)
        for i, p in enumerate(prompts):
            for position, (start, end) in enumerate(p.passage_spans):
                passage[i, start:end] = position
        counts = torch.tensor([len(p.passage_spans) for p in prompts])
        span_lengths = tuple(tuple(len(span[i]) for span in spans) for i in range(len(prompts)))
        return cls(torch.cat(blocks, dim=1), positions, segment, real, passage, counts, lengths, most, span_lengths)

    def ranges(self, prefix_lengths: Sequence[int], prefix_width: int) -> list[PromptRanges] | None:
        """Each prompt's real rows and the keys it sees (its prefix, then its own spans), or None when no prompt
        of the batch is padded (then the batch runs whole)."""
        widths = [max(lengths) for lengths in zip(*self.span_lengths)]
        if all(p == prefix_width for p in prefix_lengths) and all(list(n) == widths for n in self.span_lengths):
            return None
        starts = [sum(widths[:s]) for s in range(len(widths))]
        out = []
        for lengths, prefix in zip(self.span_lengths, prefix_lengths):
            rows = tuple((start, start + n) for start, n in zip(starts, lengths))
            out.append(PromptRanges(rows, ((0, prefix), *((prefix_width + a, prefix_width + b) for a, b in rows))))
        return out

    def to(self, device) -> SuffixLayout:
        fields = vars(self).items()
        return SuffixLayout(**{k: to_device(v, device) if isinstance(v, torch.Tensor) else v for k, v in fields})


def head_plans(heads: HeadSet, groups: int, device) -> dict[int, HeadPlan]:
    return {layer: HeadPlan.build(wanted, groups, device) for layer, wanted in heads.by_layer().items()}


def query_attention(
    family: ModelFamily,
    heads: HeadSet,
    plans: dict[int, HeadPlan],
    calibrate: bool,
    prefix: PrefixBatch,
    layout: SuffixLayout,
    exit_early: bool = True,
) -> torch.Tensor:
    """[batch, 1 or 2, heads, longest prefix]: mean attention of the query span (and the N/A span) to each prefix
    token, in one pass over the prefix's keys and values (left untouched, reusable). Differentiable under grad."""
    device = family.device
    batch, width = layout.ids.shape
    prefix_width = prefix.kv[0][0].shape[2]
    keys = torch.arange(prefix_width, device=device)
    own = layout.segment[None, :, None] == layout.segment[None, None, :]
    causal = layout.positions[:, None, :] <= layout.positions[:, :, None]
    inside = keys[None, :] < layout.prefix_lengths[:, None]
    allowed = torch.cat([inside[:, None, :].expand(batch, width, prefix_width), own & causal], dim=2)
    segments = torch.stack([(layout.segment == s)[None] & layout.real for s in range(2 if calibrate else 1)], dim=1)
    segments = segments.float() / segments.sum(dim=2, keepdim=True).clamp_min(1)
    run = EnginePass(
        query_positions=layout.positions,
        key_positions=torch.cat([keys[None].expand(batch, -1), layout.positions], dim=1),
        allowed=allowed,
        ranges=layout.ranges(prefix.lengths, prefix_width),
        heads=plans,
        segments=segments,
        prefix=prefix.kv,
        stop_layer=family.num_layers - 1 if exit_early else None,
    )
    with running(run):
        family.run(layout.ids, layout.positions, allowed[:, None])
    slots = {layer: {head: i for i, head in enumerate(wanted)} for layer, wanted in heads.by_layer().items()}
    per_head = [run.attention[layer][:, :, slots[layer][head]] for layer, head in heads.heads]
    return torch.stack(per_head, dim=2)[..., :prefix_width]


def passage_scores(
    attention: torch.Tensor, layout: SuffixLayout, weights: torch.Tensor, config: ScoringConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce token attention to passage scores (DESIGN.md): each span summed per head, times the number of
    passages. Returns (per_head, raw), each [batch, heads, most passages]; raw is uncalibrated and unmasked."""
    batch, _, heads, width = attention.shape
    index, slots = layout.passage, layout.most + 1  # the last slot collects the tokens of no passage
    inside = (index < layout.most).to(attention.dtype)
    tokens = attention[:, 0] - attention[:, 1] if config.calibrate else attention[:, 0]
    keep = inside
    if config.token_mask:
        combined = torch.einsum("h,bht->bt", weights, tokens)
        count = inside.sum(dim=1, keepdim=True)
        mean = (combined * inside).sum(dim=1, keepdim=True) / count
        std = (((combined - mean) ** 2 * inside).sum(dim=1, keepdim=True) / (count - 1).clamp_min(1)).sqrt()
        keep = inside * (combined >= mean - 2 * std).to(attention.dtype)
    expanded = index[:, None, :].expand(batch, heads, width)
    scale = layout.counts.to(attention.dtype)[:, None, None]

    def reduce(values: torch.Tensor) -> torch.Tensor:
        summed = values.new_zeros(batch, heads, slots).scatter_add(2, expanded, values)
        return summed[:, :, : slots - 1] * scale

    return reduce(tokens * keep[:, None]), reduce(attention[:, 0] * inside[:, None])
