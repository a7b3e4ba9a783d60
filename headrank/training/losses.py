"""Losses on a list's head scores: the paper's DPO-style pair loss, a listwise ablation, the regularizer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from headrank.evaluation.metrics import middle_zone
from headrank.training.config import TrainConfig


def score_scale(s_ref: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The unit in which score differences are measured: the frozen model's spread over the list (or 1)."""
    if not config.standardise or len(s_ref) < 2:
        return s_ref.new_ones(())
    return s_ref.detach().std().clamp_min(1e-6)


def preference_loss(
    s_theta: torch.Tensor, s_ref: torch.Tensor, pairs: Sequence[tuple[int, int]], beta: float, scale=1.0
) -> torch.Tensor:
    """-log sigma(beta * [(s_theta(d+) - s_ref(d+)) - (s_theta(d-) - s_ref(d-))] / scale), mean over pairs."""
    plus = torch.tensor([p for p, _ in pairs], device=s_theta.device)
    minus = torch.tensor([m for _, m in pairs], device=s_theta.device)
    margin = (s_theta[plus] - s_ref[plus]) - (s_theta[minus] - s_ref[minus])
    return -F.logsigmoid(beta * margin / scale).mean()


def listwise_loss(s_theta: torch.Tensor, grades: np.ndarray, scale=1.0) -> torch.Tensor:
    """Cross-entropy of softmax(s / scale) against the graded gains 2^g - 1 normalised over the list (the
    in-context rankers' InfoNCE on attention mass, with every relevant passage a positive)."""
    gains = torch.as_tensor(2.0**grades - 1.0, dtype=s_theta.dtype, device=s_theta.device)
    if gains.sum() <= 0:
        raise ValueError("a listwise target needs at least one relevant passage")
    target = gains / gains.sum()
    return -(target * torch.log_softmax(s_theta / scale, dim=-1)).sum()


def reference_kl(s_theta: torch.Tensor, s_ref: torch.Tensor, scale=1.0) -> torch.Tensor:
    """KL(softmax(s_ref / scale) || softmax(s_theta / scale)): zero while the trained list distribution is the
    reference one, growing as any passage's share moves, not only the sampled pairs'."""
    ref = torch.log_softmax(s_ref.detach() / scale, dim=-1)
    return (ref.exp() * (ref - torch.log_softmax(s_theta / scale, dim=-1))).sum()


def distribution_regularizer(scores: torch.Tensor, config: TrainConfig, scale=1.0) -> torch.Tensor:
    """gamma * H(softmax(s / (scale * tau))) / log n - eta * Var(s_mid / scale)."""
    z = scores / scale
    p = torch.softmax(z / config.tau, dim=-1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum() / np.log(len(scores))
    mid = z[torch.from_numpy(middle_zone(len(scores))).to(scores.device)]
    variance = mid.var() if len(mid) > 1 else scores.new_zeros(())
    return config.gamma * entropy - config.eta * variance
