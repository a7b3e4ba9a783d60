"""A calibrated relevance: P(relevant | query, passage), comparable across queries and lists.

`relevance_scores` (results.py) is relative to its list: a list of ten irrelevant passages still has a 0.9. The
heads say more than the ranking: how much of the query's attention reaches the passages at all (the raw mass),
how much the "N/A" query gives them (the baseline), and how high the list's scores run. A logistic regression
reads these list-level features beside each passage's score; the only features that vary within a list are
increasing in the score and have non-negative coefficients, so the probability never reorders a ranking.
It is fitted on training qrels (benchmarks/calibration.py) and stored beside the artifact (calibration.json)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from headrank.engine.scoring import ListScores

CALIBRATION = "calibration.json"
WITHIN = ("score", "zscore")
"""features that vary within a list: both increasing in the score, so their coefficients are kept >= 0."""
LIST = ("mean", "max", "std", "raw_share", "na_share", "log_count")
"""features of the whole list (free sign)."""
FEATURES = WITHIN + LIST


@dataclass(frozen=True)
class ListEvidence:
    """What the heads say about one list, in the caller's document order."""

    scores: list[float]
    """the ranking score of each document (the heads' calibrated attention, weighted and summed)."""
    raw_share: float
    """the share of the query span's attention that reaches the passages at all (mean over the heads)."""
    na_share: float
    """the same share for the "N/A" query span (the baseline ICR subtracts)."""

    @classmethod
    def from_passes(
        cls, scores: Sequence[float], passes: Sequence[tuple[list[int], ListScores]], weights: Sequence[float]
    ) -> ListEvidence:
        """Evidence of a list from its ranking scores (`HeadRanker.combine`) and scored passes (one a window)."""
        w = np.abs(np.asarray(weights, dtype=np.float64))
        w = w / w.sum() if w.sum() > 0 else np.full_like(w, 1 / len(w))
        raw, na = [], []
        for order, s in passes:
            per_head = s.per_head.double().cpu().numpy()
            raws = s.raw.double().cpu().numpy()
            # both are attention masses times the passages of the pass (scoring.passage_scores)
            raw.append(float(w @ raws.sum(axis=1)) / len(order))
            na.append(float(w @ (raws - per_head).sum(axis=1)) / len(order))
        return cls([float(v) for v in scores], float(np.mean(raw)) if raw else 0.0, float(np.mean(na)) if na else 0.0)

    def features(self) -> np.ndarray:
        """[documents, FEATURES]."""
        s = np.asarray(self.scores, dtype=np.float64)
        n = len(s)
        std = float(s.std()) if n else 0.0
        z = (s - s.mean()) / std if std > 0 and math.isfinite(std) else np.zeros(n)
        shared = [s.mean(), s.max(), std, self.raw_share, self.na_share, math.log(n)] if n else [0.0] * len(LIST)
        return np.column_stack([s, z, np.tile(np.asarray(shared, dtype=np.float64), (n, 1))])


@dataclass(frozen=True)
class Calibration:
    """A logistic regression on standardised FEATURES."""

    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    fitted_on: dict

    def relevance(self, evidence: ListEvidence) -> list[float]:
        if not evidence.scores:
            return []
        x = (evidence.features() - np.asarray(self.center)) / np.asarray(self.scale)
        logits = x @ np.asarray(self.coefficients) + self.intercept
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50)))).tolist()

    def to_dict(self) -> dict:
        return {**asdict(self), "features": list(self.features)}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"calibration features {data['features']} are not this version's {list(FEATURES)}")
        fields = ("center", "scale", "coefficients")
        return cls(
            tuple(data["features"]), *(tuple(map(float, data[k])) for k in fields), float(data["intercept"]),
            dict(data.get("fitted_on", {})),
        )  # fmt: skip

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CALIBRATION
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def load_calibration(folder: str | Path) -> Calibration | None:
    """The calibration stored beside an artifact, or None when it has none."""
    path = Path(folder) / CALIBRATION
    return Calibration.from_dict(json.loads(path.read_text())) if path.is_file() else None


def fit_calibration(
    lists: Iterable[tuple[ListEvidence, Sequence[int]]], l2: float = 1e-3, fitted_on: dict | None = None
) -> Calibration:
    """Fit on (evidence, 0/1 labels) of training lists: maximum likelihood with a small L2 penalty, the
    within-list coefficients bounded below by 0 (monotone in the score)."""
    from scipy.optimize import minimize

    pairs = [(e.features(), np.asarray(y, dtype=np.float64)) for e, y in lists if e.scores]
    if not pairs:
        raise ValueError("no training lists to fit a calibration on")
    x = np.concatenate([f for f, _ in pairs])
    y = np.concatenate([labels for _, labels in pairs])
    if y.min() == y.max():
        raise ValueError("the training labels are all equal: a calibration needs relevant and other documents")
    center, scale = x.mean(axis=0), x.std(axis=0)
    constant = scale <= 1e-9 * np.maximum(1.0, np.abs(center))  # e.g. the length when every list had 20
    scale[constant] = 1.0
    z = (x - center) / scale

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = z @ theta[:-1] + theta[-1]
        p = 1.0 / (1.0 + np.exp(-logits))
        nll = np.logaddexp(0, logits) - y * logits
        grad = np.append(z.T @ (p - y), (p - y).sum()) / len(y)
        grad[:-1] += 2 * l2 * theta[:-1]
        return float(nll.mean() + l2 * theta[:-1] @ theta[:-1]), grad

    # within-list features never lower the relevance; a feature constant in training cannot be learned: 0
    bounds = [
        (0.0, 0.0) if fixed else (0.0, None) if name in WITHIN else (None, None)
        for name, fixed in zip(FEATURES, constant)
    ]
    bounds.append((None, None))
    theta = minimize(loss, np.zeros(len(FEATURES) + 1), jac=True, method="L-BFGS-B", bounds=bounds).x
    return Calibration(
        FEATURES,
        tuple(center.tolist()),
        tuple(scale.tolist()),
        tuple(theta[:-1].tolist()),
        float(theta[-1]),
        dict(fitted_on or {}),
    )
