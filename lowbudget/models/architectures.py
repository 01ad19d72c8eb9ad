"""Model shapes: Stable Diffusion 1.5 / 2.1 / XL and tiny models of the same architectures.

A *shape* is the set of diffusers/transformers configs of the four components. From a shape
we can (a) write a diffusers folder with random weights (the tiny embedded base, test models,
SD-scale benchmark models), and (b) provide the configs that ``from_single_file`` needs to
load a single-file checkpoint without contacting a hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lowbudget.errors import ModelError
from lowbudget.models.tokenizer import MAX_LENGTH, VOCAB_SIZE, clip_tokenizer

_SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


@dataclass(frozen=True)
class Shape:
    """Configs for the components of a Stable Diffusion-style model (SDXL: a second text encoder)."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    prediction_type: str = "epsilon"
    pad_token: str = "<|endoftext|>"  # SD 2.x pads with "!"
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(_SD_SCHEDULER))
    text_encoder_2: dict[str, Any] | None = None  # SDXL: OpenCLIP bigG with its projection; pads with "!"

    @property
    def is_xl(self) -> bool:
        return self.text_encoder_2 is not None


def _sd_vae(sample_size: int) -> dict[str, Any]:
    return {
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 4,
        "layers_per_block": 2,
        "sample_size": sample_size,
        "scaling_factor": 0.18215,
    }


def _clip(hidden: int, intermediate: int, projection: int, *, heads: int = 4, layers: int = 2,
          act: str = "quick_gelu") -> dict[str, Any]:
    """A CLIP text encoder config (the small models' default: 2 layers, 4 heads)."""
    return {"hidden_size": hidden, "intermediate_size": intermediate, "num_attention_heads": heads,
            "num_hidden_layers": layers, "projection_dim": projection, "hidden_act": act}


_SD_UNET_BLOCKS = {
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "layers_per_block": 2,
    "in_channels": 4,
    "out_channels": 4,
}

SD15 = Shape(
    name="sd15",
    unet={**_SD_UNET_BLOCKS, "sample_size": 64, "attention_head_dim": 8, "cross_attention_dim": 768},
    vae=_sd_vae(512),
    text_encoder=_clip(768, 3072, 768, heads=12, layers=12),  # CLIP ViT-L/14
)

SD21 = Shape(
    name="sd21",
    unet={
        **_SD_UNET_BLOCKS,
        "sample_size": 96,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "upcast_attention": True,
    },
    vae=_sd_vae(768),
    text_encoder=_clip(1024, 4096, 512, heads=16, layers=23, act="gelu"),  # OpenCLIP ViT-H, penultimate layer
    prediction_type="v_prediction",
    pad_token="!",
)

# Same architecture, a few million parameters: 2 resolution levels in the U-Net, a VAE that
# downsamples by 2. Small enough for the test suite to train it on 2 CPU cores.
TINY = Shape(
    name="tiny",
    unet={
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "cross_attention_dim": 32,
        "norm_num_groups": 8,
    },
    vae={
        "block_out_channels": [16, 32],
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 32,
    },
    text_encoder=_clip(32, 64, 32),
)

# The embedded phantom base: 64 px images, a VAE that downsamples by 4 (16 x 16 x 4 latents),
# three U-Net levels with cross-attention in the upper two, a 2-layer text encoder of width 64
# over the full CLIP vocabulary. Pretrained on phantoms by ``lowbudget phantom pretrain-base``.
PHANTOM = Shape(
    name="phantom",
    unet={
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [64, 128, 128],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "cross_attention_dim": 64,
        "norm_num_groups": 16,
    },
    vae={
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "sample_size": 64,
    },
    text_encoder=_clip(64, 256, 64),
)

# SDXL base 1.0's U-Net: three levels, 2 and 10 transformer layers per block in the lower two,
# cross-attention over both text encoders' penultimate states (768 + 1280 = 2048), and the pooled
# text embedding plus six size/crop numbers (1280 + 6 x 256 = 2816) added to the time embedding.
SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}

SDXL = Shape(
    name="sdxl",
    unet=SDXL_UNET,
    vae={**_sd_vae(1024), "scaling_factor": 0.13025, "force_upcast": True},
    text_encoder={**SD15.text_encoder},
    text_encoder_2=_clip(1280, 5120, 1280, heads=20, layers=32, act="gelu"),  # OpenCLIP ViT-bigG
)

# SDXL's architecture at test size: two text encoders of different widths (32 and 64, so a
# swapped half cannot pass unnoticed), cross-attention over both (96), the pooled embedding of
# the second (projected to 32) plus six time ids of 8 each (32 + 48 = 80) added to the time embedding.
TINY_XL = Shape(
    name="tiny-xl",
    unet={
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "transformer_layers_per_block": [1, 2],
        "attention_head_dim": [2, 4],
        "cross_attention_dim": 96,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,
        "norm_num_groups": 8,
    },
    vae={**TINY.vae, "scaling_factor": 0.13025},
    text_encoder={**TINY.text_encoder},
    text_encoder_2=_clip(64, 128, 32, act="gelu"),
)

# The phantom base at SDXL's architecture: PHANTOM's VAE and widths, SDXL's U-Net layout (no
# attention at the full latent size, two transformer layers in the deepest level), two text
# encoders of different widths (64 and 96: cross-attention over 160) and the pooled embedding
# of the second (projected to 64) plus six time ids of 16 each (64 + 96 = 160) beside the time.
PHANTOM_XL = Shape(
    name="phantom-xl",
    unet={
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [64, 128, 128],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "transformer_layers_per_block": [1, 1, 2],
        "attention_head_dim": 8,
        "cross_attention_dim": 160,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 16,
        "projection_class_embeddings_input_dim": 160,
        "norm_num_groups": 16,
    },
    vae=dict(PHANTOM.vae),
    text_encoder=dict(PHANTOM.text_encoder),
    text_encoder_2=_clip(96, 384, 64, act="gelu"),
)

SHAPES = {s.name: s for s in (SD15, SD21, SDXL, TINY, PHANTOM, TINY_XL, PHANTOM_XL)}


def get_shape(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ModelError(f"unknown model shape '{name}'; expected one of {sorted(SHAPES)}") from None


def build_components(shape: Shape, *, seed: int = 0, text_width: int | None = None,
                     in_channels: int | None = None) -> dict[str, Any]:
    """Instantiate the components of ``shape`` with random weights (deterministic in ``seed``).

    ``text_width`` gives an SD-style shape another text width (a tiny model with SD 2.x's 1024);
    ``in_channels`` = 9 makes the inpainting variant's U-Net."""
    te_cfg = dict(shape.text_encoder)
    unet_cfg = dict(shape.unet)
    if text_width is not None:
        if shape.is_xl:
            raise ModelError(f"shape '{shape.name}' has two text encoders; text_width applies to one-encoder shapes")
        te_cfg["hidden_size"] = text_width
        unet_cfg["cross_attention_dim"] = text_width
    if in_channels is not None:
        unet_cfg["in_channels"] = in_channels
    torch.manual_seed(seed)
    parts: dict[str, Any] = {"text_encoder": CLIPTextModel(_clip_config(te_cfg))}
    if shape.is_xl:
        parts["text_encoder_2"] = CLIPTextModelWithProjection(_clip_config(shape.text_encoder_2))
        parts["tokenizer_2"] = clip_tokenizer(pad_token="!")
    parts["unet"] = UNet2DConditionModel(**unet_cfg)
    parts["vae"] = AutoencoderKL(**shape.vae)
    parts["scheduler"] = DDIMScheduler(**shape.scheduler, prediction_type=shape.prediction_type)
    parts["tokenizer"] = clip_tokenizer(pad_token=shape.pad_token)
    return parts


def _clip_config(config: dict[str, Any]) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=MAX_LENGTH, **config)


def write_base_folder(path: str | Path, shape: Shape | str = "tiny", *, seed: int = 0, **kwargs: Any) -> Path:
    """Write a diffusers ``StableDiffusion[XL]Pipeline`` folder with random weights."""
    shape = get_shape(shape) if isinstance(shape, str) else shape
    return save_components(build_components(shape, seed=seed, **kwargs), path)


def save_components(parts: dict[str, Any], path: str | Path, *, force_zeros_for_empty_prompt: bool = True) -> Path:
    """Save the components as a diffusers ``StableDiffusionPipeline`` folder (no safety checker),
    or a ``StableDiffusionXLPipeline`` folder when there is a second text encoder (whose empty
    negative prompt is zeros, as SDXL base was trained, unless told otherwise)."""
    if "text_encoder_2" in parts:
        pipe = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_pretrained(str(path))
    return Path(path)
