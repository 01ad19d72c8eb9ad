"""A base model packed into one fp16 safetensors file, and unpacked into a diffusers folder.

The embedded default base ships in this form (``assets/phantom-base-v1.safetensors``):
half the bytes of fp32, one file instead of a folder. :func:`pack_base` writes it (at the end
of ``lowbudget phantom pretrain-base``), :func:`unpack_base` expands it into the diffusers
folder every command loads through the ordinary code path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lowbudget.errors import ModelError, quote
from lowbudget.io import atomic_write
from lowbudget.models.architectures import build_components, get_shape, save_components

PACKED_FORMAT = "lowbudget-phantom-base"
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")  # the last on SDXL-shaped bases only


def pack_base(parts: dict[str, Any], path: Path, *, shape: str, config: dict) -> Path:
    """Write the models' floating-point weights as fp16, with what unpacking needs in the header."""
    tensors = {f"{name}.{k}": v.detach().to(torch.float16).contiguous()
               for name in PARTS if name in parts for k, v in parts[name].state_dict().items() if v.is_floating_point()}
    meta = {"format": PACKED_FORMAT, "shape": shape, "vae_scaling_factor": repr(parts["vae"].config.scaling_factor),
            "config": json.dumps(config)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def unpack_base(packed: Path, folder: Path) -> Path:
    """Expand a packed fp16 base into an fp32 diffusers folder (what the embedded default does)."""
    with safe_open(str(packed), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k).float() for k in fh.keys()}
    if meta.get("format") != PACKED_FORMAT:
        raise ModelError(f"{quote(packed)} is not a packed lowbudget base (header format {meta.get('format')!r})")
    parts = build_components(get_shape(meta["shape"]))
    parts["vae"].register_to_config(scaling_factor=float(meta["vae_scaling_factor"]))
    for name in (n for n in PARTS if n in parts):
        prefix = f"{name}."
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing, unexpected = parts[name].load_state_dict(own, strict=False)
        missing = [k for k in missing if parts[name].state_dict()[k].is_floating_point()]
        if missing or unexpected:
            raise ModelError(f"{quote(packed)}: {name} weights do not match the '{meta['shape']}' shape "
                             f"({missing[:3]}, {unexpected[:3]})")
    # a pretrained phantom drops captions to the empty text, not to zeros: its negative is ""
    return save_components(parts, folder, force_zeros_for_empty_prompt=False)
