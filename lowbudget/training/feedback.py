"""What the user sees while training runs: validation grids and the loss curve."""

from __future__ import annotations

from pathlib import Path

import torch

from lowbudget.io import atomic_write_text
from lowbudget.models.base import BaseModel
from lowbudget.viz import image_grid, line_chart, save_png


@torch.no_grad()
def validation_grid(base: BaseModel, prompts: list[str], labels: list[str], seeds: list[int], *,
                    resolution: int, steps: int, guidance: float, path: Path) -> Path:
    """One row per prompt, one column per seed; the same seeds every time, so grids compare."""
    pipe = base.pipeline()
    pipe.set_progress_bar_config(disable=True)
    modes = (base.unet.training, base.text_encoder.training)
    base.unet.eval(), base.text_encoder.eval()
    rows = []
    try:
        for prompt in prompts:
            generators = [torch.Generator().manual_seed(s) for s in seeds]
            out = pipe(prompt=[prompt] * len(seeds), generator=generators, num_inference_steps=steps,
                       guidance_scale=guidance, height=resolution, width=resolution)
            rows.append(out.images)
    finally:
        base.unet.train(modes[0]), base.text_encoder.train(modes[1])
    return save_png(image_grid(rows, row_labels=labels), path)


def write_loss_curve(losses: list[float], output_dir: Path) -> Path:
    atomic_write_text(output_dir / "loss.csv", "step,loss\n" + "".join(f"{i + 1},{v:.6g}\n" for i, v in enumerate(losses)))
    return save_png(line_chart(losses, "training loss (grey: per step, blue: moving average)"), output_dir / "loss.png")
