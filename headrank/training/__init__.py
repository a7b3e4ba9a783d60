"""Preference training of the selected heads in attention space: lists and splits, pairs, losses, the prefix
cache, learning curves, the trainer with its checkpoints, and the end-to-end `train_artifact`."""

from __future__ import annotations

from headrank.training.config import TrainConfig

__all__ = ["TrainConfig", "train_artifact"]


def __getattr__(name: str):
    if name == "train_artifact":  # imports torch: only when training is asked for
        from headrank.training.train import train_artifact

        return train_artifact
    raise AttributeError(f"module 'headrank.training' has no attribute {name!r}")
