"""Paired comparison of runs on the same queries: per-query wins, losses and ties, and a randomization test.

A mean difference of 0.005 nDCG@10 over 43 queries is usually noise; the sign-flip test says how likely that
is (Fisher's paired randomization test, the one Smucker et al. 2007 recommend for IR)."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from headrank.data import Qrels, Run
from headrank.evaluation.metrics import per_query

EXACT_UP_TO = 16
"""queries up to which every sign pattern is enumerated (2^16); above it, Monte Carlo trials."""


@dataclass(frozen=True)
class Comparison:
    system: str
    measure: str
    queries: int
    mean: float
    baseline_mean: float
    wins: int
    losses: int
    ties: int
    p_value: float
    """two-sided, paired randomization test of the mean difference against the baseline."""

    @property
    def delta(self) -> float:
        return self.mean - self.baseline_mean


def randomization_p(differences: Sequence[float], trials: int = 100_000, seed: int = 0) -> float:
    """Two-sided p of |mean difference| under random sign flips: exact for few queries, else sampled."""
    d = np.asarray(differences, dtype=float)
    if not np.any(d):
        return 1.0
    observed = abs(d.mean()) - 1e-12
    if len(d) <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        return float(np.mean(np.abs(signs @ d / len(d)) >= observed))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, trials, 10_000):
        signs = rng.choice((1.0, -1.0), size=(min(10_000, trials - start), len(d)))
        hits += int(np.sum(np.abs(signs @ d / len(d)) >= observed))
    return (hits + 1) / (trials + 1)


def compare_runs(
    baseline: Run,
    systems: Mapping[str, Run],
    qrels: Qrels,
    measure: str = "nDCG@10",
    tie: float = 1e-9,
    qids: Collection[str] | None = None,
) -> list[Comparison]:
    """Each system against the baseline, query by query, on `qids` if given (e.g. the queries a model was
    or was not trained on). The runs must cover the same judged queries."""
    if qids is not None:
        wanted = set(qids)
        qrels = {q: judged for q, judged in qrels.items() if q in wanted}
        if not qrels:
            raise ValueError("none of the given query ids has relevance judgements")
    base = per_query(baseline, qrels, measure)
    rows = []
    for name, run in systems.items():
        scores = per_query(run, qrels, measure)
        if scores.keys() != base.keys():
            raise ValueError(
                f"{name} covers {len(scores)} judged queries and the baseline {len(base)}, not the same ones: "
                "compare runs of the same queries"
            )
        diff = [scores[q] - base[q] for q in sorted(base)]
        rows.append(
            Comparison(
                system=name,
                measure=measure,
                queries=len(diff),
                mean=float(np.mean(list(scores.values()))),
                baseline_mean=float(np.mean(list(base.values()))),
                wins=sum(x > tie for x in diff),
                losses=sum(x < -tie for x in diff),
                ties=sum(abs(x) <= tie for x in diff),
                p_value=randomization_p(diff),
            )
        )
    return rows
