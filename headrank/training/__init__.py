"""Preference training of the selected heads in attention space: lists and splits, pairs, losses, the prefix
cache, learning curves, the trainer with its checkpoints, and the end-to-end `train_artifact`."""

from headrank.training.config import TrainConfig
from headrank.training.train import train_artifact

__all__ = ["TrainConfig", "train_artifact"]
