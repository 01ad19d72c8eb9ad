"""The one training loop: textual inversion, LoRA and pivotal tuning (TI + LoRA).

Three parts, read top to bottom: set-up (:func:`lowbudget.training.setup.set_up`: data, base,
adapters, cached latents, optimiser over the adapter tensors only, resume), the loop, and the
finish (the last checkpoint, the adapter files, the loss curve). Every random draw of step ``k``
comes from a generator seeded with ``(seed, k)``, so a run killed at step k and resumed
draws exactly what the unbroken run would have drawn.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from lowbudget.adapters import own_files
from lowbudget.adapters.lora import lora_adapter_metadata, lora_state_dict
from lowbudget.adapters.textual_inversion import TokenBank
from lowbudget.errors import TrainingError
from lowbudget.io import atomic_write_text
from lowbudget.models import BaseModel
from lowbudget.recipe import Recipe
from lowbudget.training import checkpoint
from lowbudget.training.feedback import validation_grid, write_loss_curve
from lowbudget.training.loss import masked_mse
from lowbudget.training.schedule import lr_factor
from lowbudget.training.setup import Run, claim_output, set_up

@dataclass
class TrainResult:
    output_dir: Path
    files: list[Path]
    steps: int
    losses: list[float]
    seconds_per_step: float  # median over the steps this process ran
    startup_seconds: float  # from train() to the first step: data, model, latents


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train the recipe's adapters into ``recipe.output.dir``.

    ``resume`` continues the run there from its checkpoint (or from step 0 when it stopped
    before its first one); ``overwrite`` lets a new run write into a folder that holds files
    lowbudget did not write. With ``optim.deterministic`` the run is bit-for-bit repeatable.
    """
    with reproducible(recipe.optim.deterministic):
        return _train(recipe, resume=resume, overwrite=overwrite, progress=progress, log=log)


def _train(recipe: Recipe, *, resume: bool, overwrite: bool, progress: bool, log: Callable[[str], None]) -> TrainResult:
    t_start = time.perf_counter()
    out = Path(recipe.output.dir).expanduser()
    resume = claim_output(out, resume, overwrite, log)
    run = set_up(recipe, out, resume, log)  # data, frozen base, adapters, latents, optimiser, checkpoint
    optim, accelerator, optimizer = recipe.optim, run.accelerator, run.optimizer
    device = accelerator.device
    n_train_timesteps = run.scheduler.config.num_train_timesteps
    if accelerator.is_main_process:
        atomic_write_text(out / "recipe.toml", recipe.to_toml())

    # --- the loop
    losses = run.losses
    order = _DataOrder(run.n_images, optim.seed, optim.batch_size, accelerator.num_processes)
    step_times: list[float] = []
    startup = time.perf_counter() - t_start
    bar = _progress(progress, run.start_step, optim.max_steps)
    for step in range(run.start_step, optim.max_steps):
        t_step = time.perf_counter()
        seed = _step_seed(optim.seed, step, accelerator.process_index)
        gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
        torch.manual_seed(seed)  # LoRA dropout draws from the global generator
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, total=optim.max_steps, warmup=optim.warmup_steps, shape=optim.schedule)
        if run.bank is not None:
            run.bank.parameter.requires_grad_(step < run.ti_steps)

        step_loss = 0.0
        for micro in range(optim.grad_accum):
            idx = order.batch(step * optim.grad_accum + micro, accelerator.process_index)  # (B,)
            x0 = run.latents.sample(idx, gen) * run.scaling  # (B, 4, h, w)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = torch.randint(optim.min_timestep, n_train_timesteps, (len(idx),), generator=gen).to(device)
            x_t = run.scheduler.add_noise(x0, noise, t)
            target = noise if run.scheduler.config.prediction_type == "epsilon" else run.scheduler.get_velocity(x0, noise, t)
            texts = [run.captioner.text(int(i), rng) for i in idx]
            ids = run.captioner.ids(texts).to(device)  # (B, 77)
            with accelerator.autocast():
                cond = run.condition(texts, ids)  # (B, 77, D)
                pred = run.unet(x_t.to(run.weight_dtype), t, cond).sample  # (B, 4, h, w)
            loss = masked_mse(pred.float(), target.float(), run.masks[idx] if run.masks is not None else None)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step + 1}; nothing was saved from this step. "
                    "Try model.precision = 'bf16' or 'fp32', or a lower learning rate"
                )
            accelerator.backward(loss / optim.grad_accum)
            step_loss += loss.item() / optim.grad_accum

        if optim.max_grad_norm > 0:
            accelerator.clip_grad_norm_([p for p in run.trainable.values() if p.grad is not None], optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not all(torch.isfinite(p).all() for p in run.trainable.values()):
            raise TrainingError(f"adapter weights became non-finite at step {step + 1}; lower the learning rate")
        losses.append(step_loss)
        step_times.append(time.perf_counter() - t_step)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        bar.update(1)

        done = step + 1
        if accelerator.is_main_process:
            if _validation_due(recipe, done):
                with accelerator.autocast():  # frozen weights may be bf16/fp16
                    _validate(run.base, run.bank, recipe, out / "samples" / f"step-{done:06d}.png")
            if recipe.output.checkpoint_every and done % recipe.output.checkpoint_every == 0 and done < optim.max_steps:
                checkpoint.save_checkpoint(out, step=done, trainable=run.trainable, optimizer=optimizer,
                                           losses=losses, recipe=recipe.to_dict())
    bar.close()

    written = _finish(run, recipe, out) if accelerator.is_main_process else []
    accelerator.wait_for_everyone()
    median = sorted(step_times)[len(step_times) // 2] if step_times else float("nan")
    return TrainResult(out, written, optim.max_steps, losses, median, startup)


def _finish(run: Run, recipe: Recipe, out: Path) -> list[Path]:
    """The last checkpoint, the adapter files, the loss curve and the final validation grid."""
    checkpoint.save_checkpoint(out, step=recipe.optim.max_steps, trainable=run.trainable, optimizer=run.optimizer,
                               losses=run.losses, recipe=recipe.to_dict())
    provenance = own_files.Provenance(
        base_name=run.base.name, base_fingerprint=run.fingerprint, modality=recipe.data.modality, n_images=run.n_images,
        steps=recipe.optim.max_steps, recipe=recipe.shareable_dict(), description=recipe.output.description,
        license=recipe.output.license,
    )
    written = _write_adapters(out, run.base, run.bank, recipe, provenance)
    written.append(write_loss_curve(run.losses, out))
    if recipe.output.validation_prompts and not recipe.output.validation_every and run.start_step < recipe.optim.max_steps:
        with run.accelerator.autocast():
            written.append(_validate(run.base, run.bank, recipe, out / "samples" / "final.png"))
    return written


# --------------------------------------------------------------------------- helpers


@contextmanager
def reproducible(enabled: bool) -> Iterator[None]:
    """Bit-for-bit repeatable training while inside, when ``enabled``.

    Deterministic kernels only, and one CPU thread: with several, the order in which partial
    sums are added can change between runs, and with it the last bits of every result.
    The previous settings come back on exit (the test suite and notebooks run on).
    """
    if not enabled:
        yield
        return
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _step_seed(seed: int, step: int, process: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + process) % (2**63)


class _DataOrder:
    """A fresh permutation of the images every epoch, derived from (seed, epoch).

    Micro-step ``m`` of process ``p`` takes the ``batch_size`` samples starting at
    ``(m * processes + p) * batch_size`` of the endless sequence of epoch permutations.
    """

    def __init__(self, n: int, seed: int, batch_size: int, processes: int) -> None:
        self.n, self.seed, self.batch_size, self.processes = n, seed, batch_size, processes
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def batch(self, micro_step: int, process: int) -> torch.Tensor:  # -> (B,) image indices
        start = (micro_step * self.processes + process) * self.batch_size
        return torch.stack([self._perm(k // self.n)[k % self.n] for k in range(start, start + self.batch_size)])


def _progress(enabled: bool, start: int, total: int):
    return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def _validation_due(recipe: Recipe, done: int) -> bool:
    every = recipe.output.validation_every
    return bool(every) and (done % every == 0 or done == recipe.optim.max_steps)


def _validate(base: BaseModel, bank: TokenBank | None, recipe: Recipe, path: Path) -> Path:
    token_text = " ".join(bank.names) if bank else ""
    prompts = [p.replace("{token}", token_text) for p in recipe.output.validation_prompts]
    out = recipe.output
    return validation_grid(base, prompts, out.validation_seeds, resolution=recipe.data.resolution,
                           steps=out.validation_inference_steps, guidance=out.validation_guidance, path=path)


def _write_adapters(out: Path, base: BaseModel, bank: TokenBank | None, recipe: Recipe,
                    provenance: own_files.Provenance) -> list[Path]:
    written = []
    dtype = recipe.output.save_dtype
    if bank is not None:
        for token, cfg in zip(bank.tokens, recipe.method.tokens):
            path = out / own_files.token_file_name(token.name)
            written.append(own_files.save_embedding(path, token.name, bank.vectors(token.name), provenance,
                                                init=cfg.init, dtype=dtype))
    if recipe.method.trains_lora:
        written.append(own_files.save_lora(out / own_files.LORA_WEIGHT_NAME, lora_state_dict(base),
                                       lora_adapter_metadata(base), provenance, dtype=dtype))
    return written
