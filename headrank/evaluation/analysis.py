"""The middle zone: do relevant passages placed in the middle of the input still reach the top?

Reads the `scores.jsonl` and `metrics.json` that `headrank eval` writes, so no model is run again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headrank.data import DataError, Qrels
from headrank.engine.prompt import input_order
from headrank.evaluation.metrics import middle_zone


@dataclass
class ZoneReport:
    label: str
    selectivity_gap: float
    top_quartile_relevant_middle: float
    top_quartile_irrelevant_middle: float
    middle_variance: float
    """mean over queries of the variance of middle-zone scores, each list standardised by its own spread."""
    middle_variance_raw: float
    first_stage_tau: float
    """mean Kendall tau between the reranker's order and the first stage's (1: the order was kept)."""
    queries: int
    by_position_relevant: list[float]
    by_position_irrelevant: list[float]


def load_scores(folder: Path) -> tuple[dict[str, list[tuple[int, str, float]]], dict]:
    path = folder / "scores.jsonl"
    if not path.is_file() or not (folder / "metrics.json").is_file():
        raise DataError(f"{path} not found: run `headrank eval` with a reranker (not bm25) first")
    metrics = json.loads((folder / "metrics.json").read_text())
    lists: dict[str, list[tuple[int, str, float]]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        lists.setdefault(row["qid"], []).append((row["first_stage_rank"], row["docid"], row["score"]))
    return lists, metrics


def zone_report(folder: Path, qrels: Qrels, relevant_grade: int = 2, label: str | None = None) -> ZoneReport:
    """Selectivity gap = P(top quartile | relevant, middle) - P(top quartile | irrelevant, middle)."""
    lists, metrics = load_scores(folder)
    hits = {True: [], False: []}
    variances, raw_variances, taus = [], [], []
    by_position: dict[bool, dict[int, list[float]]] = {True: {}, False: {}}
    for qid, rows in lists.items():
        rows.sort()
        n = len(rows)
        order = input_order(n, metrics.get("order", "reverse"))
        position = {doc: p for p, doc in enumerate(order)}  # first-stage index -> input position
        scores = np.asarray([s for _, _, s in rows], dtype=float)
        spread = scores.std() or 1.0
        standard = (scores - scores.mean()) / spread
        top = set(np.argsort(-scores, kind="stable")[: max(1, n // 4)].tolist())
        zone = middle_zone(n)
        mid = [i for i in range(n) if zone[position[i]]]
        variances.append(standard[mid].var())
        raw_variances.append(scores[mid].var())
        taus.append(kendall_tau(scores, -np.arange(n)))  # rows are in first-stage order, best first
        judged = qrels.get(qid, {})
        for i, (_, doc, _) in enumerate(rows):
            relevant = judged.get(doc, 0) >= relevant_grade
            by_position[relevant].setdefault(position[i], []).append(float(standard[i]))
            if zone[position[i]]:
                hits[relevant].append(i in top)
    rate = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    width = max((max(d) for d in by_position.values() if d), default=-1) + 1
    curve = {
        k: [float(np.mean(d[p])) if p in d else float("nan") for p in range(width)] for k, d in by_position.items()
    }
    return ZoneReport(
        label=label or metrics.get("method", folder.name),
        selectivity_gap=rate[True] - rate[False],
        top_quartile_relevant_middle=rate[True],
        top_quartile_irrelevant_middle=rate[False],
        middle_variance=float(np.mean(variances)),
        middle_variance_raw=float(np.mean(raw_variances)),
        first_stage_tau=float(np.mean(taus)),
        queries=len(lists),
        by_position_relevant=curve[True],
        by_position_irrelevant=curve[False],
    )


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a: (concordant - discordant) pairs over all pairs."""
    i, j = np.triu_indices(len(a), 1)
    if not len(i):
        return float("nan")
    return float(np.mean(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])))


def plot_positions(reports: Sequence[ZoneReport], path: Path) -> None:
    """Standardised score by input position, relevant vs irrelevant, one panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4.5 * len(reports), 3.6), sharey=True, squeeze=False)
    for ax, report in zip(axes[0], reports):
        n = len(report.by_position_relevant)
        zone = middle_zone(n)
        ax.axvspan(np.argmax(zone) - 0.5, n - np.argmax(zone[::-1]) - 0.5, color="0.92", label="middle zone")
        ax.plot(report.by_position_relevant, "o-", label="relevant")
        ax.plot(report.by_position_irrelevant, "s-", label="not relevant")
        ax.set_title(f"{report.label}: gap {report.selectivity_gap:+.3f}")
        ax.set_xlabel("input position (0 = first in the prompt)")
    axes[0][0].set_ylabel("score (standardised per list)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
