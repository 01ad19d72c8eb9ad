"""The one sampling loop behind ``generate``, ``compose`` and ``inpaint``.

Each step runs the U-Net once on a batch of B x (K + 1): B images (seeds), each with the
unconditional (negative) branch and its K sub-prompts. The noise predictions are then mixed,
classifier-free guidance per sub-prompt (composable diffusion, the paper's "AND"):

    eps = eps_uncond + guidance * sum_k w_k * (eps_k - eps_uncond)

A plain prompt is K = 1, w = 1: ordinary classifier-free guidance. Inpainting is the same
loop with a mask: on any base the known region is replaced every step by the original,
noised to the current level; on an SD inpainting checkpoint (9-channel U-Net) the mask and
masked image are fed to the U-Net instead. Works on any diffusers ``StableDiffusionPipeline``
and ``StableDiffusionXLPipeline``: on SDXL each row's conditioning also carries its pooled text
embedding and time ids (:mod:`lowbudget.models.text`), and an empty negative prompt is zeros
where the pipeline says so (``force_zeros_for_empty_prompt``), as diffusers does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from lowbudget import checks
from lowbudget.errors import LowbudgetError
from lowbudget.models.base import native_size as base_native_size, vae_scale_factor
from lowbudget.models.text import Conditioning, zeros_like
from lowbudget.progress import Progress
from lowbudget.sampling.masks import feather, paste_back, to_latent_grid
from lowbudget.sampling.prompts import SubPrompt, encode_texts, parse_prompt
from lowbudget.sampling.schedulers import make_scheduler


@dataclass
class Inpainting:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    mask: torch.Tensor  # (1, 1, H, W), 1 = repaint
    feather: int = 8  # pixels
    strength: float = 1.0  # 1 = start from noise; < 1 = start from the noised original
    paste_back: bool = False

    def __post_init__(self) -> None:
        size = int(self.image.shape[-1])
        # the blur kernel is 2 * feather + 1 wide: beyond half the image it only costs memory
        checks.within("--feather", self.feather, 0, size // 2)
        if not (checks.finite("--strength", self.strength) > 0 and self.strength <= 1):
            raise LowbudgetError(f"--strength = {self.strength!r} must be in (0, 1]")


@dataclass
class SampleRequest:
    prompt: str  # may compose: "a :0.3 AND b :0.7"
    negative_prompt: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    steps: int = 30
    guidance: float = 7.5
    # Share of the steps, from the noisiest, run without guidance (scale 1: the prompt's own
    # prediction). Guidance at high noise pulls every image towards the mean of the prompt's
    # modes (a finding on both sides where each training image has it on one); begun once the
    # layout is set, it sharpens the finding without choosing for it (Kynkaanniemi et al. 2024).
    guidance_from: float = 0.0
    scheduler: str = "ddim"
    size: int | None = None  # pixels; default: the base's native size
    batch_size: int = 4  # images per U-Net call (each is K + 1 rows)
    inpaint: Inpainting | None = None

    def __post_init__(self) -> None:
        checks.seeds("seed", self.seeds)
        checks.within("--steps", self.steps, 1, 1000)  # the base's own limit is checked when sampling
        checks.finite("--guidance", self.guidance)
        if not 0.0 <= checks.finite("--guidance-from", self.guidance_from) < 1.0:
            raise LowbudgetError(f"--guidance-from = {self.guidance_from!r} must be in [0, 1): the share of steps run unguided")
        checks.at_least("--batch-size", self.batch_size, 1)
        if self.size is not None:
            checks.image_size("--size", self.size)

    @property
    def parts(self) -> list[SubPrompt]:
        return parse_prompt(self.prompt)


@dataclass
class Step:
    """One sampling step, as an observer (``watch``) sees it.

    ``x0`` is the scheduler's estimate, after this step, of the final latents: DDIM and Euler
    report one; DPM-Solver++ and PNDM do not, and it is None.
    """

    index: int  # 0 .. steps - 1 (of this chunk of seeds)
    seeds: list[int]  # the images this step advanced
    unet_rows: int  # the rows of its one U-Net call: len(seeds) x (K + 1)
    x0: torch.Tensor | None  # (B, 4, h, w)


Watch = Callable[[Step], None]


def unet_calls(req: SampleRequest) -> int:
    """How many sampling steps ``sample(pipe, req)`` runs (one U-Net call each): what a progress
    bar counts. A partial-strength inpainting starts part-way."""
    steps = _kept_steps(req.inpaint, req.steps) if req.inpaint is not None else req.steps
    return -(-len(req.seeds) // req.batch_size) * steps


def _kept_steps(inp: Inpainting, steps: int) -> int:
    """The last steps of ``steps`` that an inpainting of ``inp.strength`` < 1 runs (all at 1)."""
    return steps if inp.strength >= 1.0 else max(1, round(inp.strength * steps))


def sample_with_progress(pipe, req: SampleRequest, what: str, *, enabled: bool = True) -> torch.Tensor:
    """:func:`sample`, showing its steps done and the time left under the name ``what``."""
    with Progress(unet_calls(req), what, enabled=enabled) as bar:
        return sample(pipe, req, watch=lambda _: bar.update())


def native_size(pipe) -> int:
    return base_native_size(pipe.unet, pipe.vae)


@torch.no_grad()
def sample(pipe, req: SampleRequest, *, watch: Watch | None = None) -> torch.Tensor:
    """Images for every seed of ``req``: (len(seeds), 3, H, W) in [0, 1].

    Each image depends only on its own seed (not on its batch neighbours), so any image can
    be regenerated alone. ``watch``, if given, is called after every step.
    """
    parts = req.parts
    cond = encode_texts(pipe, [req.negative_prompt] + [p.text for p in parts], req.size)  # (K + 1, 77, D)
    if cond.pooled is not None and not req.negative_prompt and pipe.config.get("force_zeros_for_empty_prompt", False):
        cond = Conditioning.cat([zeros_like(cond.rows(slice(0, 1))), cond.rows(slice(1, None))])
    return sample_states(pipe, req, cond, [p.weight for p in parts], watch=watch)


@torch.no_grad()
def sample_states(pipe, req: SampleRequest, states: Conditioning | torch.Tensor, weights: Sequence[float], *,
                  watch: Watch | None = None) -> torch.Tensor:
    """``sample`` from text conditioning given directly: (K + 1, 77, D) states (a tensor, or a
    :class:`Conditioning`, which SDXL needs), the negative first, then one per weight;
    ``req.prompt`` and ``req.negative_prompt`` are not read."""
    if isinstance(states, torch.Tensor):
        if getattr(pipe, "text_encoder_2", None) is not None:
            raise LowbudgetError("an SDXL pipeline needs pooled text embeddings too: pass a Conditioning")
        states = Conditioning(states)
    trained = int(pipe.scheduler.config.num_train_timesteps)
    if req.steps > trained:
        raise LowbudgetError(f"--steps = {req.steps} is more than the {trained} timesteps this base's scheduler was trained on")
    size = req.size or native_size(pipe)
    factor = vae_scale_factor(pipe.vae)
    if size % factor:
        raise LowbudgetError(f"--size = {size} must be a multiple of {factor} for this base (its VAE's scale factor)")
    for w in weights:
        checks.finite("composition weight", w)
    if not any(weights):
        raise LowbudgetError(f"every composition weight is 0 ({', '.join(f'{w:g}' for w in weights)}); "
                             "at least one sub-prompt must count")
    if len(states) != len(weights) + 1:
        raise LowbudgetError(f"{len(states)} text states for {len(weights)} weights: expected one more (the negative)")
    device = pipe.unet.device
    cond = states.to(device, pipe.unet.dtype)
    weights = torch.tensor(list(weights), device=device, dtype=torch.float32)
    known = KnownRegion.encode(pipe, req.inpaint, size) if req.inpaint else None
    chunks = [req.seeds[i : i + req.batch_size] for i in range(0, len(req.seeds), req.batch_size)]
    return torch.cat([_sample_chunk(pipe, req, seeds, cond, weights, known, size, watch) for seeds in chunks])


def _sample_chunk(pipe, req: SampleRequest, seeds: list[int], cond: Conditioning, weights: torch.Tensor,
                  known: KnownRegion | None, size: int, watch: Watch | None) -> torch.Tensor:
    unet, device, dtype = pipe.unet, pipe.unet.device, pipe.unet.dtype
    b, k1 = len(seeds), len(cond)
    scheduler = make_scheduler(req.scheduler, pipe.scheduler.config)  # fresh: multistep solvers keep state
    scheduler.set_timesteps(req.steps, device=device)
    timesteps = scheduler.timesteps
    latent = size // vae_scale_factor(pipe.vae)
    shape = (4, latent, latent)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]).to(device)
    if known is not None and req.inpaint.strength < 1.0:  # start part-way, from the noised original
        start = len(timesteps) - _kept_steps(req.inpaint, len(timesteps))
        timesteps = timesteps[start:]
        latents = scheduler.add_noise(known.latents.expand(b, -1, -1, -1), noise, timesteps[:1])
    else:
        latents = noise * scheduler.init_noise_sigma  # (B, 4, h, w)
    context = cond.repeat_interleave(b).unet_kwargs()  # (B(K+1), 77, D): all uncond rows, then sub-prompt 1, ...
    unguided = round(req.guidance_from * req.steps)  # counted on the full schedule, as a strength < 1 skips
    first = req.steps - len(timesteps)
    for i, t in enumerate(timesteps):
        scale = 1.0 if first + i < unguided else req.guidance
        x = scheduler.scale_model_input(torch.cat([latents] * k1), t)  # (B(K+1), 4, h, w)
        if known is not None and known.native:  # SD inpainting U-Net: + mask + masked image
            x = torch.cat([x, known.unet_extras(x.shape[0])], dim=1)  # (B(K+1), 9, h, w)
        out = unet(x.to(dtype), t, **context).sample.float()
        uncond, conds = out[:b], out[b:].view(k1 - 1, b, *out.shape[1:])  # (B, ...), (K, B, ...)
        guided = uncond + scale * torch.einsum("k,kb...->b...", weights, conds - uncond)
        stepped = scheduler.step(guided, t, latents)
        latents = stepped.prev_sample
        if watch is not None:
            watch(Step(i, seeds, x.shape[0], getattr(stepped, "pred_original_sample", None)))
        if known is not None and not known.native:
            latents = known.hold(latents, noise, scheduler, timesteps[i + 1 : i + 2])
    images = decode(pipe, latents)
    if known is not None and req.inpaint.paste_back:
        images = paste_back(images, req.inpaint.image.to(images.device), known.soft_pixels)
    return images


@dataclass
class KnownRegion:
    """What inpainting knows of the input image, at pixel and latent scale."""

    latents: torch.Tensor  # (1, 4, h, w): the input image, encoded
    soft: torch.Tensor  # (1, 1, h, w): the feathered mask per latent cell, 1 = repaint
    soft_pixels: torch.Tensor  # (1, 1, H, W): the feathered mask per pixel, for paste-back
    native: bool  # an SD inpainting U-Net (9 input channels) that takes the mask itself
    mask: torch.Tensor | None = None  # (1, 1, h, w): native only, the hard mask
    masked: torch.Tensor | None = None  # (1, 4, h, w): native only, the image with the region blanked

    @classmethod
    def encode(cls, pipe, inp: Inpainting, size: int) -> "KnownRegion":
        if inp.image.shape[-1] != size or inp.mask.shape[-1] != size:
            raise LowbudgetError(f"inpainting image and mask must be {size} x {size} pixels")
        vae, unet, device = pipe.vae, pipe.unet, pipe.unet.device
        if unet.config.in_channels not in (4, 9):
            raise LowbudgetError(f"U-Net with {unet.config.in_channels} input channels: expected 4 or 9 (inpainting)")
        scale = vae.config.scaling_factor
        image = inp.image.to(device, vae.dtype)
        latents = vae.encode(image * 2 - 1).latent_dist.mean * scale  # (1, 4, h, w)
        soft_pixels = feather(inp.mask.float(), inp.feather).to(device)
        h, w = latents.shape[-2:]
        known = cls(latents=latents.float(), soft=to_latent_grid(soft_pixels, (h, w)), soft_pixels=soft_pixels,
                    native=unet.config.in_channels == 9)
        if known.native:
            hard = (inp.mask >= 0.5).to(device, vae.dtype)
            known.mask = to_latent_grid(hard.float(), (h, w)).to(unet.dtype)
            known.masked = (vae.encode((image * (1 - hard)) * 2 - 1).latent_dist.mean * scale).to(unet.dtype)
        return known

    def unet_extras(self, n: int) -> torch.Tensor:
        """The 5 channels an inpainting U-Net takes beside the latents: mask, masked image."""
        return torch.cat([self.mask, self.masked], dim=1).expand(n, -1, -1, -1)  # (n, 5, h, w)

    def hold(self, latents: torch.Tensor, noise: torch.Tensor, scheduler, next_t: torch.Tensor) -> torch.Tensor:
        """Outside the mask, put the input back on its noisy trajectory at the next timestep
        (the clean input after the last step), so that only the masked region is generated."""
        target = self.latents if len(next_t) == 0 else scheduler.add_noise(self.latents, noise, next_t)
        return self.soft * latents + (1 - self.soft) * target


def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """(B, 4, h, w) latents -> (B, 3, H, W) images in [0, 1]."""
    vae = pipe.vae
    images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample.float()
    return ((images + 1) / 2).clamp(0, 1)  # (B, 3, H, W)
