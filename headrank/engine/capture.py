"""The attention function of every engine pass: SDPA for the layer output, float32 query-span rows at wanted layers.

A pass (`EnginePass`) says where each row and key sits (explicit positions, which keys a row may see), which
keys and values to put in front of the pass's own (a batch of encoded prefixes), whether to keep this pass's
keys and values, and which heads to capture. The mask is the engine's, not the model's: it is built once per
pass (and per sliding window) from positions, so padded batches, sliding-window layers and a prefix shared by
the query and the N/A rows are all scored exactly as the model attends. Only the rows of the query span are
materialised, averaged per segment (query, N/A) straight away; they stay differentiable for training.

In a batch of prompts of different lengths, attention runs prompt by prompt over each one's own rows and keys
(`PromptRanges`), so that a prompt scores exactly as in a pass of its own: SDPA's kernels block by sequence
length, so padding alone changed bfloat16 scores by up to 2e-3, and a server's answers would have depended on
the traffic that shared their pass. The projections and MLPs still run batched (their rows do not depend on
the batch)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

IMPLEMENTATION = "headrank"

_state = threading.local()


@dataclass(frozen=True)
class HeadPlan:
    """Index tensors of one layer's wanted heads, built once per device: the query heads grouped by the key head
    they share (padded to the same count by repeating one), so K is read once per key head, never copied per
    query head."""

    q_index: torch.Tensor
    """[kv_used * per_kv] query heads, grouped by key head."""
    kv_index: torch.Tensor
    """[kv_used] the key heads those groups read."""
    out_index: torch.Tensor
    """[wanted] where each wanted head (in the caller's order) sits in the grouped rows."""
    per_kv: int

    @classmethod
    def build(cls, heads: Sequence[int], groups: int, device) -> HeadPlan:
        by_kv: dict[int, list[int]] = {}
        for head in heads:
            by_kv.setdefault(head // groups, []).append(head)
        per_kv = max(len(v) for v in by_kv.values())
        q_index, out_slot = [], {}
        for g, (_, members) in enumerate(sorted(by_kv.items())):
            for j, head in enumerate(members):
                out_slot[head] = g * per_kv + j
            q_index += members + [members[0]] * (per_kv - len(members))
        return cls(
            q_index=torch.tensor(q_index, device=device),
            kv_index=torch.tensor(sorted(by_kv), device=device),
            out_index=torch.tensor([out_slot[h] for h in heads], device=device),
            per_kv=per_kv,
        )


Spans = tuple[tuple[int, int], ...]
"""(start, end) ranges along one axis, in order."""


@dataclass(frozen=True)
class PromptRanges:
    """One prompt's place in a padded pass: its real rows and the keys it may see, so its attention can be
    computed over exactly the tensors a pass of its own would have."""

    rows: Spans
    keys: Spans


def take(tensor: torch.Tensor, dim: int, spans: Spans) -> torch.Tensor:
    """The spans of `tensor` along `dim`, one after another."""
    parts = [tensor.narrow(dim, start, end - start) for start, end in spans]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def spread(tensor: torch.Tensor, dim: int, spans: Spans, size: int) -> torch.Tensor:
    """The inverse of `take`: `tensor`'s pieces put back at `spans` of an axis of `size`, zeros elsewhere
    (built by concatenation, not in place, so it stays differentiable)."""
    parts, at, used = [], 0, 0
    for start, end in spans:
        if start > at:
            parts.append(_zeros_like_along(tensor, dim, start - at))
        parts.append(tensor.narrow(dim, used, end - start))
        used, at = used + end - start, end
    if size > at:
        parts.append(_zeros_like_along(tensor, dim, size - at))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _zeros_like_along(tensor: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = length
    return tensor.new_zeros(shape)


@dataclass
class EnginePass:
    """What one forward pass of the engine does, and what it kept."""

    query_positions: torch.Tensor
    """[batch, q_len] position of each row."""
    key_positions: torch.Tensor
    """[batch, kv_len] position of each key (prefix keys first, then the pass's own)."""
    allowed: torch.Tensor | None = None
    """[batch, q_len, kv_len] bool: which keys each row may see before any window (None: causal by position)."""
    heads: Mapping[int, HeadPlan] = field(default_factory=dict)
    segments: torch.Tensor | None = None
    """[batch, segments, q_len] row weights (each segment's rows sum to one): the query and the N/A span of each
    prompt. Needed when heads are captured."""
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
    """keys and values per layer put in front of this pass's own ([batch, kv_heads, prefix_len, head_dim])."""
    ranges: Sequence[PromptRanges] | None = None
    """per prompt of a padded batch: attention then runs prompt by prompt (None: the batch has no padding)."""
    keep_kv: bool = False
    stop_layer: int | None = None
    """leave the pass at this layer once its keys/values are kept and its rows captured: its attention output,
    its MLP and the final norm feed nothing that scoring reads (the LM head never runs)."""
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    attention: dict[int, torch.Tensor] = field(default_factory=dict)
    """layer -> [batch, segments, wanted heads, kv_len] mean attention of each segment's rows."""
    _masks: dict = field(default_factory=dict)

    def mask(self, window: int | None, prompt: int | None = None) -> torch.Tensor | None:
        """[batch, 1, q_len, kv_len] bool for a layer with this sliding window, or [1, 1, rows, keys] over
        `prompt`'s own rows and keys (`ranges`); None means plain causal. Built once per pass, not per layer."""
        if window is None and self.allowed is None:
            return None
        if (window, prompt) not in self._masks:
            if prompt is None:
                q = self.query_positions[:, :, None]
                k = self.key_positions[:, None, :]
                allowed = self.allowed if self.allowed is not None else k <= q
                if window is not None:
                    allowed = allowed & (q - k < window)
                self._masks[window, None] = allowed[:, None]
            else:
                r = self.ranges[prompt]
                whole = self.mask(window)[prompt : prompt + 1]
                self._masks[window, prompt] = take(take(whole, 2, r.rows), 3, r.keys)
        return self._masks[window, prompt]

    def causal(self, prompt: int | None = None) -> torch.Tensor:
        """The causal mask by position, of the whole batch or of `prompt`'s own rows and keys, for capturing rows
        in a pass with no mask of its own."""
        q, k = self.query_positions, self.key_positions
        if prompt is not None:
            r = self.ranges[prompt]
            q, k = take(q[prompt : prompt + 1], 1, r.rows), take(k[prompt : prompt + 1], 1, r.keys)
        return (k[:, None, :] <= q[:, :, None])[:, None]


class _StopForward(Exception):
    """Raised at `EnginePass.stop_layer`; `running` swallows it, so the pass just ends there."""


class Interrupted(Exception):
    """Raised inside a pass, at the next layer, once the check given to `interruptible` says stop: the caller's
    work is no longer wanted (its client went away, the server is shutting down)."""


@contextmanager
def interruptible(check: Callable[[], bool]) -> Iterator[None]:
    """Engine passes run in this thread ask `check()` before each layer and raise `Interrupted` when it is true,
    so that abandoned work stops within a layer instead of at the end of a pass (a pass over a long window takes
    seconds on a CPU). `check` must not synchronise with the device."""
    previous = getattr(_state, "interrupt", None)
    _state.interrupt = check
    try:
        yield
    finally:
        _state.interrupt = previous


class UnsupportedAttention(ValueError):
    """A family whose attention the engine cannot reproduce exactly."""


@contextmanager
def running(engine_pass: EnginePass) -> Iterator[EnginePass]:
    previous = getattr(_state, "engine_pass", None)
    _state.engine_pass = engine_pass
    try:
        yield engine_pass
    except _StopForward:
        pass
    finally:
        _state.engine_pass = previous


def query_row_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor,
    scaling: float | None,
    plan: HeadPlan,
    segments: torch.Tensor,
) -> torch.Tensor:
    """Float32 softmax rows of the wanted heads, averaged per segment: [batch, segments, wanted, kv_len]."""
    batch, _, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    used = plan.kv_index.numel()
    q = query.index_select(1, plan.q_index).float().reshape(batch, used, plan.per_kv * q_len, head_dim)
    k = key.index_select(1, plan.kv_index).float()
    scale = scaling if scaling is not None else head_dim**-0.5
    logits = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).view(batch, used * plan.per_kv, q_len, kv_len)
    probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bhqk,bsq->bshk", probs, segments).index_select(2, plan.out_index)


def _layer_attention(module, query, key, value, window, run: EnginePass, plan: HeadPlan | None, **sdpa):
    """(layer output [batch, q_len, heads, head_dim] or None at the stop layer, captured rows or None) over the
    whole batch, or prompt by prompt over each one's own rows and keys when the batch is padded."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    stop = module.layer_idx == run.stop_layer

    def one(q, k, v, prompt: int | None, segments):
        mask = run.mask(window, prompt)
        captured = None
        if plan is not None:
            seen = mask if mask is not None else run.causal(prompt)
            captured = query_row_attention(q, k, seen, sdpa.get("scaling"), plan, segments)
        return None if stop else sdpa_attention_forward(module, q, k, v, mask, **sdpa)[0], captured

    if run.ranges is None:
        return one(query, key, value, None, run.segments)
    outputs, captured = [], []
    for i, r in enumerate(run.ranges):
        out, rows = one(
            take(query[i : i + 1], 2, r.rows),
            take(key[i : i + 1], 2, r.keys),
            take(value[i : i + 1], 2, r.keys),
            i,
            None if run.segments is None else take(run.segments[i : i + 1], 2, r.rows),
        )
        if out is not None:
            outputs.append(spread(out, 1, r.rows, query.shape[2]))
        if rows is not None:
            captured.append(spread(rows, 3, r.keys, key.shape[2]))
    return (torch.cat(outputs) if outputs else None), (torch.cat(captured) if captured else None)


def headrank_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None, softcap=None, **kwargs
):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    run: EnginePass | None = getattr(_state, "engine_pass", None)
    if run is None:  # an ordinary forward (generation, RankGPT): plain SDPA with the model's own mask
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    interrupt = getattr(_state, "interrupt", None)
    if interrupt is not None and interrupt():
        raise Interrupted("the pass was abandoned")
    if softcap is not None:
        raise UnsupportedAttention("attention logit soft-capping (Gemma 2) is not supported by the engine")
    layer = module.layer_idx
    if run.prefix is not None:
        prefix_key, prefix_value = run.prefix[layer]
        key, value = torch.cat([prefix_key, key], dim=2), torch.cat([prefix_value, value], dim=2)
    if run.keep_kv:
        run.kv[layer] = (key, value)
    plan = run.heads.get(layer)
    output, captured = _layer_attention(
        module, query, key, value, sliding_window, run, plan, dropout=dropout, scaling=scaling, **kwargs
    )
    if captured is not None:
        run.attention[layer] = captured
    if output is None:
        raise _StopForward  # this layer's keys/values are kept and its rows captured
    return output, None


def register_attention() -> None:
    """Make `attn_implementation="headrank"` known to transformers (attention and mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, headrank_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
