"""The one training loop behind every adapter type, and what it needs: latent cache,
checkpoints, feedback."""

from lowbudget.training.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
