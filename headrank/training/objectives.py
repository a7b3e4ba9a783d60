"""The training losses by name, in one table: each turns a window's scores into its main loss and the adjacent-grade
pairs it was judged on (for the running pair accuracy). The trainer looks a loss up here and never branches on a
name; a new loss is one function and one row (its help text is the CLI's). Importing it loads no torch (the CLI
builds its parser from this table)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from headrank.evaluation.metrics import adjacent_pairs
from headrank.training.config import TrainConfig
from headrank.training.pairs import sample_pairs

if TYPE_CHECKING:
    import torch

Judged = tuple["torch.Tensor", np.ndarray, np.ndarray]
"""(the main loss, d+ positions, d- positions)."""


@dataclass(frozen=True)
class Objective:
    help: str
    loss: Callable[[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor, TrainConfig, random.Random], Judged | None]
    """(s_theta, s_ref, grades, scale, config, rng) -> Judged, or None when the window teaches nothing."""


def _dpo(s_theta, s_ref, grades, scale, config: TrainConfig, rng: random.Random) -> Judged | None:
    from headrank.training.losses import preference_loss

    pairs = sample_pairs(grades, (s_theta.detach() / scale).cpu().numpy(), config, rng)
    if not pairs:
        return None
    plus, minus = np.asarray(pairs).T
    return preference_loss(s_theta, s_ref, pairs, config.beta, scale), plus, minus


def _listwise(s_theta, s_ref, grades, scale, config: TrainConfig, rng: random.Random) -> Judged | None:
    from headrank.training.losses import listwise_loss

    if grades.max() <= 0:
        return None
    return listwise_loss(s_theta, grades, scale / config.beta), *adjacent_pairs(grades)


OBJECTIVES = {
    "dpo": Objective("dpo: the paper's pair loss on ALPS pairs", _dpo),
    "listwise": Objective("listwise: cross-entropy against graded gains", _listwise),
}


def objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise ValueError(f"loss must be one of {tuple(OBJECTIVES)}, not {name!r}")
    return OBJECTIVES[name]
