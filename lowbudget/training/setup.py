"""Everything before the training loop's first step, in the order it must happen.

:func:`set_up` reads as a list: the data (a broken folder fails in seconds, before any model
loads), the frozen base and its fingerprint (taken before tokens are added, so that it
identifies the base users have), the adapters, the latents (the VAE runs once, here, and is
kept only when validation grids need it), the optimiser over the adapter tensors only, and
the checkpoint to resume from. It hands the loop a :class:`Run`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedDataParallelKwargs, parse_flag_from_env

from lowbudget.adapters.lora import attach_lora, lora_parameters
from lowbudget.adapters.textual_inversion import TokenBank, attach_tokens
from lowbudget.data.dataset import ImageSet, load_image_folder
from lowbudget.data.split import describe_split, split_by_patient
from lowbudget.errors import DataError, TrainingError
from lowbudget.io import output_folder
from lowbudget.models import BaseModel, load_base
from lowbudget.models.embedded import cache_dir
from lowbudget.phantoms.source import phantom_image_set
from lowbudget.progress import plural
from lowbudget.recipe import DataConfig, MethodConfig, Recipe
from lowbudget.training import checkpoint
from lowbudget.training.conditioning import Captioner, TextConditioner
from lowbudget.training.latents import LatentSet, encode_images
from lowbudget.training.stopping import Ema, FixedLoss, Stopper

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Run:
    """What set-up hands the loop."""

    accelerator: Accelerator
    weight_dtype: torch.dtype  # of the frozen weights; the adapter tensors stay fp32
    base: BaseModel  # frozen, adapters attached; its VAE is None unless validation needs it
    fingerprint: str  # of the base's vocabulary before any token was added
    bank: TokenBank | None  # the learned tokens, if the method trains any
    trainable: dict[str, torch.nn.Parameter]  # every tensor the optimiser updates, by name
    captioner: Captioner
    latents: LatentSet  # (N, 4, h, w) posterior mean and std, on the device
    scaling: float  # the VAE's latent scaling factor (the VAE itself may be gone)
    masks: torch.Tensor | None  # (N, 1, h, w) loss masks at latent scale
    n_images: int
    optimizer: torch.optim.Optimizer
    unet: torch.nn.Module  # accelerate-prepared when LoRA trains it
    condition: TextConditioner
    scheduler: Any  # the base's DDPM noise schedule
    ti_steps: int  # pivotal tuning: tokens train for the first ti_steps only
    stopper: Stopper  # the stopping rule (optim.stop) and its state
    validation_loss: FixedLoss | None = None  # on held-out patients (data.validation_*)
    dvar_loss: FixedLoss | None = None  # on fixed training images (optim.stop = 'dvar')
    ema: Ema | None = None  # optim.ema_decay
    start_step: int = 0
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)  # the wall time of each step this process ran
    evaluations: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: {"validation": [], "dvar": []})

    def extra_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond tensors and optimiser to resume this run exactly."""
        return {"stopping": self.stopper.state_dict(), "ema": self.ema.state_dict() if self.ema else {},
                "evaluations": {k: [list(p) for p in v] for k, v in self.evaluations.items()}}


def set_up(recipe: Recipe, out: Path, resume: bool, log: Callable[[str], None]) -> Run:
    data, method, optim = recipe.data, recipe.method, recipe.optim
    images = phantom_image_set(data) if data.phantoms and not data.path else load_image_folder(data, warn=log)
    log(f"data: {plural(len(images), 'image')} from {images.folder} ({images.caption_source} captions, "
        f"{len(images.skipped)} skipped)")
    validation = _validation_images(images, data, log)
    if validation is not None:
        images = validation[0]

    accelerator = _accelerator(recipe)
    weight_dtype = DTYPES[recipe.model.precision]
    base = frozen_base(recipe, accelerator.device, weight_dtype)
    fingerprint = base.fingerprint  # before attach_tokens grows the vocabulary
    bank, lora, trainable = attach_adapters(base, method, recipe.optim.seed)
    text_trains = bank is not None or (method.trains_lora and method.lora.text_encoder)
    if recipe.model.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
        for _, encoder in base.text_encoders if text_trains else []:
            encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.unet.train(), base.text_encoders_train(True)

    captioner = Captioner(images, data, base.tokenizer, bank)
    latents = _latents(base, images, accelerator.device, log)
    scaling = float(base.vae.config.scaling_factor)
    scheduler = _noise_scheduler(base, recipe)
    validation_loss = _validation_loss(validation[1], base, bank, recipe, scheduler, scaling, accelerator.device,
                                       log) if validation is not None else None
    dvar_loss = _dvar_loss(latents, captioner, recipe, scheduler, scaling) if optim.stop == "dvar" else None
    if not recipe.output.validation_prompts:  # validation is the VAE's only other use: free it
        base.vae = None

    groups = []  # no optimiser state for the 49,408-row vocabulary: the token rows only
    if bank is not None:
        groups.append({"params": bank.parameters, "lr": optim.lr_ti, "weight_decay": 0.0, "name": "tokens"})
    if lora:
        groups.append({"params": lora, "lr": optim.lr_lora, "weight_decay": optim.weight_decay, "name": "lora"})
    optimizer = torch.optim.AdamW(groups)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    encoders = [(tok, accelerator.prepare(enc) if text_trains else enc) for tok, enc in base.text_encoders]
    run = Run(
        accelerator=accelerator, weight_dtype=weight_dtype, base=base, fingerprint=fingerprint, bank=bank,
        trainable=trainable, captioner=captioner, latents=latents, scaling=scaling,
        masks=latents.masks.to(accelerator.device) if latents.masks is not None else None, n_images=len(images),
        optimizer=accelerator.prepare(optimizer), unet=accelerator.prepare(base.unet) if lora else base.unet,
        condition=TextConditioner(encoders, frozen=not text_trains, size=recipe.data.resolution), scheduler=scheduler,
        ti_steps=math.ceil(method.ti_fraction * optim.max_steps) if method.kind == "ti+lora" else optim.max_steps,
        stopper=Stopper(optim.stop, patience=optim.patience, window=optim.window, threshold=optim.dvar_threshold,
                        min_steps=optim.min_steps),
        validation_loss=validation_loss, dvar_loss=dvar_loss,
        ema=Ema(trainable, optim.ema_decay) if optim.ema_decay else None,
    )
    if resume:
        _restore(run, recipe, out, log)
    return run


def attach_adapters(base: BaseModel, method: MethodConfig, seed: int) -> tuple[TokenBank | None, list[torch.nn.Parameter],
                                                                                 dict[str, torch.nn.Parameter]]:
    """The method's tokens and LoRA on ``base``: (token bank, LoRA parameters, every trainable
    tensor by name). A federation's server calls it too, for the tensors its sites start from.

    peft draws LoRA's A matrices from torch's global generator: seeded here with ``seed`` (and
    the global state put back after), so a run starts from the same tensors whatever ran
    before it in the process -- a benchmark's fifth run as its first.
    """
    bank = attach_tokens(base, method.tokens) if method.trains_tokens else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lora = attach_lora(base, method.lora) if method.trains_lora else []
    trainable = dict(bank.trainable) if bank is not None else {}
    trainable.update(dict(lora_parameters(base)))
    return bank, lora, trainable


# Fixed (noise, timestep) draws per image of the deterministic losses: enough to average the
# loss over noise levels, few enough that an evaluation costs a few training steps.
VALIDATION_DRAWS = 4
DVAR_IMAGES, DVAR_DRAWS = 16, 2


def _validation_images(images: ImageSet, data: DataConfig, log: Callable[[str], None]) -> tuple[ImageSet, ImageSet] | None:
    """(training, validation) images, split by patient or read from data.validation_path; None without validation."""
    if data.validation_path:
        held = load_image_folder(replace(data, path=data.validation_path, max_images=0), warn=log)
        shared = {im.patient for im in held.images} & {im.patient for im in images.images} - {None}
        if shared:
            raise DataError(f"data.validation_path '{data.validation_path}' holds images of {plural(len(shared), 'patient')} "
                            f"that also train, e.g. {sorted(shared)[0]!r}; one patient's images belong on one side")
        split = images, held
    elif data.validation_fraction:
        split = split_by_patient(images, data.validation_fraction, data.validation_seed)
    else:
        return None
    log(describe_split(*split))
    return split


def _validation_loss(images: ImageSet, base: BaseModel, bank: TokenBank | None, recipe: Recipe, scheduler: Any,
                     scaling: float, device: torch.device, log: Callable[[str], None]) -> FixedLoss:
    latents = _latents(base, images, device, log)
    captioner = Captioner(images, recipe.data, base.tokenizer, bank)
    seed = recipe.data.validation_seed
    texts = [captioner.text(i, random.Random(seed * 1_000_003 + i)) for i in range(len(images))]
    return FixedLoss(latents.mean * scaling, texts, latents.masks, scheduler,
                     draws=VALIDATION_DRAWS, seed=seed, min_timestep=recipe.optim.min_timestep)


def _dvar_loss(latents: LatentSet, captioner: Captioner, recipe: Recipe, scheduler: Any, scaling: float) -> FixedLoss:
    """DVAR's deterministic loss: up to 16 training images spread over the set, 2 draws each."""
    n = latents.mean.shape[0]
    idx = sorted({round(k * (n - 1) / max(1, DVAR_IMAGES - 1)) for k in range(min(n, DVAR_IMAGES))})
    seed = recipe.optim.seed
    texts = [captioner.text(i, random.Random(seed * 1_000_003 + i)) for i in idx]
    masks = latents.masks[idx] if latents.masks is not None else None
    return FixedLoss(latents.mean[idx] * scaling, texts, masks, scheduler, draws=DVAR_DRAWS, seed=seed,
                     min_timestep=recipe.optim.min_timestep)


def frozen_base(recipe: Recipe, device: torch.device, weight_dtype: torch.dtype) -> BaseModel:
    base = load_base(recipe.model.base, prediction_type=recipe.model.prediction_type,
                     expected_family=recipe.model.family)
    base.fingerprint  # of the vocabulary as loaded: a bf16 copy would hash to another base's fingerprint
    parts = ("unet", "text_encoder", "vae") + (("text_encoder_2",) if base.is_xl else ())
    # SDXL's VAE overflows in fp16 (its config says force_upcast): it stays fp32 under fp16
    upcast = weight_dtype == torch.float16 and bool(base.vae.config.get("force_upcast", False))
    for part in parts:  # by name: no loop variable keeps a module alive
        getattr(base, part).requires_grad_(False)
        if weight_dtype == torch.float32 or (part == "vae" and upcast):  # an fp32 cast would only make diffusers warn
            getattr(base, part).to(device)
        else:
            getattr(base, part).to(device, weight_dtype)
    return base


def _latents(base: BaseModel, images: ImageSet, device: torch.device, log: Callable[[str], None]) -> LatentSet:
    """Every image encoded once (the VAE never runs inside the loop). The caller drops the
    pixels when this returns: at 512 px, 100 images are ~300 MB of float32."""
    latents = encode_images(base.vae, images.images, device=device, dtype=base.vae.dtype, cache_dir=cache_dir() / "latents")
    log(f"latents: {plural(latents.encoded, 'image')} encoded, {len(images) - latents.encoded} from the cache")
    latents.mean, latents.std = latents.mean.to(device), latents.std.to(device)
    return latents


def _noise_scheduler(base: BaseModel, recipe: Recipe):
    scheduler = base.noise_scheduler()
    n = scheduler.config.num_train_timesteps
    if not 0 <= recipe.optim.min_timestep < n:
        raise TrainingError(f"optim.min_timestep = {recipe.optim.min_timestep} must be in [0, {n - 1}] for this scheduler")
    if recipe.output.validation_prompts and recipe.output.validation_inference_steps > n:
        raise TrainingError(f"output.validation_inference_steps = {recipe.output.validation_inference_steps} is more "
                            f"than the {n} timesteps this base's scheduler was trained on")
    return scheduler


def _restore(run: Run, recipe: Recipe, out: Path, log: Callable[[str], None]) -> None:
    state = checkpoint.load_checkpoint(out)
    run.start_step = int(state["step"])
    for change in changes_on_resume(state["recipe"], recipe, run.start_step):
        log(f"note: resuming with {change}")
    checkpoint.restore(state, run.trainable, run.optimizer)
    run.losses = list(state["losses"])
    if "stopping" in state:  # checkpoints of earlier versions have none
        run.stopper.load_state_dict(state["stopping"])
        run.evaluations = {k: [(int(s), float(v)) for s, v in points] for k, points in state["evaluations"].items()}
    if run.ema is not None and state.get("ema"):
        run.ema.load_state_dict(state["ema"])
    log(f"resuming at step {run.start_step} of {recipe.optim.max_steps}")


def _accelerator(recipe: Recipe) -> Accelerator:
    precision = recipe.model.precision
    if precision == "fp16" and not torch.cuda.is_available():
        raise TrainingError("model.precision = 'fp16' needs a CUDA GPU; use 'bf16' or 'fp32' on a CPU")
    # accelerate keeps the precision in a process-wide singleton, so a second run in one
    # process (a notebook, the test suite) could not change it. Reset that part only; the
    # distributed state of an `accelerate launch` (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(
        cpu=_on_cpu(),
        mixed_precision="no" if precision == "fp32" else precision,
        # pivotal tuning stops the token gradients midway; DDP must tolerate unused parameters
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=recipe.method.kind == "ti+lora")],
    )


def claim_output(out: Path, resume: bool, overwrite: bool, log: Callable[[str], None]) -> bool:
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
    if not holds_run and is_main_process():
        output_folder(out, overwrite=overwrite, command="train")
    return resume


def is_main_process() -> bool:
    """The process that writes files and speaks (the only one, outside a multi-process launch)."""
    return PartialState(cpu=_on_cpu()).is_main_process


def _on_cpu() -> bool:
    """Whether the processes train on CPUs. accelerate fixes its process-wide state on first use,
    and treats several CPU processes (torchrun, mpirun) as one group only when told it is on
    CPU: without this, each of two CPU processes would call itself the only one, and both
    would write the adapter files."""
    return not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")  # accelerate's own reading


# A resumed run must draw what the unbroken run would have drawn: these may not change.
_FIXED_ON_RESUME = {"method": None, "optim": ("batch_size", "grad_accum", "seed", "deterministic"),
                    "data": ("resolution", "validation_fraction", "validation_path", "validation_seed")}


def changes_on_resume(saved: dict, recipe: Recipe, step: int) -> list[str]:
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
                                    "a resumed run must keep its method, batch, seed and validation split")
            notes.append(f"{table}.{key} = {value!r} (the checkpoint's run had {before!r})")
    return notes
