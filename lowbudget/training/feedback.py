"""What the user sees while training runs: validation grids and the loss curve."""

from __future__ import annotations

from pathlib import Path

import torch

from lowbudget.io import atomic_write_text
from lowbudget.models.base import BaseModel
from lowbudget.sampling.outputs import save_grid
from lowbudget.sampling.sampler import SampleRequest, sample
from lowbudget.viz import line_chart, save_png


def validation_grid(base: BaseModel, prompts: list[str], seeds: list[int], *, resolution: int, steps: int,
                    guidance: float, path: Path) -> Path:
    """One row per prompt, one column per seed; the same seeds every time, so grids compare.

    Drawn by the project's own sampling loop, which expands learned multi-vector tokens itself.
    """
    pipe = base.pipeline()
    modes = (base.unet.training, base.text_encoder.training)
    base.unet.eval(), base.text_encoders_train(False)
    try:
        rows = [sample(pipe, SampleRequest(prompt=p, seeds=seeds, steps=steps, guidance=guidance, size=resolution))
                for p in prompts]
    finally:
        base.unet.train(modes[0]), base.text_encoders_train(modes[1])
    return save_grid(torch.stack(rows), prompts, path, column_labels=[f"seed {s}" for s in seeds])


def write_loss_curve(losses: list[float], output_dir: Path,
                     evaluations: dict[str, list[tuple[int, float]]] | None = None) -> Path:
    """loss.csv (a row per step; a column per evaluated loss, filled at the steps it was computed)
    and loss.png (the training loss, and the evaluated losses on the same axes)."""
    evaluations = {name: points for name, points in (evaluations or {}).items() if points}
    at = {name: dict(points) for name, points in evaluations.items()}
    header = ",".join(["step", "loss", *evaluations])
    rows = [",".join([str(i + 1), f"{v:.6g}", *(f"{at[n][i + 1]:.6g}" if i + 1 in at[n] else "" for n in evaluations)])
            for i, v in enumerate(losses)]
    atomic_write_text(output_dir / "loss.csv", "\n".join([header, *rows]) + "\n")
    title = "training loss (grey: per step, blue: moving average)" + (", evaluated losses in colour" if evaluations else "")
    return save_png(line_chart(losses, title, series=evaluations), output_dir / "loss.png")
