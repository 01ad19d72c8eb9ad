"""Load a base Stable Diffusion model from a local path, and only from a local path.

Accepted: a diffusers folder (``model_index.json`` with ``unet/ vae/ text_encoder/ tokenizer/
scheduler/``, and ``text_encoder_2/ tokenizer_2/`` for SDXL) or a single-file SD 1.x / 2.x / XL
checkpoint (``.safetensors``). Nothing is ever fetched from a hub: every ``from_pretrained``
call is ``local_files_only``, and single-file checkpoints get their component configs from
:mod:`lowbudget.models.architectures`. Leaving the path empty selects the embedded base model.
Inpainting variants (a 9-channel U-Net) load the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from lowbudget.errors import ModelError, quote
from lowbudget.models.base import FAMILY_NAMES, FAMILY_WIDTHS, BaseModel
from lowbudget.models.embedded import EMBEDDED, embedded_base_path, is_embedded
from lowbudget.models.single_file import load_single_file

_FOLDER_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_XL_PARTS = ("text_encoder_2", "tokenizer_2")


def load_base(
    path: str | os.PathLike | None = None,
    *,
    prediction_type: str = "auto",
    expected_family: str = "any",
) -> BaseModel:
    """Load a base model from ``path`` (``None``, ``""`` or ``"embedded"``: the embedded base;
    ``"embedded-xl"``: its SDXL-architecture twin)."""
    if is_embedded(path):
        path = embedded_base_path(str(path or EMBEDDED))
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"base model '{path}' does not exist; expected a diffusers folder (with model_index.json) "
            "or a single-file SD checkpoint (.safetensors)"
        )
    if path.is_dir():
        base = _load_folder(path)
    elif path.suffix == ".safetensors":
        base = load_single_file(path)
    elif path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        raise ModelError(
            f"base model '{path}' is a pickled checkpoint, which lowbudget does not load (it can run code); "
            "convert it to .safetensors or a diffusers folder first"
        )
    else:
        raise ModelError(
            f"base model '{path}' is neither a diffusers folder nor a .safetensors checkpoint"
        )
    if prediction_type != "auto":
        base.prediction_type = prediction_type
    _check_family(base, expected_family)
    return base


def _check_family(base: BaseModel, expected: str) -> None:
    if expected in ("any", base.family):
        return
    have = " + ".join(map(str, base.text_widths))
    raise ModelError(
        f"the recipe expects an {FAMILY_NAMES[expected]} base (text width {FAMILY_WIDTHS[expected]}) but "
        f"'{base.source}' is {FAMILY_NAMES[base.family]} (text width {have}); use a recipe for that family "
        "or another --base"
    )


def _load_folder(path: Path) -> BaseModel:
    if not (path / "model_index.json").is_file():
        raise ModelError(
            f"base model folder '{path}' has no model_index.json; expected a diffusers Stable Diffusion folder"
        )
    index = _read_json(path / "model_index.json")
    xl = (path / "text_encoder_2").is_dir() or str(index.get("_class_name", "")).startswith("StableDiffusionXL")
    if xl and not (path / "text_encoder").is_dir():
        raise ModelError(f"base model folder '{path}' is an SDXL refiner (one text encoder, text_encoder_2 only); "
                         "adapters train on the SDXL base model, which has both")
    missing = [part for part in _FOLDER_PARTS + (_XL_PARTS if xl else ()) if not (path / part).is_dir()]
    if missing:
        raise ModelError(f"base model folder '{path}' lacks the subfolder(s) {', '.join(missing)}")
    loaders = {"tokenizer": CLIPTokenizer, "text_encoder": CLIPTextModel, "vae": AutoencoderKL,
               "unet": UNet2DConditionModel}
    if xl:  # the second encoder's projected pooled output conditions the U-Net too
        loaders |= {"tokenizer_2": CLIPTokenizer, "text_encoder_2": CLIPTextModelWithProjection}
    parts = {part: _load_part(path, part, cls) for part, cls in loaders.items()}
    return BaseModel.from_parts(path.name, str(path), **parts, scheduler_config=_read_scheduler_config(path / "scheduler"),
                                force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)))


def _load_part(path: Path, part: str, cls: Any) -> Any:
    try:
        return cls.from_pretrained(path / part, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        # transformers reports weights that disagree with config.json in a log, then raises this
        reason = ("its weights do not match its config.json (tensor shapes differ)"
                  if "mismatched_sizes" in str(exc) or "size mismatch" in str(exc) else quote(exc))
        raise ModelError(f"cannot load '{path / part}' of base model '{path}': {reason}") from exc


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        raise ModelError(f"base model scheduler folder '{folder}' has no scheduler_config.json")
    return _read_json(config_file)


def _read_json(config_file: Path) -> dict[str, Any]:
    try:
        config = json.loads(config_file.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"'{config_file}' is not a JSON file ({quote(exc)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"'{config_file}' holds {type(config).__name__}; expected a JSON object")
    return config
