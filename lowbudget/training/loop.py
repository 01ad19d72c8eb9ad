"""The one training loop: textual inversion, LoRA and pivotal tuning (TI + LoRA).

Read top to bottom: data (fails fast), base model, adapters, cached latents, optimizer over
the adapter tensors only, optional resume, then the loop. Every random draw of step ``k``
comes from a generator seeded with ``(seed, k)``, so a run killed at step k and resumed
draws exactly what the unbroken run would have drawn.
"""

from __future__ import annotations

import gc
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedDataParallelKwargs
from tqdm.auto import tqdm

from lowbudget.adapters import files
from lowbudget.adapters.lora import attach_lora, lora_adapter_metadata, lora_parameters, lora_state_dict
from lowbudget.adapters.textual_inversion import TokenBank, attach_tokens
from lowbudget.data.dataset import load_image_folder
from lowbudget.errors import TrainingError
from lowbudget.io import atomic_write_text, output_folder
from lowbudget.models import BaseModel, load_base
from lowbudget.models.embedded import cache_dir
from lowbudget.phantoms.source import phantom_image_set
from lowbudget.recipe import Recipe
from lowbudget.training import checkpoint
from lowbudget.training.feedback import validation_grid, write_loss_curve
from lowbudget.training.latents import encode_images
from lowbudget.training.text import Captioner, TextConditioner

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    resume = _claim_output(out, resume, overwrite, log)
    data, method, optim = recipe.data, recipe.method, recipe.optim

    # --- data first: a broken folder fails in seconds, before any model loads
    images = phantom_image_set(data) if data.phantoms and not data.path else load_image_folder(data, warn=log)
    log(f"data: {len(images)} image(s) from {images.folder} ({images.caption_source} captions, "
        f"{len(images.skipped)} skipped)")

    # --- base model and adapters
    if recipe.model.precision == "fp16" and not torch.cuda.is_available():
        raise TrainingError("model.precision = 'fp16' needs a CUDA GPU; use 'bf16' or 'fp32' on a CPU")
    accelerator = _accelerator(recipe.model.precision, pivotal=method.kind == "ti+lora")
    device, weight_dtype = accelerator.device, _DTYPES[recipe.model.precision]
    base = load_base(recipe.model.base, prediction_type=recipe.model.prediction_type,
                     expected_family=recipe.model.family)
    fingerprint = base.fingerprint  # of the untouched vocabulary, before tokens are added
    for part in ("unet", "text_encoder", "vae"):  # by name: no loop variable keeps a module alive
        getattr(base, part).requires_grad_(False)
        if weight_dtype == torch.float32:  # an fp32 cast would only make diffusers warn
            getattr(base, part).to(device)
        else:
            getattr(base, part).to(device, weight_dtype)
    bank = attach_tokens(base, method.tokens) if method.trains_tokens else None
    lora = attach_lora(base, method.lora) if method.trains_lora else []
    trainable = _trainable_tensors(base, bank)
    text_trains = bank is not None or (method.trains_lora and method.lora.text_encoder)
    captioner = Captioner(images, data, base.tokenizer, bank)
    if recipe.model.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
        if text_trains:
            base.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.unet.train(), base.text_encoder.train()

    # --- latents, once (the VAE never runs inside the loop)
    latents = encode_images(base.vae, images.images, device=device, dtype=weight_dtype,
                            cache_dir=cache_dir() / "latents")
    log(f"latents: {latents.encoded} image(s) encoded, {len(images) - latents.encoded} from the cache")
    scaling = float(base.vae.config.scaling_factor)
    if not recipe.output.validation_prompts:  # validation is the VAE's only other use: free it
        base.vae = None
    n_images = len(images)
    del images  # the pixels live on as latents; at 512 px, 100 images are ~300 MB of float32
    gc.collect()
    latents.mean, latents.std = latents.mean.to(device), latents.std.to(device)
    masks = latents.masks.to(device) if latents.masks is not None else None

    # --- optimizer over the adapter tensors only: no state for the 49,408-row vocabulary
    groups = []
    if bank is not None:
        groups.append({"params": [bank.parameter], "lr": optim.lr_ti, "weight_decay": 0.0, "name": "tokens"})
    if lora:
        groups.append({"params": lora, "lr": optim.lr_lora, "weight_decay": optim.weight_decay, "name": "lora"})
    optimizer = torch.optim.AdamW(groups)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    text_encoder = accelerator.prepare(base.text_encoder) if text_trains else base.text_encoder
    unet = accelerator.prepare(base.unet) if lora else base.unet
    optimizer = accelerator.prepare(optimizer)
    condition = TextConditioner(text_encoder, frozen=not text_trains)
    scheduler = base.noise_scheduler()
    n_train_timesteps = scheduler.config.num_train_timesteps
    if not 0 <= optim.min_timestep < n_train_timesteps:
        raise TrainingError(f"optim.min_timestep = {optim.min_timestep} must be in [0, {n_train_timesteps - 1}] for this scheduler")
    if recipe.output.validation_prompts and recipe.output.validation_inference_steps > n_train_timesteps:
        raise TrainingError(f"output.validation_inference_steps = {recipe.output.validation_inference_steps} is more "
                            f"than the {n_train_timesteps} timesteps this base's scheduler was trained on")

    # --- resume
    start_step, losses = 0, []
    if resume:
        state = checkpoint.load_checkpoint(out)
        start_step = int(state["step"])
        for change in _changes_on_resume(state["recipe"], recipe, start_step):
            log(f"note: resuming with {change}")
        checkpoint.restore(state, trainable, optimizer)
        losses = list(state["losses"])
        log(f"resuming at step {start_step} of {optim.max_steps}")
    if accelerator.is_main_process:
        atomic_write_text(out / "recipe.toml", recipe.to_toml())

    # --- the loop
    ti_steps = math.ceil(method.ti_fraction * optim.max_steps) if method.kind == "ti+lora" else optim.max_steps
    order = _DataOrder(n_images, optim.seed, optim.batch_size, accelerator.num_processes)
    step_times: list[float] = []
    startup = time.perf_counter() - t_start
    bar = _progress(progress, start_step, optim.max_steps)
    for step in range(start_step, optim.max_steps):
        t_step = time.perf_counter()
        seed = _step_seed(optim.seed, step, accelerator.process_index)
        gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
        torch.manual_seed(seed)  # LoRA dropout draws from the global generator
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * _lr_factor(step, optim)
        if bank is not None:
            bank.parameter.requires_grad_(step < ti_steps)

        step_loss = 0.0
        for micro in range(optim.grad_accum):
            idx = order.batch(step * optim.grad_accum + micro, accelerator.process_index)  # (B,)
            x0 = latents.sample(idx, gen) * scaling  # (B, 4, h, w)
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = torch.randint(optim.min_timestep, n_train_timesteps, (len(idx),), generator=gen).to(device)
            x_t = scheduler.add_noise(x0, noise, t)
            target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
            texts = [captioner.text(int(i), rng) for i in idx]
            ids = captioner.ids(texts).to(device)  # (B, 77)
            with accelerator.autocast():
                cond = condition(texts, ids)  # (B, 77, D)
                pred = unet(x_t.to(weight_dtype), t, cond).sample  # (B, 4, h, w)
            loss = _masked_mse(pred.float(), target.float(), masks[idx] if masks is not None else None)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {loss.item()} at step {step + 1}; nothing was saved from this step. "
                    "Try model.precision = 'bf16' or 'fp32', or a lower learning rate"
                )
            accelerator.backward(loss / optim.grad_accum)
            step_loss += loss.item() / optim.grad_accum

        if optim.max_grad_norm > 0:
            accelerator.clip_grad_norm_([p for p in trainable.values() if p.grad is not None], optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not all(torch.isfinite(p).all() for p in trainable.values()):
            raise TrainingError(f"adapter weights became non-finite at step {step + 1}; lower the learning rate")
        losses.append(step_loss)
        step_times.append(time.perf_counter() - t_step)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        bar.update(1)

        done = step + 1
        if accelerator.is_main_process:
            if _validation_due(recipe, done):
                with accelerator.autocast():  # frozen weights may be bf16/fp16
                    _validate(base, bank, recipe, out / "samples" / f"step-{done:06d}.png")
            if recipe.output.checkpoint_every and done % recipe.output.checkpoint_every == 0 and done < optim.max_steps:
                checkpoint.save_checkpoint(out, step=done, trainable=trainable, optimizer=optimizer,
                                           losses=losses, recipe=recipe.to_dict())
    bar.close()

    # --- outputs
    written: list[Path] = []
    if accelerator.is_main_process:
        checkpoint.save_checkpoint(out, step=optim.max_steps, trainable=trainable, optimizer=optimizer,
                                   losses=losses, recipe=recipe.to_dict())
        provenance = files.Provenance(
            base_name=base.name, base_fingerprint=fingerprint, modality=data.modality, n_images=n_images,
            steps=optim.max_steps, recipe=recipe.shareable_dict(), description=recipe.output.description,
            license=recipe.output.license,
        )
        written = _write_adapters(out, base, bank, recipe, provenance)
        written.append(write_loss_curve(losses, out))
        if recipe.output.validation_prompts and not recipe.output.validation_every and start_step < optim.max_steps:
            with accelerator.autocast():
                written.append(_validate(base, bank, recipe, out / "samples" / "final.png"))
    accelerator.wait_for_everyone()
    median = sorted(step_times)[len(step_times) // 2] if step_times else float("nan")
    return TrainResult(out, written, optim.max_steps, losses, median, startup)


# --------------------------------------------------------------------------- helpers


def _accelerator(precision: str, *, pivotal: bool):
    # accelerate keeps the precision in a process-wide singleton, so a second run in one
    # process (a notebook, the test suite) could not change it. Reset that part only; the
    # distributed state of an `accelerate launch` (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        mixed_precision="no" if precision == "fp32" else precision,
        # pivotal tuning stops the token gradients midway; DDP must tolerate unused parameters
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=pivotal)],
    )


def _claim_output(out: Path, resume: bool, overwrite: bool, log: Callable[[str], None]) -> bool:
    """Check the output folder under the one rule for outputs; return whether to resume.

    A run that stopped before its first checkpoint left only its recipe.toml: ``--resume``
    starts it again from step 0, which loses nothing, rather than refusing both ways.
    """
    holds_run = (out / "recipe.toml").is_file() or checkpoint.checkpoint_path(out).exists()
    if holds_run and not resume:
        raise TrainingError(f"output folder '{out}' already holds a run; pass --resume to continue it or choose another --output")
    if resume and not holds_run:
        checkpoint.load_checkpoint(out)  # raises: no checkpoint, no run
    if resume and not checkpoint.checkpoint_path(out).exists():
        log(f"note: the run in '{out}' stopped before its first checkpoint; starting it again from step 0")
        resume = False
    if not holds_run and _is_main_process():
        output_folder(out, overwrite=overwrite, command="train")
    return resume


def _is_main_process() -> bool:
    return PartialState().is_main_process


# A resumed run must draw what the unbroken run would have drawn: these may not change.
_FIXED_ON_RESUME = {"method": None, "optim": ("batch_size", "grad_accum", "seed", "deterministic"), "data": ("resolution",)}


def _changes_on_resume(saved: dict, recipe: Recipe, step: int) -> list[str]:
    """What differs from the checkpoint's recipe, as notes; raises where the run cannot continue."""
    now = recipe.to_dict()
    if recipe.optim.max_steps < step:
        raise TrainingError(f"--resume: optim.max_steps = {recipe.optim.max_steps} is below the checkpoint's step {step}; "
                            f"give --max-steps {step} or more (the adapter there has trained {step} steps)")
    notes = []
    for table, values in now.items():
        fixed = _FIXED_ON_RESUME.get(table, ())
        for key, value in values.items():
            before = saved.get(table, {}).get(key, value)
            if before == value or (table, key) == ("output", "dir"):
                continue
            if fixed is None or key in fixed:
                raise TrainingError(f"--resume: {table}.{key} was {before!r} in the checkpoint, now {value!r}; "
                                    "a resumed run must keep its method, batch and seed")
            notes.append(f"{table}.{key} = {value!r} (the checkpoint's run had {before!r})")
    return notes


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


def _trainable_tensors(base: BaseModel, bank: TokenBank | None) -> dict[str, torch.nn.Parameter]:
    named = {"tokens": bank.parameter} if bank is not None else {}
    named.update(dict(lora_parameters(base)))
    return named


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


def _lr_factor(step: int, optim) -> float:
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    progress = (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps)
    return 1.0 - progress if optim.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return F.mse_loss(pred, target)
    err = (pred - target) ** 2 * mask  # (B, 4, h, w) * (B, 1, h, w)
    return err.sum() / (mask.sum() * pred.shape[1]).clamp(min=1e-8)


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
                    provenance: files.Provenance) -> list[Path]:
    written = []
    dtype = recipe.output.save_dtype
    if bank is not None:
        for token, cfg in zip(bank.tokens, recipe.method.tokens):
            path = out / files.token_file_name(token.name)
            written.append(files.save_embedding(path, token.name, bank.vectors(token.name), provenance,
                                                init=cfg.init, dtype=dtype))
    if recipe.method.trains_lora:
        written.append(files.save_lora(out / files.LORA_WEIGHT_NAME, lora_state_dict(base),
                                       lora_adapter_metadata(base), provenance, dtype=dtype))
    return written
