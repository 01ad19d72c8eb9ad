"""The one training loop behind every adapter type, and what it needs.

  setup.py         everything before the first step: data, base, adapters, latents, optimiser, resume
  loop.py          the loop and the finish: train()
  conditioning.py  captions and the text encoder's states for a batch
  latents.py       images encoded once, cached by content
  loss.py          the loss, with optional loss masks
  schedule.py      the learning-rate schedule
  checkpoint.py    save and restore a run
  feedback.py      the loss curve and validation grids
"""

from lowbudget.training.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
