"""Which prompts share a forward pass: sorted by length, packed under a budget of padded tokens."""

from __future__ import annotations

from collections.abc import Sequence

CPU_BATCH_TOKENS = 1
"""On a CPU one prompt per pass: on 2 cores (docs/benchmark.md, section 0, chosen on DL21) padded batches ran
0.98x-1.31x the time of single prompts, so the default never pays for padding there."""
GPU_BATCH_TOKENS = 16384
"""On a GPU a pass needs several prompts to fill the device: on an H200 at Qwen3-4B shapes (docs/benchmark.md,
section 0) 16k padded tokens (about 7 top-20 prompts) ran 41.7 queries/s, 64k 39.0, 128k 39.4, one prompt per
pass 30.4; for top-100 prompts (10k tokens) the budget changed nothing."""


def default_batch_tokens(device: str) -> int:
    return GPU_BATCH_TOKENS if str(device).startswith("cuda") else CPU_BATCH_TOKENS


def token_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices into `lengths`, longest first, cut into groups whose padded size (count x longest) stays within
    `max_tokens`; a prompt longer than the budget gets a group of its own."""
    if max_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        # longest first: the group's first prompt is its longest, so its padded size is count x that length
        if group and (len(group) + 1) * lengths[group[0]] <= max_tokens:
            group.append(i)
        else:
            groups.append([i])
    return groups
