"""Knowing when the adapter has learned: a deterministic loss, the stopping rules, an EMA.

A training loss draws new noise and timesteps every step; at 100 images it is too noisy to
show when a concept is learnt. :class:`FixedLoss` computes the same loss on fixed (image,
noise, timestep) triples every time, so what changes between two evaluations is the adapter
alone. On held-out patients it is a validation loss; on training images it is the signal of
DVAR (Voronov et al., NeurIPS 2023), which stops when it flattens. :class:`Stopper` keeps the
history and decides; its state goes into every checkpoint, so a resumed run stops where an
unbroken one does.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from lowbudget.training.loss import masked_mse

Tensors = dict[str, torch.Tensor]


class FixedLoss:
    """The diffusion loss on fixed (image, noise, timestep) triples, ``draws`` per image.

    Timesteps are stratified: draw ``k`` of an image falls in the k-th of ``draws`` equal slices
    of [min_timestep, T), so every evaluation covers high and low noise alike.
    """

    def __init__(self, latents: torch.Tensor, texts: list[str], masks: torch.Tensor | None, scheduler: Any, *,
                 draws: int, seed: int, min_timestep: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        n, total = latents.shape[0], scheduler.config.num_train_timesteps
        x0 = latents.float().cpu().repeat_interleave(draws, dim=0)  # (N * draws, 4, h, w)
        noise = torch.randn(x0.shape, generator=gen)
        edges = torch.linspace(min_timestep, total, draws + 1)
        u = torch.rand(n, draws, generator=gen)
        self.t = (edges[:-1] + u * (edges[1:] - edges[:-1])).long().clamp(max=total - 1).flatten()  # (N * draws,)
        self.x_t = scheduler.add_noise(x0, noise, self.t)
        eps = scheduler.config.prediction_type == "epsilon"
        self.target = noise if eps else scheduler.get_velocity(x0, noise, self.t)
        self.texts = [text for text in texts for _ in range(draws)]
        self.masks = masks.float().cpu().repeat_interleave(draws, dim=0) if masks is not None else None

    def __len__(self) -> int:
        return len(self.texts)

    @torch.no_grad()
    def __call__(self, unet: torch.nn.Module, condition: Callable, *, dtype: torch.dtype, batch_size: int) -> float:
        device = next(unet.parameters()).device
        total = 0.0
        for i in range(0, len(self), batch_size):
            rows = slice(i, i + batch_size)
            texts = self.texts[rows]
            cond = condition(texts)  # (b, 77, D) states (+ SDXL's pooled embedding and time ids)
            pred = unet(self.x_t[rows].to(device, dtype), self.t[rows].to(device), **cond.unet_kwargs()).sample  # (b, 4, h, w)
            mask = self.masks[rows].to(device) if self.masks is not None else None
            total += masked_mse(pred.float(), self.target[rows].to(device), mask).item() * len(texts)
        return total / len(self)


@dataclass
class Stopper:
    """The stopping rule and its state: every evaluation, the best one, why training stopped."""

    rule: str  # fixed | validation | dvar
    patience: int = 5
    window: int = 5
    threshold: float = 0.15
    min_steps: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of every evaluation
    best_step: int = 0
    best_loss: float = math.inf
    kept: Tensors = field(default_factory=dict)  # the tensors to write when stopping early
    kept_step: int = 0
    reason: str = ""  # why training stopped early; "" while it runs

    def update(self, step: int, loss: float, tensors: Tensors) -> bool:
        """Record an evaluation; True when training should stop here."""
        self.history.append((step, loss))
        if loss < self.best_loss:
            self.best_step, self.best_loss = step, loss
            if self.rule == "validation":
                self._keep(step, tensors)
        if self.reason or step < self.min_steps:
            return bool(self.reason)
        if self.rule == "validation":
            since = sum(1 for s, _ in self.history if s > self.best_step)
            if since >= self.patience:
                self.reason = (f"the validation loss has not improved for {since} evaluations since step "
                               f"{self.best_step} ({self.best_loss:.5f})")
        elif self.rule == "dvar" and len(self.history) > self.window:
            ratio = dvar_ratio([v for _, v in self.history], self.window)
            if ratio < self.threshold:
                self._keep(step, tensors)
                self.reason = (f"the deterministic loss has flattened: the variance of its last {self.window} "
                               f"values is {ratio:.3f} of all of them (below {self.threshold:g})")
        return bool(self.reason)

    def _keep(self, step: int, tensors: Tensors) -> None:
        self.kept = {k: v.detach().cpu().clone() for k, v in tensors.items()}
        self.kept_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.history], "best_step": self.best_step, "best_loss": self.best_loss,
                "kept": self.kept, "kept_step": self.kept_step, "reason": self.reason}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), float(v)) for s, v in state["history"]]
        self.best_step, self.best_loss = int(state["best_step"]), float(state["best_loss"])
        self.kept, self.kept_step, self.reason = dict(state["kept"]), int(state["kept_step"]), str(state["reason"])


def dvar_ratio(losses: list[float], window: int) -> float:
    """Variance of the last ``window`` losses over the variance of all of them (0 if all equal)."""
    values = np.asarray(losses, dtype=np.float64)
    spread = values.var()
    return float(values[-window:].var() / spread) if spread > 0 else 0.0


class Ema:
    """An exponential moving average of the trainable tensors: what is written, when on."""

    def __init__(self, tensors: Tensors, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in tensors.items()}

    @torch.no_grad()
    def update(self, tensors: Tensors) -> None:
        for name, value in tensors.items():
            self.shadow[name].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)

    def state_dict(self) -> Tensors:
        return {k: v.detach().cpu().clone() for k, v in self.shadow.items()}

    def load_state_dict(self, state: Tensors) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value.to(self.shadow[name].device))


@contextmanager
def swapped_in(live: Tensors, replacement: Tensors) -> Iterator[None]:
    """``live`` holds ``replacement``'s values inside the block, its own again after it."""
    saved = {k: v.detach().clone() for k, v in live.items()}
    with torch.no_grad():
        for name, value in replacement.items():
            live[name].copy_(value.to(live[name].device, live[name].dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                live[name].copy_(value)
