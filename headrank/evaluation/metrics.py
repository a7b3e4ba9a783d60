"""Metrics through ir-measures, list metrics on score arrays (for selection and training curves), the middle
zone, and the cost of a run: seconds per query and peak resident memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headrank.data import Qrels, Run

DEFAULT_MEASURES = ("nDCG@10", "nDCG@5", "nDCG@20", "RR@10", "R@20")


def _key(measure) -> str:
    return str(measure).lower()


def evaluate(run: Run, qrels: Qrels, measures: Iterable[str] = DEFAULT_MEASURES) -> dict[str, float]:
    """Mean of each measure over the queries that are both judged and in the run."""
    import ir_measures

    parsed = [ir_measures.parse_measure(m) for m in measures]
    judged = {q: docs for q, docs in qrels.items() if q in run}
    if not judged:
        raise ValueError("no query of the run has relevance judgements")
    result = ir_measures.calc_aggregate(parsed, judged, {q: run[q] for q in judged})
    return {_key(m): float(result[m]) for m in parsed}


def per_query(run: Run, qrels: Qrels, measure: str = "nDCG@10") -> dict[str, float]:
    import ir_measures

    m = ir_measures.parse_measure(measure)
    judged = {q: docs for q, docs in qrels.items() if q in run}
    return {r.query_id: float(r.value) for r in ir_measures.iter_calc([m], judged, {q: run[q] for q in judged})}


def ndcg_at(scores: np.ndarray, grades: np.ndarray, ideal: Sequence[int], k: int = 10) -> np.ndarray:
    """trec_eval's nDCG@k (linear gains) of every row of `scores` [heads, docs]; `ideal` = all judged grades."""
    top = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (grades[top] * discounts[: top.shape[-1]]).sum(-1)
    best = np.sort(np.asarray([g for g in ideal if g > 0], dtype=float))[::-1][:k]
    idcg = (best * discounts[: len(best)]).sum()
    return dcg / idcg if idcg > 0 else np.zeros(dcg.shape)


def adjacent_pairs(grades: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d+, d-) positions of every pair whose grades differ by exactly one: what selection measures, ALPS samples,
    the listwise loss and the learning curves count."""
    return np.nonzero(grades[:, None] - grades[None, :] == 1)


def adjacent_pair_accuracy(scores: np.ndarray, grades: np.ndarray) -> tuple[np.ndarray, int]:
    """Per row, the share of pairs whose grades differ by exactly one that the scores order right."""
    plus, minus = adjacent_pairs(grades)
    if len(plus) == 0:
        return np.zeros(scores.shape[0]), 0
    return (scores[:, plus] > scores[:, minus]).mean(-1), len(plus)


def middle_zone(n: int) -> np.ndarray:
    """Input positions in the middle half of a list of n (where attention homogenises: DESIGN.md)."""
    zone = np.zeros(n, dtype=bool)
    zone[n // 4 : n - n // 4] = True
    return zone


def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def rss_mb() -> float | None:
    """Resident set size of this process now, from /proc (None where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024), 1)


def machine() -> str:
    """The CPU, its cores and what torch dispatches to on it (its capability and the native-bfloat16 flags):
    what a timing needs beside it to mean anything."""

    from headrank.engine.precision import NATIVE_BF16_FLAGS, cpu_flags

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    described = f"{cpu}, {os.cpu_count()} cores"
    if "torch" in sys.modules:
        import torch

        native = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
        described += f", torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
        described += f" with {', '.join(native)}" if native else " without AVX512-BF16/AMX"
    return described


@dataclass
class Stopwatch:
    """Wall time of the measured work only (model loading excluded)."""

    seconds: float = 0.0
    count: int = 0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
        self.count += 1

    @property
    def per_item(self) -> float:
        return self.seconds / self.count if self.count else 0.0


def format_table(rows: list[Mapping[str, object]], columns: list[str]) -> str:
    """A small markdown table (what the CLI prints and the README shows)."""

    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
