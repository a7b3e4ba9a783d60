"""The attention function of every engine pass: SDPA for the layer output, float32 query-span rows at wanted layers.

A pass (`EnginePass`) says where each row and key sits (explicit positions, which keys a row may see), which
keys and values to put in front of the pass's own (a batch of encoded prefixes), whether to keep this pass's
keys and values, and which heads to capture. The mask is the engine's, not the model's: it is built once per
pass (and per sliding window) from positions, so padded batches, sliding-window layers and a prefix shared by
the query and the N/A rows are all scored exactly as the model attends. Only the rows of the query span are
materialised, averaged per segment (query, N/A) straight away; they stay differentiable for training.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
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
    keep_kv: bool = False
    stop_layer: int | None = None
    """leave the pass at this layer once its keys/values are kept and its rows captured: its attention output,
    its MLP and the final norm feed nothing that scoring reads (the LM head never runs)."""
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    attention: dict[int, torch.Tensor] = field(default_factory=dict)
    """layer -> [batch, segments, wanted heads, kv_len] mean attention of each segment's rows."""
    _masks: dict = field(default_factory=dict)

    def mask(self, window: int | None) -> torch.Tensor | None:
        """[batch, 1, q_len, kv_len] bool for a layer with this sliding window; None means plain causal."""
        if window is None and self.allowed is None:
            return None
        if window not in self._masks:
            q = self.query_positions[:, :, None]
            k = self.key_positions[:, None, :]
            allowed = self.allowed if self.allowed is not None else k <= q
            if window is not None:
                allowed = allowed & (q - k < window)
            self._masks[window] = allowed[:, None]
        return self._masks[window]


class _StopForward(Exception):
    """Raised at `EnginePass.stop_layer`; `running` swallows it, so the pass just ends there."""


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
    mask: torch.Tensor | None,
    scaling: float | None,
    plan: HeadPlan,
    run: EnginePass,
) -> torch.Tensor:
    """Float32 softmax rows of the wanted heads, averaged per segment: [batch, segments, wanted, kv_len]."""
    batch, _, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    used = plan.kv_index.numel()
    q = query.index_select(1, plan.q_index).float().reshape(batch, used, plan.per_kv * q_len, head_dim)
    k = key.index_select(1, plan.kv_index).float()
    scale = scaling if scaling is not None else head_dim**-0.5
    logits = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).view(batch, used * plan.per_kv, q_len, kv_len)
    if mask is None:
        mask = (run.key_positions[:, None, :] <= run.query_positions[:, :, None])[:, None]
    probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bhqk,bsq->bshk", probs, run.segments).index_select(2, plan.out_index)


def headrank_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None, softcap=None, **kwargs
):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    run: EnginePass | None = getattr(_state, "engine_pass", None)
    if run is None:  # an ordinary forward (generation, RankGPT): plain SDPA with the model's own mask
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if softcap is not None:
        raise UnsupportedAttention("attention logit soft-capping (Gemma 2) is not supported by the engine")
    layer = module.layer_idx
    if run.prefix is not None:
        prefix_key, prefix_value = run.prefix[layer]
        key, value = torch.cat([prefix_key, key], dim=2), torch.cat([prefix_value, value], dim=2)
    if run.keep_kv:
        run.kv[layer] = (key, value)
    mask = run.mask(sliding_window)
    plan = run.heads.get(layer)
    if plan is not None:
        run.attention[layer] = query_row_attention(query, key, mask, scaling, plan, run)
    if layer == run.stop_layer:
        raise _StopForward  # this layer's keys/values are kept and its rows captured
    return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs)


def register_attention() -> None:
    """Make `attn_implementation="headrank"` known to transformers (attention and mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, headrank_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
