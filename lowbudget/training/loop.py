"""The one training loop: textual inversion, LoRA and pivotal tuning (TI + LoRA).

Three parts, read top to bottom: set-up (:func:`lowbudget.training.setup.set_up`: data, base,
adapters, cached latents, optimiser over the adapter tensors only, resume), the loop
(:func:`run_steps`, which a federated site also runs, a round at a time), and the finish (the
last checkpoint, the adapter files, the loss curve). Every random draw of step ``k``
comes from a generator seeded with ``(seed, k)``, so a run killed at step k and resumed
draws exactly what the unbroken run would have drawn.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from lowbudget.adapters import own_files
from lowbudget.adapters.lora import lora_adapter_metadata, lora_state_dict
from lowbudget.adapters.textual_inversion import TokenBank
from lowbudget.errors import TrainingError
from lowbudget.io import atomic_write_text
from lowbudget.models import BaseModel
from lowbudget.progress import Progress
from lowbudget.recipe import Recipe
from lowbudget.training import checkpoint
from lowbudget.training.feedback import validation_grid, write_loss_curve
from lowbudget.training.loss import masked_mse, min_snr_weights
from lowbudget.training.schedule import lr_factor
from lowbudget.training.setup import Run, claim_output, is_main_process, set_up
from lowbudget.training.stopping import swapped_in

@dataclass
class TrainResult:
    output_dir: Path
    files: list[Path]
    steps: int  # steps run: max_steps, or fewer when a stopping rule stopped the run
    losses: list[float]
    seconds_per_step: float  # median over the steps this process ran
    startup_seconds: float  # from train() to the first step: data, model, latents
    stopped: str = ""  # why the run stopped early; "" when it ran its budget
    written_step: int = 0  # the step whose tensors the adapter files hold
    evaluations: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (step, loss) per evaluated loss
    main_process: bool = True  # False in the other processes of a multi-process run, which write nothing


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train the recipe's adapters into ``recipe.output.dir``.

    ``resume`` continues the run there from its checkpoint (or from step 0 when it stopped
    before its first one); ``overwrite`` lets a new run write into a folder that holds files
    lowbudget did not write. With ``optim.deterministic`` the run is bit-for-bit repeatable.
    """
    main = is_main_process()
    with reproducible(recipe.optim.deterministic):  # one voice: the other processes of a launch stay quiet
        return _train(recipe, resume=resume, overwrite=overwrite, progress=progress and main,
                      log=log if main else (lambda message: None))


def _train(recipe: Recipe, *, resume: bool, overwrite: bool, progress: bool, log: Callable[[str], None]) -> TrainResult:
    t_start = time.perf_counter()
    out = Path(recipe.output.dir).expanduser()
    resume = claim_output(out, resume, overwrite, log)
    run = set_up(recipe, out, resume, log)  # data, frozen base, adapters, latents, optimiser, checkpoint
    optim, accelerator = recipe.optim, run.accelerator
    if accelerator.is_main_process:
        atomic_write_text(out / "recipe.toml", recipe.to_toml())

    # --- the loop
    startup = time.perf_counter() - t_start
    if run.stopper.reason:  # resumed after it had stopped early: nothing left to train
        log(f"the run stopped early at step {run.start_step}: {run.stopper.reason}")
    last = run.start_step if run.stopper.reason else optim.max_steps
    bar = Progress(optim.max_steps, "train", enabled=progress, initial=run.start_step)  # train(): the main process only
    done = run_steps(run, recipe, range(run.start_step, last), bar=bar, out=out, log=log)
    bar.doing("writing the adapter files" + (" and the final validation grid" if _final_grid(recipe, run, done) else ""))
    written = _finish(run, recipe, out, done, log) if accelerator.is_main_process else []
    bar.close()
    accelerator.wait_for_everyone()
    median = sorted(run.step_seconds)[len(run.step_seconds) // 2] if run.step_seconds else float("nan")
    return TrainResult(out, written, done, run.losses, median, startup, stopped=run.stopper.reason,
                       written_step=_written(run, done)[1], evaluations=run.evaluations,
                       main_process=accelerator.is_main_process)


def run_steps(run: Run, recipe: Recipe, steps: range, *, bar: Progress, out: Path,
              log: Callable[[str], None] = print) -> int:
    """Train ``steps`` (global step numbers) on ``run``; return the number of steps done.

    The one loop of every run: ``train`` calls it once for the whole budget, a federated site
    once per round for its local steps. Step ``k`` draws from the generator of ``(seed, k)``
    and takes the learning rate of step ``k`` of ``optim.max_steps``, whoever calls.
    Validation, stopping and checkpoints fall due at their steps, on the main process; the
    checkpoint and grids go to ``out``.
    """
    optim, accelerator, optimizer = recipe.optim, run.accelerator, run.optimizer
    device = accelerator.device
    n_train_timesteps = run.scheduler.config.num_train_timesteps
    order = _DataOrder(run.n_images, optim.seed, optim.batch_size, accelerator.num_processes)
    done = steps.start
    for step in steps:
        t_step = time.perf_counter()
        # Every process draws the random numbers of the whole global batch from the step's one
        # generator and keeps its own share: N processes train exactly what one process with N
        # times the batch trains, and a single process draws what it always drew.
        seed = _step_seed(optim.seed, step, 0)
        gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
        torch.manual_seed(_step_seed(optim.seed, step, accelerator.process_index))  # LoRA dropout: its own per process
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(step, total=optim.max_steps, warmup=optim.warmup_steps, shape=optim.schedule)
        if run.bank is not None:
            for p in run.bank.parameters:
                p.requires_grad_(step < run.ti_steps)

        step_loss = torch.zeros((), device=device)
        for micro in range(optim.grad_accum):
            everyone = order.images(order.global_batch(step * optim.grad_accum + micro))  # (P*B,) all processes'
            mine = order.share(accelerator.process_index)  # this process's B of them
            x0 = run.latents.sample(everyone, gen) * run.scaling  # (P*B, 4, h, w)
            noise = torch.randn(x0.shape, generator=gen)[mine].to(device)
            t = torch.randint(optim.min_timestep, n_train_timesteps, (len(everyone),), generator=gen)[mine].to(device)
            texts = [run.captioner.text(int(i), rng) for i in everyone][mine]
            idx, x0 = everyone[mine], x0[mine]  # (B,), (B, 4, h, w)
            x_t = run.scheduler.add_noise(x0, noise, t)
            target = noise if run.scheduler.config.prediction_type == "epsilon" else run.scheduler.get_velocity(x0, noise, t)
            with accelerator.autocast():
                cond = run.condition(texts)  # (B, 77, D) states; on SDXL + pooled (B, 1280) and time ids (B, 6)
                pred = run.unet(x_t.to(run.weight_dtype), t, **cond.unet_kwargs()).sample  # (B, 4, h, w)
            weights = (min_snr_weights(run.scheduler.alphas_cumprod, t, optim.snr_gamma, run.scheduler.config.prediction_type)
                       if optim.snr_gamma else None)  # (B,)
            loss = masked_mse(pred.float(), target.float(), run.masks[idx] if run.masks is not None else None, weights)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step + 1}; nothing was saved from this step. "
                    "Try model.precision = 'bf16' or 'fp32', or a lower learning rate"
                )
            accelerator.backward(loss / optim.grad_accum)
            step_loss += loss.detach() / optim.grad_accum
        step_loss = accelerator.reduce(step_loss, reduction="mean").item()  # the global batch's loss, the same on every process

        if optim.max_grad_norm > 0:
            accelerator.clip_grad_norm_([p for p in run.trainable.values() if p.grad is not None], optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not all(torch.isfinite(p).all() for p in run.trainable.values()):
            raise TrainingError(f"adapter weights became non-finite at step {step + 1}; lower the learning rate")
        if run.ema is not None:
            run.ema.update(run.trainable)
        run.losses.append(step_loss)
        run.step_seconds.append(time.perf_counter() - t_step)
        bar.update(1, loss=f"{step_loss:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")

        done = step + 1
        due = _validation_due(recipe, done)
        if due:
            bar.doing(f"validation at step {done}")  # minutes on a big base: say so, not a bar at rest
        stop = _evaluate(run, recipe, done) if due else False  # every process: all stop together
        if accelerator.is_main_process:
            if due and recipe.output.validation_prompts:
                with accelerator.autocast():  # frozen weights may be bf16/fp16
                    _validate(run.base, run.bank, recipe, out / "samples" / f"step-{done:06d}.png")
            if due:
                bar.doing("")
            if recipe.output.checkpoint_every and done % recipe.output.checkpoint_every == 0 and done < optim.max_steps:
                checkpoint.save_checkpoint(out, step=done, trainable=run.trainable, optimizer=optimizer,
                                           losses=run.losses, recipe=recipe.to_dict(), extra=run.extra_state())
        if stop:
            log(f"stopped at step {done} of {optim.max_steps}: {run.stopper.reason}")
            break
    return done


def _evaluate(run: Run, recipe: Recipe, step: int) -> bool:
    """The deterministic losses due at ``step``, on the tensors that would be written (the EMA's
    when on); True when the stopping rule says stop."""
    losses = {}
    modes = run.unet.training, run.base.text_encoder.training
    run.unet.eval(), run.base.text_encoders_train(False)  # no dropout: the same loss for the same tensors
    try:
        with swapped_in(run.trainable, run.ema.shadow) if run.ema else nullcontext(), run.accelerator.autocast():
            for name, fixed in (("validation", run.validation_loss), ("dvar", run.dvar_loss)):
                if fixed is not None:
                    losses[name] = fixed(run.unet, run.condition, dtype=run.weight_dtype,
                                         batch_size=4 * recipe.optim.batch_size)
                    run.evaluations[name].append((step, losses[name]))
    finally:
        run.unet.train(modes[0]), run.base.text_encoders_train(modes[1])
    deciding = losses.get("dvar" if recipe.optim.stop == "dvar" else "validation")
    if deciding is None:
        return False
    return run.stopper.update(step, deciding, run.ema.shadow if run.ema else run.trainable)


def _written(run: Run, done: int) -> tuple[dict[str, torch.Tensor], int]:
    """The tensors the adapter files get, and their step: the best validation step under
    stop = 'validation', the stopping step under 'dvar', else the last step; the EMA's when on."""
    if run.stopper.kept and (run.stopper.rule == "validation" or run.stopper.reason):
        return run.stopper.kept, run.stopper.kept_step
    return (run.ema.shadow if run.ema else run.trainable), done


def _finish(run: Run, recipe: Recipe, out: Path, done: int, log: Callable[[str], None]) -> list[Path]:
    """The last checkpoint, the adapter files, the loss curve and the final validation grid."""
    checkpoint.save_checkpoint(out, step=done, trainable=run.trainable, optimizer=run.optimizer,
                               losses=run.losses, recipe=recipe.to_dict(), extra=run.extra_state())
    tensors, step = _written(run, done)
    if step != done:
        log(f"writing the adapter of step {step} (validation loss {run.stopper.best_loss:.5f}), "
            f"the best of {len(run.stopper.history)} evaluations")
    provenance = own_files.Provenance(
        base_name=run.base.name, base_fingerprint=run.fingerprint, modality=recipe.data.modality, n_images=run.n_images,
        steps=step, recipe=recipe.shareable_dict(), description=recipe.output.description,
        license=recipe.output.license, training=_training_record(run, recipe, done, step),
    )
    with swapped_in(run.trainable, tensors):  # the adapter files read the live modules
        written = write_adapters(out, run.base, run.bank, recipe, provenance)
        if _final_grid(recipe, run, done):
            with run.accelerator.autocast():
                written.append(_validate(run.base, run.bank, recipe, out / "samples" / "final.png"))
    written.append(write_loss_curve(run.losses, out, run.evaluations))
    return written


def _training_record(run: Run, recipe: Recipe, done: int, step: int) -> dict[str, Any] | None:
    """How training ended, for the adapter's header; None for a plain fixed-budget run."""
    optim = recipe.optim
    if optim.stop == "fixed" and not run.validation_loss and not run.ema:
        return None
    record: dict[str, Any] = {"stop": optim.stop, "max_steps": optim.max_steps, "steps_run": done, "written_step": step,
                              "stopped_early": bool(run.stopper.reason), "reason": run.stopper.reason}
    if run.evaluations["validation"]:
        record["validation_loss"] = dict(run.evaluations["validation"]).get(step)
        record["best_validation_step"], record["best_validation_loss"] = min(run.evaluations["validation"],
                                                                              key=lambda e: e[1])
    if run.ema:
        record["ema_decay"] = optim.ema_decay
    return record


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
    ``(m * processes + p) * batch_size`` of the endless sequence of epoch permutations: each image
    once per epoch across processes, and the same global batches however many processes share them.
    """

    def __init__(self, n: int, seed: int, batch_size: int, processes: int) -> None:
        self.n, self.seed, self.batch_size, self.processes = n, seed, batch_size, processes
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            gen = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def global_batch(self, micro_step: int) -> range:
        """The numbers of the samples every process together trains on at this micro-step."""
        size = self.processes * self.batch_size
        return range(micro_step * size, (micro_step + 1) * size)

    def share(self, process: int) -> slice:
        """Where a process's samples sit in the global batch."""
        return slice(process * self.batch_size, (process + 1) * self.batch_size)

    def images(self, samples: range) -> torch.Tensor:  # -> (len(samples),) image indices
        return torch.stack([self._perm(k // self.n)[k % self.n] for k in samples])


def _final_grid(recipe: Recipe, run: Run, done: int) -> bool:
    """A grid of the written adapter, when no periodic validation drew one during this run."""
    return bool(recipe.output.validation_prompts) and not recipe.output.validation_every and run.start_step < done


def _validation_due(recipe: Recipe, done: int) -> bool:
    every = recipe.output.validation_every
    return bool(every) and (done % every == 0 or done == recipe.optim.max_steps)


def _validate(base: BaseModel, bank: TokenBank | None, recipe: Recipe, path: Path) -> Path:
    token_text = " ".join(bank.names) if bank else ""
    prompts = [p.replace("{token}", token_text) for p in recipe.output.validation_prompts]
    out = recipe.output
    return validation_grid(base, prompts, out.validation_seeds, resolution=recipe.data.resolution,
                           steps=out.validation_inference_steps, guidance=out.validation_guidance, path=path)


def write_adapters(out: Path, base: BaseModel, bank: TokenBank | None, recipe: Recipe,
                   provenance: own_files.Provenance) -> list[Path]:
    written = []
    dtype = recipe.output.save_dtype
    if bank is not None:
        for token, cfg in zip(bank.tokens, recipe.method.tokens):
            path = out / own_files.token_file_name(token.name)
            written.append(own_files.save_embedding(path, token.name, own_files.embedding_parts(bank.vectors(token.name)),
                                                    provenance, init=cfg.init, dtype=dtype))
    if recipe.method.trains_lora:
        written.append(own_files.save_lora(out / own_files.LORA_WEIGHT_NAME, lora_state_dict(base),
                                       lora_adapter_metadata(base), provenance, dtype=dtype))
    return written
