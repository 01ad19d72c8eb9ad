"""Pretrain the embedded phantom base: a Stable Diffusion-architecture model from scratch, on CPU.

Three phases, each resumable from ``<output>/checkpoint.pt``:

  1. VAE    an ``AutoencoderKL`` learns to map 64 px phantoms to 16 x 16 x 4 latents
  2. encode every pretraining image is encoded once (posterior mean and std)
  3. U-Net  ``UNet2DConditionModel`` and ``CLIPTextModel`` learn eps-prediction jointly on
            captions that name the modality, harmless attributes and, in plain words, how the
            picture looks -- never a finding

The findings do occur in the images (each at ``prevalence``), and the captions say what they
look like ("hazy left base"), so the base can draw them on request, but it has never been
given their names: that is what a learned token has to supply, as for Stable Diffusion and
medical vocabulary. Without the plain words the findings are noise the base draws at random
(a base pretrained without them: no token got above 0.25), as no caption ever pointed at
them. The result is written as a diffusers folder and as one fp16 safetensors file, the form
that ships inside the package. ``shape = "phantom-xl"`` pretrains the same at SDXL's
architecture (two text encoders, pooled embedding and time ids), conditioned as training and
sampling condition every SDXL base (:mod:`lowbudget.models.text`).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from lowbudget import checks
from lowbudget.errors import RecipeError
from lowbudget.io import atomic_write, atomic_write_text
from lowbudget.models.architectures import build_components, get_shape, save_components
from lowbudget.models.packed import pack_base
from lowbudget.models.text import encode
from lowbudget.phantoms.world import generate
from lowbudget.progress import pace
from lowbudget.training.schedule import lr_factor



SHAPES = ("phantom", "phantom-xl")


@dataclass
class PretrainConfig:
    shape: str = "phantom"  # or "phantom-xl": SDXL's architecture
    size: int = 64
    n_images: int = 8000
    chest_fraction: float = 0.6  # the rest are prostate MRI
    prevalence: float = 0.1  # of every finding, independently
    vae_steps: int = 900
    vae_batch: int = 16
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    unet_steps: int = 3500
    unet_batch: int = 32
    unet_lr: float = 4e-4
    text_lr: float = 2e-4
    warmup: int = 200
    caption_dropout: float = 0.1  # empty captions teach the unconditional branch for guidance
    snr_gamma: float = 5.0  # min-SNR loss weighting: faster convergence at this scale
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise RecipeError(f"--set shape = {self.shape!r} is not known; expected one of {', '.join(SHAPES)}")
        checks.image_size("--set size", self.size)
        for name in ("n_images", "vae_steps", "vae_batch", "unet_steps", "unet_batch", "checkpoint_every"):
            checks.at_least(f"--set {name}", getattr(self, name), 1)
        for name in ("vae_lr", "unet_lr", "text_lr", "kl_weight", "snr_gamma"):
            checks.at_least(f"--set {name}", getattr(self, name), 0.0)
        for name in ("chest_fraction", "prevalence", "caption_dropout", "ema_decay"):
            checks.within(f"--set {name}", getattr(self, name), 0.0, 1.0)
        checks.at_least("--set warmup", self.warmup, 0)
        checks.seed("--set seed", self.seed)


def pretrain(output: Path, cfg: PretrainConfig, *, log=print) -> Path:
    """Run (or resume) all phases; returns the packed fp16 file."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "config.json", json.dumps(asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    parts = build_components(get_shape(cfg.shape), seed=cfg.seed)
    state = _load_state(output)
    pixels, captions = _pretraining_set(cfg)  # (N, 3, 64, 64) in [-1, 1]; N captions
    log(f"pretraining set: {len(captions)} phantoms")
    vae = parts["vae"]
    if state.get("phase", "vae") == "vae":
        _train_vae(vae, pixels, cfg, output, state, log)
        state = {"phase": "unet", "vae": vae.state_dict()}
        _save_state(output, state)
    vae.load_state_dict(state["vae"])
    mean, std = _encode(vae, pixels)  # (N, 4, 16, 16) each
    scaling = float(1 / mean.std())
    vae.register_to_config(scaling_factor=scaling)
    _train_unet(parts, mean * scaling, std * scaling, captions, cfg, output, state, log)
    return _write_outputs(parts, output, cfg)


def _pretraining_set(cfg: PretrainConfig) -> tuple[torch.Tensor, list[str]]:
    n_chest = int(round(cfg.n_images * cfg.chest_fraction))
    phantoms = generate("chest", n=n_chest, size=cfg.size, seed=cfg.seed, prevalence=cfg.prevalence, describe=True)
    phantoms += generate("prostate", n=cfg.n_images - n_chest, size=cfg.size, seed=cfg.seed + 1,
                         prevalence=cfg.prevalence, describe=True)
    pixels = torch.from_numpy(np.stack([p.image for p in phantoms]))[:, None].repeat(1, 3, 1, 1)
    return pixels * 2 - 1, [p.caption for p in phantoms]


def _train_vae(vae, pixels: torch.Tensor, cfg: PretrainConfig, output: Path, state: dict, log) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = state.get("step", 0)
    if start:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    for _ in range(start):  # replay the sampler so a resumed run sees the same batches
        torch.randint(len(pixels), (cfg.vae_batch,), generator=gen)
    t0 = time.time()
    for step in range(start, cfg.vae_steps):
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * lr_factor(step, total=cfg.vae_steps, warmup=cfg.warmup)
        x = pixels[torch.randint(len(pixels), (cfg.vae_batch,), generator=gen)]  # (B, 3, 64, 64)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = F.mse_loss(recon, x) + F.l1_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log(f"vae step {step + 1}/{cfg.vae_steps} loss {loss.item():.4f} ({pace(time.time() - t0, step + 1 - start, cfg.vae_steps - step - 1)})")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.vae_steps:
            _save_state(output, {"phase": "vae", "step": step + 1, "model": vae.state_dict(), "optimizer": opt.state_dict()})


@torch.no_grad()
def _encode(vae, pixels: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, len(pixels), batch):
        dist = vae.encode(pixels[i : i + batch]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def _train_unet(parts: dict, mean: torch.Tensor, std: torch.Tensor, captions: list[str], cfg: PretrainConfig,
                output: Path, state: dict, log) -> None:
    unet = parts["unet"]
    models = {"unet": unet} | {k: parts[k] for k in ("text_encoder", "text_encoder_2") if k in parts}
    encoders = [(parts["tokenizer"], parts["text_encoder"])]
    if "text_encoder_2" in parts:
        encoders.append((parts["tokenizer_2"], parts["text_encoder_2"]))
    noise = DDPMScheduler.from_config(parts["scheduler"].config)
    params = [{"params": list(unet.parameters()), "lr": cfg.unet_lr},
              {"params": [p for k, m in models.items() if k != "unet" for p in m.parameters()], "lr": cfg.text_lr}]
    opt = torch.optim.AdamW(params, weight_decay=0.0)  # decay would shrink the unused vocabulary rows
    ema = {name: copy.deepcopy(module).requires_grad_(False) for name, module in models.items()}
    start = state.get("step", 0) if state.get("phase") == "unet" and "optimizer" in state else 0
    if start:
        for name, module in models.items():
            module.load_state_dict(state[name])
            ema[name].load_state_dict(state[f"ema_{name}"])
        opt.load_state_dict(state["optimizer"])
    gen = torch.Generator().manual_seed(cfg.seed + 12)
    for _ in range(start):
        torch.randint(len(captions), (cfg.unet_batch,), generator=gen)
    alphas = noise.alphas_cumprod
    snr = alphas / (1 - alphas)  # (1000,)
    for module in models.values():
        module.train()
    t0 = time.time()
    for step in range(start, cfg.unet_steps):
        factor = lr_factor(step, total=cfg.unet_steps, warmup=cfg.warmup)
        for group, base_lr in zip(opt.param_groups, (cfg.unet_lr, cfg.text_lr)):
            group["lr"] = base_lr * factor
        idx = torch.randint(len(captions), (cfg.unet_batch,), generator=gen)  # (B,)
        latents = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)  # (B, 4, 16, 16)
        drop = torch.rand(len(idx), generator=gen) < cfg.caption_dropout
        texts = ["" if d else captions[i] for d, i in zip(drop.tolist(), idx.tolist())]  # "" teaches the uncond branch
        eps = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise.config.num_train_timesteps, (len(idx),), generator=gen)
        noisy = noise.add_noise(latents, eps, t)
        cond = encode(encoders, texts, size=cfg.size)  # (B, 77, 64) states; phantom-xl (B, 77, 160) + pooled, time ids
        pred = unet(noisy, t, **cond.unet_kwargs()).sample
        weight = torch.clamp(snr[t], max=cfg.snr_gamma) / snr[t]  # min-SNR for eps targets
        loss = (weight * F.mse_loss(pred, eps, reduction="none").mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, module in models.items():
                for p_ema, p in zip(ema[name].parameters(), module.parameters()):
                    p_ema.lerp_(p, 1 - decay)
        if (step + 1) % 100 == 0:
            log(f"unet step {step + 1}/{cfg.unet_steps} loss {loss.item():.4f} ({pace(time.time() - t0, step + 1 - start, cfg.unet_steps - step - 1)})")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.unet_steps:
            _save_state(output, {"phase": "unet", "step": step + 1, "vae": state["vae"], "optimizer": opt.state_dict(),
                                 **{name: module.state_dict() for name, module in models.items()},
                                 **{f"ema_{name}": e.state_dict() for name, e in ema.items()}})
    for name, module in models.items():
        module.load_state_dict(ema[name].state_dict())


def _save_state(output: Path, state: dict) -> None:
    atomic_write(output / "checkpoint.pt", lambda tmp: torch.save(state, tmp))


def _load_state(output: Path) -> dict:
    path = output / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}


def _write_outputs(parts: dict, output: Path, cfg: PretrainConfig) -> Path:
    save_components(parts, output / "base", force_zeros_for_empty_prompt=False)  # captions dropped to "", not zeros
    return pack_base(parts, output / "phantom-base.safetensors", shape=cfg.shape, config=asdict(cfg))
