"""Learning curves that cannot flatter: nDCG@10 and the accuracy over all adjacent-grade pairs of fixed lists,
scored in the inference order with the inference scoring, and their plot against optimizer steps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from headrank.engine.prompt import ListwisePrompt
from headrank.engine.scoring import PrefixBatch
from headrank.evaluation.metrics import adjacent_pairs, ndcg_at
from headrank.ranker import HeadRanker
from headrank.training.lists import TrainingList


def list_scores(
    ranker: HeadRanker,
    items: Sequence[TrainingList],
    prefix_for: Callable[[ListwisePrompt], PrefixBatch] | None = None,
) -> list[np.ndarray]:
    """The ranker's score of each text of each list (first-stage order): `HeadRanker.score`'s own reduction over
    the prompts of every list batched together, with the passage passes taken from `prefix_for` (the training
    cache) where given."""
    prompts = [ranker.prompts(item.query, item.texts) for item in items]
    scored = iter(ranker.score_many([p for ps in prompts for p in ps], prefix_for))
    return [
        np.asarray(ranker.combine(len(item.texts), [(p.order, next(scored)) for p in ps]))
        for item, ps in zip(items, prompts)
    ]


def curve_point(
    ranker: HeadRanker,
    items: Sequence[TrainingList],
    prefix_for: Callable[[ListwisePrompt], PrefixBatch] | None = None,
) -> dict:
    """Mean nDCG@10 over the lists and the share of all their adjacent-grade pairs ordered right."""
    ndcgs, right, pairs = [], 0, 0
    for item, scores in zip(items, list_scores(ranker, items, prefix_for)):
        ndcgs.append(float(ndcg_at(scores[None], item.grades, item.ideal)[0]))
        plus, minus = adjacent_pairs(item.grades)
        right += int((scores[plus] > scores[minus]).sum())
        pairs += len(plus)
    return {"ndcg@10": float(np.mean(ndcgs)) if ndcgs else None, "pair_accuracy": right / pairs if pairs else None}


def plot_curves(history: dict, path: Path, title: str = "") -> None:
    """Train-sample vs validation nDCG@10 and pair accuracy against steps, beside the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    steps = history.get("steps", [])
    if steps:
        x = [h["step"] for h in steps]
        loss = np.asarray([h["loss"] for h in steps])
        axes[0].plot(x, loss, alpha=0.35, label="per step")
        window = max(1, min(20, len(loss) // 5))
        if len(loss) >= window > 1:
            axes[0].plot(
                x[window - 1 :], np.convolve(loss, np.ones(window) / window, "valid"), label=f"mean of {window}"
            )
        axes[0].legend()
    axes[0].set_title("training loss")
    for ax, key in zip(axes[1:], ("ndcg@10", "pair_accuracy")):
        for split in ("train", "validation"):
            points = [(e["step"], e[split][key]) for e in history.get("evals", []) if e[split].get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=split)
        best = history.get("best_step")
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"best validation (step {best})")
        ax.set_title(key + " (inference order)")
        ax.legend()
    for ax in axes:
        ax.set_xlabel("optimizer step")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
