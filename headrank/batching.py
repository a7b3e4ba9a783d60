"""Which prompts share a forward pass: sorted by length, packed under a budget of padded tokens."""

from __future__ import annotations

from collections.abc import Sequence

CPU_BATCH_TOKENS = 1
"""On a CPU one prompt per pass: measured on 2 cores (docs/benchmark.md, "Batched prompts"), padded batches of
DL21 prompts ran no faster per prompt than single prompts, so the default never pays for padding there."""
GPU_BATCH_TOKENS = 65536
"""On a GPU a pass needs many prompts to fill the device; 64k padded tokens (about 26 DL19 prompts of 2.5k)
keeps a 4B model's activations of a truncated pass within a few GB (benchmarks/gpu.sh measures the choice)."""


def default_batch_tokens(device: str) -> int:
    return GPU_BATCH_TOKENS if str(device).startswith("cuda") else CPU_BATCH_TOKENS


def token_batches(lengths: Sequence[int], max_tokens: int, max_prompts: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into groups whose padded size (count x longest) stays within
    `max_tokens` (and `max_prompts`); a prompt longer than the budget gets a group of its own."""
    if max_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1, got {max_tokens}")
    if max_prompts is not None and max_prompts < 1:
        raise ValueError(f"the prompts per batch must be at least 1, got {max_prompts}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        # longest first: the group's first prompt is its longest, so its padded size is count x that length
        if group and (len(group) + 1) * lengths[group[0]] <= max_tokens and len(group) < (max_prompts or len(order)):
            group.append(i)
        else:
            groups.append([i])
    return groups
