"""Which (d+, d-) pairs a list teaches: ALPS (hard adjacent-level pairs, middle over-sampled) or random."""

from __future__ import annotations

import random
import zlib

import numpy as np

from headrank.evaluation.metrics import adjacent_pairs, middle_zone
from headrank.training.config import TrainConfig


def stable_seed(*parts) -> int:
    """A seed that is the same in every process (Python's str hash is salted per process)."""
    return zlib.crc32(":".join(map(str, parts)).encode())


def alps_pairs(
    grades: np.ndarray, scores: np.ndarray, config: TrainConfig, rng: random.Random
) -> list[tuple[int, int]]:
    """Hard adjacent-level pairs (d+, d-) by input position: grades differ by exactly one; mis-ordered or
    close pairs first, middle-zone pairs over-sampled; filled up with the easy ones."""
    plus, minus = adjacent_pairs(grades)
    if len(plus) == 0:
        return []
    zone = middle_zone(len(grades))
    weight = np.where(zone[plus] | zone[minus], config.middle_boost, 1.0)
    hard = scores[plus] - scores[minus] < config.margin
    chosen: list[int] = []
    for group in (np.nonzero(hard)[0], np.nonzero(~hard)[0]):
        chosen += _weighted_sample(list(group), weight[group], config.max_pairs - len(chosen), rng)
    return [(int(plus[i]), int(minus[i])) for i in chosen]


def random_pairs(grades: np.ndarray, config: TrainConfig, rng: random.Random) -> list[tuple[int, int]]:
    """The ablation: any pair with different grades, drawn uniformly."""
    plus, minus = np.nonzero(grades[:, None] > grades[None, :])
    picked = _weighted_sample(list(range(len(plus))), np.ones(len(plus)), config.max_pairs, rng)
    return [(int(plus[i]), int(minus[i])) for i in picked]


def sample_pairs(grades: np.ndarray, scores: np.ndarray, config: TrainConfig, rng: random.Random):
    return alps_pairs(grades, scores, config, rng) if config.pairs == "alps" else random_pairs(grades, config, rng)


def _weighted_sample(items: list[int], weights: np.ndarray, k: int, rng: random.Random) -> list[int]:
    """k items without replacement, each draw proportional to weight (Efraimidis-Spirakis keys)."""
    if k <= 0 or not items:
        return []
    keys = [rng.random() ** (1.0 / w) for w in weights]
    return [items[i] for i in sorted(range(len(items)), key=lambda i: -keys[i])[:k]]
