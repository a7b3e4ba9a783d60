"""Which prompts share a forward pass: sorted by length, packed under a budget of padded tokens."""

from __future__ import annotations

from collections.abc import Sequence

CPU_BATCH_TOKENS = 1
"""On a CPU one prompt per pass: on 2 cores (docs/benchmark.md, section 0, chosen on DL21) padded batches ran
0.98x-1.31x the time of single prompts, so the default never pays for padding there."""
GPU_BATCH_TOKENS = 65536
"""On a GPU a pass needs many prompts to fill the device: 64k padded tokens is about 26 DL19 prompts of 2.5k.
Not yet measured: benchmarks/gpu.sh times 16k, 64k and 128k, and the choice follows its table."""


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
