"""Timing and memory measurement shared by the benchmarks: wall and CPU seconds, peak memory (resident set on a
CPU, the allocator's peak on CUDA), matmul FLOP counts of a truncated pass, and the device's matmul throughput."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def release_freed_memory() -> None:
    """Hand memory that earlier calls freed back to the OS (glibc keeps it otherwise), so that the growth
    measured next starts from what is really in use."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name and hasattr(libc := ctypes.CDLL(name), "malloc_trim"):
        libc.malloc_trim(0)


class PeakMemory:
    """Peak memory during a block: resident set sampled every 5 ms on CPU, allocator peak on CUDA."""

    def __init__(self, device: str):
        self.device = device
        self.peak_mb = 0.0
        self.base_mb = 0.0

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base_mb = torch.cuda.memory_allocated() / 2**20
            return self
        release_freed_memory()
        self.base_mb = self.peak_mb = self.rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self.peak_mb = max(self.peak_mb, self.rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.base_mb


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds now. CPU time of this process is what a shared machine cannot inflate: other jobs
    on the cores lengthen the wall time of a call, not the work it does (exact with one thread)."""
    return time.perf_counter(), time.process_time()


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_mb: float = 0.0
    growth_mb: float = 0.0

    def add(self, start: tuple[float, float]) -> None:
        wall, cpu = clock()
        self.seconds.append(wall - start[0])
        self.cpu_seconds.append(cpu - start[1])

    @property
    def per_query(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_per_query(self) -> float:
        return statistics.median(self.cpu_seconds)


def timed(fn: Callable[[], object], device: str, repeats: int = 1) -> tuple[Timing, object]:
    """Median wall time of `repeats` calls and the peak memory over them (the first result is returned)."""
    timing, result = Timing(), None
    with PeakMemory(device) as memory:
        for _ in range(repeats):
            sync(device)
            start = clock()
            out = fn()
            sync(device)
            timing.add(start)
            result = out if result is None else result
    timing.peak_mb, timing.growth_mb = memory.peak_mb, memory.growth_mb
    return timing, result


def layer_flops(config, tokens: int, context_before: int, causal_block: bool, qkv_only: bool = False) -> float:
    """FLOPs of one decoder layer for `tokens` new tokens after `context_before` cached ones (matmuls only).

    Projections and MLP: 2 FLOPs per weight per token. Attention: QK^T and AV, 2 * 2 * heads * head_dim per
    (query, key) pair; a causal block sees half of itself. `qkv_only`: the last layer under early exit,
    which stops once its keys/values are cached (the few captured rows of the query pass are left out)."""
    d, ff = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    qkv = d * heads * head_dim + 2 * d * kv * head_dim
    if qkv_only:
        return 2.0 * qkv * tokens
    weights = qkv + heads * head_dim * d + 3 * d * ff
    pairs = tokens * context_before + (tokens * (tokens + 1) / 2 if causal_block else tokens * tokens)
    return 2.0 * weights * tokens + 4.0 * heads * head_dim * pairs


def pass_flops(
    config, depth: int, prefix_len: int, suffix_rows: int, suffix_width: int, exit_early: bool = True
) -> dict[str, float]:
    """The truncated forward of one list: the prefix pass, then `suffix_rows` suffixes over its cache."""

    def stack(tokens: int, before: int) -> float:
        full = depth - 1 if exit_early else depth
        last = layer_flops(config, tokens, before, True, qkv_only=True) if exit_early else 0.0
        return full * layer_flops(config, tokens, before, True) + last

    prefix = stack(prefix_len, 0)
    suffix = suffix_rows * stack(suffix_width, prefix_len)
    return {"prefix": prefix, "suffix": suffix, "total": prefix + suffix}


def matmul_throughput(
    device: str, m: int, k: int, n: int, repeats: int = 10, dtype: torch.dtype = torch.float32
) -> float:
    """FLOP per CPU-second (per wall second on CUDA) of a plain [m,k] @ [k,n] in the model's dtype: what the
    model's biggest matmuls can reach here."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    timing, _ = timed(lambda: a @ b, device, repeats)
    return 2.0 * m * k * n / (timing.per_query if device.startswith("cuda") else timing.cpu_per_query)
