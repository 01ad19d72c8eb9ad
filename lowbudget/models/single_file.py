"""Single-file Stable Diffusion checkpoints (``.safetensors``), loaded offline.

diffusers' ``from_single_file`` normally downloads the component configs of the model it
recognises; here the family is read from the checkpoint's tensors (text width 768 = SD 1.x,
1024 = SD 2.x) and the configs come from :mod:`lowbudget.models.architectures`, written into a
local folder the loader is pointed at.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from lowbudget.errors import ModelError, quote
from lowbudget.models.architectures import get_shape
from lowbudget.models.base import BaseModel
from lowbudget.models.embedded import cache_dir
from lowbudget.models.tokenizer import clip_tokenizer

# Where the text width of each family lives in an original (LDM) checkpoint.
_SD1_TOKEN_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
_SD2_TOKEN_KEY = "cond_stage_model.model.token_embedding.weight"
_UNET_PREFIX = "model.diffusion_model."
_SDXL_PREFIX = "conditioner.embedders."  # SDXL's two text encoders (the refiner's one) live here
_UNET_INPUT_KEY = _UNET_PREFIX + "input_blocks.0.0.weight"  # (320, 4 or 9, 3, 3): 9 = inpainting


def detect_family(path: Path) -> str:
    """'sd15' or 'sd21' from the tensor names and shapes, without loading the weights."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
            if not any(k.startswith(_UNET_PREFIX) for k in keys):
                raise ModelError(
                    f"'{path}' is not a Stable Diffusion checkpoint (no {_UNET_PREFIX}* tensors); "
                    "expected a single-file SD 1.x or 2.x .safetensors"
                )
            if _SD1_TOKEN_KEY in keys:
                return "sd15"
            if _SD2_TOKEN_KEY in keys:
                return "sd21"
            if any(k.startswith(_SDXL_PREFIX) for k in keys):
                inpainting = _UNET_INPUT_KEY in keys and fh.get_slice(_UNET_INPUT_KEY).get_shape()[1] == 9
                kind = "an SDXL inpainting" if inpainting else "an SDXL"
                raise ModelError(f"'{path}' is {kind} single-file checkpoint; lowbudget loads SDXL from a diffusers "
                                 "folder (model_index.json, text_encoder_2/ ...) so far: give that folder as --base")
    except ModelError:
        raise
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelError(f"cannot read '{path}' as safetensors: {quote(exc)}") from exc
    raise ModelError(
        f"'{path}' holds a U-Net but no SD 1.x, SD 2.x or SDXL text encoder; expected a single-file SD 1.x or 2.x .safetensors"
    )


def config_folder(shape_name: str, root: Path) -> Path:
    """Write the diffusers config folder (no weights) that ``from_single_file`` reads."""

    shape = get_shape(shape_name)
    folder = root / shape_name
    if (folder / "model_index.json").is_file():
        return folder
    te = {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
          "max_position_embeddings": 77, **shape.text_encoder}
    sched = {"_class_name": "DDIMScheduler", **shape.scheduler, "prediction_type": shape.prediction_type}
    files = {
        "model_index.json": {
            "_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        },
        "unet/config.json": {"_class_name": "UNet2DConditionModel", **shape.unet},
        "vae/config.json": {"_class_name": "AutoencoderKL", **shape.vae},
        "text_encoder/config.json": te,
        "scheduler/scheduler_config.json": sched,
    }
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2))
    clip_tokenizer(pad_token=shape.pad_token).save_pretrained(str(folder / "tokenizer"))
    return folder


def load_single_file(path: Path) -> BaseModel:

    shape_name = detect_family(path)
    config = config_folder(shape_name, cache_dir() / "configs")
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=True, safety_checker=None,
            requires_safety_checker=False,
        )
    except Exception as exc:
        raise ModelError(f"cannot load single-file checkpoint '{path}': {quote(exc)}") from exc
    return BaseModel.from_parts(path.stem, str(path), tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                vae=pipe.vae, unet=pipe.unet, scheduler_config=dict(pipe.scheduler.config))
