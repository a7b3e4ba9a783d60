"""An attention function that runs SDPA for the layer output and keeps float32 query-span rows at wanted layers.

Only the rows of the query span are ever materialised, and only for the heads asked for, so memory is
O(query tokens x context) per wanted layer instead of O(context^2) per layer. The rows are averaged over
the query tokens straight away (that is all scoring needs) and stay differentiable for training.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

IMPLEMENTATION = "headrank"

_state = threading.local()


@dataclass
class Capture:
    """What to keep during one forward pass, and what was kept."""

    heads: Mapping[int, Sequence[int]]
    """layer index -> query-head indices wanted at that layer."""
    row_mask: torch.Tensor | None = None
    """[batch, q_len] bool: the rows of this pass that belong to the query span (None: every row)."""
    stop_layer: int | None = None
    """leave the pass at this layer once its keys/values are cached and its rows kept: its attention output,
    its MLP and the final norm feed nothing that scoring reads (the LM head never runs)."""
    attention: dict[int, torch.Tensor] = field(default_factory=dict)
    """layer index -> [batch, len(heads[layer]), kv_len] mean attention of the query-span rows."""


class _StopForward(Exception):
    """Raised at `Capture.stop_layer`; `capturing` swallows it, so the pass just ends there."""


@contextmanager
def capturing(capture: Capture) -> Iterator[Capture]:
    previous = getattr(_state, "capture", None)
    _state.capture = capture
    try:
        yield capture
    except _StopForward:
        pass
    finally:
        _state.capture = previous


def query_row_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
    heads: Sequence[int],
    row_mask: torch.Tensor | None,
) -> torch.Tensor:
    """Float32 softmax rows of the wanted heads, averaged over the query-span rows: [batch, heads, kv_len]."""
    batch, _, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    groups = query.shape[1] // key.shape[1]
    head_index = torch.as_tensor(list(heads), device=query.device)
    q = query.index_select(1, head_index).float()
    k = key.index_select(1, torch.div(head_index, groups, rounding_mode="floor")).float()
    scale = scaling if scaling is not None else head_dim**-0.5
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if attention_mask is None:
        rows = torch.arange(q_len, device=query.device) + (kv_len - q_len)
        allowed = torch.arange(kv_len, device=query.device)[None, :] <= rows[:, None]
        logits = logits.masked_fill(~allowed, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        logits = logits.masked_fill(~attention_mask[:, :, :, :kv_len], float("-inf"))
    else:
        logits = logits + attention_mask[:, :, :, :kv_len].float()
    probs = torch.softmax(logits, dim=-1)
    if row_mask is None:
        return probs.mean(dim=2)
    weights = row_mask.to(probs.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
    return torch.einsum("bhqk,bq->bhk", probs.nan_to_num(0.0), weights)


def headrank_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    capture = getattr(_state, "capture", None)
    if capture is not None:
        heads = capture.heads.get(module.layer_idx)
        if heads:
            capture.attention[module.layer_idx] = query_row_attention(
                module, query, key, attention_mask, scaling, heads, capture.row_mask
            )
        if module.layer_idx == capture.stop_layer:
            raise _StopForward  # the attention module has already put this layer's keys/values in the cache
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def register_attention() -> None:
    """Make `attn_implementation="headrank"` known to transformers (attention and mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, headrank_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
