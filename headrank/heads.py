"""Head statistics on labelled lists and entropy-regularized head selection (D - lambda * H)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from headrank.data import CandidateList, Qrels
from headrank.evaluate import adjacent_pair_accuracy, ndcg_at
from headrank.headset import HeadSet
from headrank.ranker import HeadRanker
from headrank.scoring import ScoringConfig, query_attention, score_list


def normalized_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of each row of a distribution over the last axis, divided by log(n): 0 one-hot, 1 uniform."""
    p = np.clip(p, 0, None)
    p = p / np.clip(p.sum(-1, keepdims=True), 1e-12, None)
    n = p.shape[-1]
    if n < 2:
        return np.zeros(p.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return h / np.log(n)


@dataclass
class HeadTable:
    """Per-head passage scores of labelled lists: what selection and analysis are computed from."""

    heads: list[tuple[int, int]]
    qids: list[str]
    calibrated: list[np.ndarray]
    """per query [heads, docs] calibrated scores, docs in first-stage order."""
    raw: list[np.ndarray]
    """per query [heads, docs] uncalibrated attention mass (for the entropy)."""
    grades: list[np.ndarray]
    ideal: list[list[int]]

    def save(self, path: str | Path) -> None:
        arrays = {"heads": np.asarray(self.heads), "qids": np.asarray(self.qids)}
        for i in range(len(self.qids)):
            arrays[f"cal{i}"], arrays[f"raw{i}"] = self.calibrated[i], self.raw[i]
            arrays[f"grades{i}"], arrays[f"ideal{i}"] = self.grades[i], np.asarray(self.ideal[i])
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> HeadTable:
        z = np.load(path, allow_pickle=False)
        n = len(z["qids"])
        return cls(
            heads=[tuple(map(int, h)) for h in z["heads"]],
            qids=[str(q) for q in z["qids"]],
            calibrated=[z[f"cal{i}"] for i in range(n)],
            raw=[z[f"raw{i}"] for i in range(n)],
            grades=[z[f"grades{i}"] for i in range(n)],
            ideal=[z[f"ideal{i}"].tolist() for i in range(n)],
        )


@torch.inference_mode()
def collect_head_table(
    ranker: HeadRanker, lists: Sequence[CandidateList], qrels: Qrels, progress: bool = True
) -> HeadTable:
    """One pass per list over every head the ranker holds: calibrated and raw per-head passage scores."""
    table = HeadTable(list(ranker.heads.heads), [], [], [], [], [])
    for lst in tqdm(lists, desc="head statistics", unit="query", disable=not progress):
        n = len(lst.candidates)
        cal, raw = (np.zeros((len(table.heads), n), dtype=np.float32) for _ in range(2))
        for prompt in ranker.prompts(lst.query, lst.documents()):  # windowed exactly as inference windows
            attention = query_attention(ranker.model, prompt, ranker.heads, True, ranker.prefix_context)
            window = score_list(attention, prompt, ranker.heads, ScoringConfig(calibrate=True)).per_head
            cal[:, prompt.order] = window.float().cpu().numpy()
            window = score_list(attention[:1], prompt, ranker.heads, ScoringConfig(calibrate=False)).per_head
            raw[:, prompt.order] = window.float().cpu().numpy()
        judged = qrels.get(lst.qid, {})
        table.qids.append(lst.qid)
        table.calibrated.append(cal)
        table.raw.append(raw)
        table.grades.append(np.asarray([judged.get(d, 0) for d in lst.docids()], dtype=float))
        table.ideal.append(list(judged.values()))
    return table


@dataclass
class HeadStats:
    heads: list[tuple[int, int]]
    ndcg: np.ndarray
    pair_accuracy: np.ndarray
    entropy: np.ndarray

    def selection_score(self, lam: float, measure: str = "ndcg") -> np.ndarray:
        """z(D) - lambda * z(H): both standardised over the heads, so lambda weighs them on one scale
        (raw entropy spreads five times wider than nDCG and would otherwise swamp it)."""
        return _standardise(getattr(self, measure)) - lam * _standardise(self.entropy)

    def rows(self, lam: float, measure: str = "ndcg") -> list[dict]:
        score = self.selection_score(lam, measure)
        return [
            {
                "layer": la,
                "head": h,
                "ndcg@10": float(self.ndcg[i]),
                "pair_accuracy": float(self.pair_accuracy[i]),
                "entropy": float(self.entropy[i]),
                "selection_score": float(score[i]),
            }
            for i, (la, h) in enumerate(self.heads)
        ]


def _standardise(x: np.ndarray) -> np.ndarray:
    spread = x.std()
    return (x - x.mean()) / spread if spread > 0 else np.zeros_like(x)


def head_stats(table: HeadTable) -> HeadStats:
    """Mean over queries with at least one relevant candidate (a list without one cannot discriminate)."""
    ndcg, pairs, entropy = [], [], []
    for cal, raw, grades, ideal in zip(table.calibrated, table.raw, table.grades, table.ideal):
        entropy.append(normalized_entropy(raw))
        if grades.max() <= 0:
            continue
        ndcg.append(ndcg_at(cal, grades, ideal))
        accuracy, count = adjacent_pair_accuracy(cal, grades)
        if count:
            pairs.append(accuracy)
    if not ndcg:
        raise ValueError("no training list holds a relevant candidate: head statistics need graded lists")
    return HeadStats(
        heads=table.heads,
        ndcg=np.mean(ndcg, axis=0),
        pair_accuracy=np.mean(pairs, axis=0) if pairs else np.full(len(table.heads), 0.5),
        entropy=np.mean(entropy, axis=0),
    )


def select_heads(stats: HeadStats, k: int = 16, lam: float = 0.5, measure: str = "ndcg") -> HeadSet:
    """Top-k heads by D - lambda * H (lambda = 0 and measure ndcg is QRHead)."""
    if measure not in ("ndcg", "pair_accuracy"):
        raise ValueError(f"measure must be 'ndcg' or 'pair_accuracy', not {measure!r}")
    if not 1 <= k <= len(stats.heads):
        raise ValueError(f"k must be in 1..{len(stats.heads)}, got {k}")
    score = stats.selection_score(lam, measure)
    best = np.argsort(-score, kind="stable")[:k]
    return HeadSet.of(stats.heads[i] for i in best)


def write_stats(stats: HeadStats, out: Path, lam: float, measure: str = "ndcg") -> None:
    """heads.csv, heads.json and one layers x heads heatmap per statistic."""
    out.mkdir(parents=True, exist_ok=True)
    rows = stats.rows(lam, measure)
    with (out / "head_stats.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "head_stats.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot_heatmaps(stats, out, lam, measure)


def plot_heatmaps(stats: HeadStats, out: Path, lam: float, measure: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = max(la for la, _ in stats.heads) + 1
    heads = max(h for _, h in stats.heads) + 1
    for name, values in (
        ("ndcg", stats.ndcg),
        ("pair_accuracy", stats.pair_accuracy),
        ("entropy", stats.entropy),
        ("selection_score", stats.selection_score(lam, measure)),
    ):
        grid = np.full((layers, heads), np.nan)
        for (la, h), v in zip(stats.heads, values):
            grid[la, h] = v
        fig, ax = plt.subplots(figsize=(1.0 + 0.45 * heads, 1.0 + 0.22 * layers))
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(name)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"heatmap_{name}.png", dpi=110)
        plt.close(fig)
