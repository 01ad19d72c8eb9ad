"""Single-file Stable Diffusion checkpoints (``.safetensors``), loaded offline.

diffusers' ``from_single_file`` normally downloads the component configs of the model it
recognises; here the family is read from the checkpoint's tensors (text width 768 = SD 1.x,
1024 = SD 2.x, two encoders under ``conditioner.embedders`` = SDXL) and the configs come from
:mod:`lowbudget.models.architectures`, written into a local folder the loader is pointed at.
An inpainting checkpoint (9 U-Net input channels) gets a config folder of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import safe_open

from lowbudget.errors import ModelError, quote
from lowbudget.models.architectures import Shape, get_shape
from lowbudget.models.base import BaseModel
from lowbudget.models.embedded import cache_dir
from lowbudget.models.tokenizer import clip_tokenizer

# Where the text width of each family lives in an original (LDM) checkpoint.
_SD1_TOKEN_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
_SD2_TOKEN_KEY = "cond_stage_model.model.token_embedding.weight"
_UNET_PREFIX = "model.diffusion_model."
_XL_FIRST = "conditioner.embedders.0.transformer."  # SDXL base: CLIP ViT-L, then OpenCLIP bigG
_XL_SECOND = "conditioner.embedders.1.model."
_XL_REFINER = "conditioner.embedders.0.model."  # the refiner has OpenCLIP bigG only
_UNET_INPUT_KEY = _UNET_PREFIX + "input_blocks.0.0.weight"  # (320, 4 or 9, 3, 3): 9 = inpainting


def detect_family(path: Path) -> str:
    """'sd15', 'sd21' or 'sdxl' from the tensor names, without loading the weights."""
    keys = _keys(path)
    if not any(k.startswith(_UNET_PREFIX) for k in keys):
        raise ModelError(
            f"'{path}' is not a Stable Diffusion checkpoint (no {_UNET_PREFIX}* tensors); "
            "expected a single-file SD 1.x, 2.x or XL .safetensors"
        )
    if _SD1_TOKEN_KEY in keys:
        return "sd15"
    if _SD2_TOKEN_KEY in keys:
        return "sd21"
    if any(k.startswith(_XL_FIRST) for k in keys) and any(k.startswith(_XL_SECOND) for k in keys):
        return "sdxl"
    if any(k.startswith(_XL_REFINER) for k in keys):
        raise ModelError(f"'{path}' is an SDXL refiner (one text encoder); adapters train on the SDXL base model")
    raise ModelError(
        f"'{path}' holds a U-Net but no SD 1.x, SD 2.x or SDXL text encoder; expected a single-file SD 1.x, 2.x or XL .safetensors"
    )


def unet_in_channels(path: Path) -> int:
    """4, or 9 for an inpainting checkpoint (mask and masked image beside the latents)."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return int(fh.get_slice(_UNET_INPUT_KEY).get_shape()[1]) if _UNET_INPUT_KEY in fh.keys() else 4
    except Exception as exc:
        raise ModelError(f"cannot read '{path}' as safetensors: {quote(exc)}") from exc


def _keys(path: Path) -> set[str]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return set(fh.keys())
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"cannot read '{path}' as safetensors: {quote(exc)}") from exc


def config_folder(shape_name: str, root: Path, in_channels: int = 4) -> Path:
    """Write the diffusers config folder (no weights) that ``from_single_file`` reads."""
    shape = get_shape(shape_name)
    folder = root / (shape_name if in_channels == 4 else f"{shape_name}-in{in_channels}")
    if (folder / "model_index.json").is_file():
        return folder
    files = _config_files(shape, in_channels)
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2))
    clip_tokenizer(pad_token=shape.pad_token).save_pretrained(str(folder / "tokenizer"))
    if shape.is_xl:
        clip_tokenizer(pad_token="!").save_pretrained(str(folder / "tokenizer_2"))
    return folder


def _config_files(shape: Shape, in_channels: int) -> dict[str, dict]:
    def clip(config: dict, cls: str) -> dict:
        return {"architectures": [cls], "model_type": "clip_text_model", "vocab_size": 49408,
                "max_position_embeddings": 77, **config}

    index = {
        "_class_name": "StableDiffusionXLPipeline" if shape.is_xl else "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    files = {
        "unet/config.json": {"_class_name": "UNet2DConditionModel", **shape.unet, "in_channels": in_channels},
        "vae/config.json": {"_class_name": "AutoencoderKL", **shape.vae},
        "text_encoder/config.json": clip(shape.text_encoder, "CLIPTextModel"),
        "scheduler/scheduler_config.json": {"_class_name": "DDIMScheduler", **shape.scheduler,
                                            "prediction_type": shape.prediction_type},
    }
    if shape.is_xl:
        index |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"], "force_zeros_for_empty_prompt": True}
        files["text_encoder_2/config.json"] = clip(shape.text_encoder_2, "CLIPTextModelWithProjection")
    else:
        index |= {"safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    return {"model_index.json": index, **files}


def load_single_file(path: Path) -> BaseModel:
    shape_name = detect_family(path)
    config = config_folder(shape_name, cache_dir() / "configs", unet_in_channels(path))
    xl = get_shape(shape_name).is_xl
    try:
        if xl:
            pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
        else:
            pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config), local_files_only=True,
                                                            safety_checker=None, requires_safety_checker=False)
    except Exception as exc:
        raise ModelError(f"cannot load single-file checkpoint '{path}': {quote(exc)}") from exc
    extra = {"tokenizer_2": pipe.tokenizer_2, "text_encoder_2": pipe.text_encoder_2} if xl else {}
    return BaseModel.from_parts(path.stem, str(path), tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                vae=pipe.vae, unet=pipe.unet, scheduler_config=dict(pipe.scheduler.config), **extra)
