"""LoRA on the U-Net (and optionally the text encoder(s): both on SDXL), injected with peft.

Presets name *where* the low-rank updates go:

- ``cross-kv``  U-Net cross-attention key/value projections (``attn2.to_k``, ``attn2.to_v``):
  the layers that read the prompt. At rank 4 on SD 1.5 shapes this is 198,144 parameters
  (~0.8 MB in fp32), the smallest file that still changes how text maps to image. On SDXL
  every such layer would be 1,812,480 parameters (7.2 MB: 70 blocks reading 2048-wide text), so
  there the preset adapts the blocks of the highest-resolution level that reads text -- the 10
  blocks at width 640 (64 x 64 latents at 1024 px): 215,040 parameters, 0.86 MB in fp32
  (``benchmarks/sdxl_sizes.py``).
- ``attention`` every U-Net attention projection (q, k, v, out) of self- and cross-attention.
- ``custom``    the recipe's ``target_modules`` suffixes.

peft initialises ``lora_B`` to zero, so an attached adapter is an exact no-op until trained.
"""

from __future__ import annotations

import importlib.metadata as metadata
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft.utils import get_peft_model_state_dict

from lowbudget.errors import AdapterError, quote
from lowbudget.models.base import BaseModel
from lowbudget.recipe import LoraConfig

PRESET_TARGETS = {
    "cross-kv": ["attn2.to_k", "attn2.to_v"],
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
}
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
PEFT_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules", "init_lora_weights", "use_dora", "bias",
             "rank_pattern", "alpha_pattern")  # diffusers 0.38 fails to load a LoRA without rank_pattern


def unet_targets(cfg: LoraConfig, unet: torch.nn.Module) -> list[str]:
    """The module names (or name suffixes) peft adapts in ``unet`` for the recipe's preset."""
    if cfg.preset == "custom":
        return list(cfg.target_modules)
    if cfg.preset == "cross-kv" and unet.config.get("addition_embed_type") == "text_time":  # SDXL
        return _first_cross_attention_level(unet)
    return PRESET_TARGETS[cfg.preset]


def _first_cross_attention_level(unet: torch.nn.Module) -> list[str]:
    """Full names of the cross-attention K/V projections at the highest-resolution U-Net level
    that has any (level 0 = full latent size; the middle block is the deepest)."""
    n = len(unet.config.block_out_channels)

    def level(name: str) -> int:
        kind, _, rest = name.partition(".")
        index = int(rest.split(".")[0]) if kind in ("down_blocks", "up_blocks") else n
        return index if kind == "down_blocks" else n - 1 - index if kind == "up_blocks" else n

    names = [name for name, _ in unet.named_modules() if name.endswith(tuple(PRESET_TARGETS["cross-kv"]))]
    first = min(map(level, names))
    return sorted(name for name in names if level(name) == first)


def attach_lora(base: BaseModel, cfg: LoraConfig) -> list[torch.nn.Parameter]:
    """Add LoRA layers to ``base`` in place; return the new trainable parameters."""
    def peft_config(targets: list[str]) -> PeftLoraConfig:
        return PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              init_lora_weights=True, target_modules=targets)

    try:
        base.unet.add_adapter(peft_config(unet_targets(cfg, base.unet)))
        for _, encoder in base.text_encoders if cfg.text_encoder else []:
            encoder.add_adapter(peft_config(TEXT_ENCODER_TARGETS))
    except ValueError as exc:  # peft: "Target modules ... not found"; transformers: "PEFT ... not compatible"
        raise AdapterError(f"method.lora: {quote(exc)} (installed: {_stack()}; `lowbudget doctor` checks "
                           f"the whole stack)") from None
    params = [p for _, p in lora_parameters(base)]
    for p in params:  # trainable tensors stay fp32 whatever the frozen weights' precision
        p.data = p.data.float()
    return params


def _stack() -> str:
    return ", ".join(f"{name} {metadata.version(name)}" for name in ("peft", "transformers", "diffusers"))


def _modules(base: BaseModel) -> list[tuple[str, torch.nn.Module]]:
    """The adaptable modules by the prefix diffusers' loaders give them: unet, text_encoder(_2)."""
    named = [("unet", base.unet), ("text_encoder", base.text_encoder)]
    return named + [("text_encoder_2", base.text_encoder_2)] if base.is_xl else named


def lora_parameters(base: BaseModel) -> list[tuple[str, torch.nn.Parameter]]:
    return [(f"{prefix}.{n}", p) for prefix, module in _modules(base) for n, p in module.named_parameters() if "lora_" in n]


def lora_state_dict(base: BaseModel) -> dict[str, torch.Tensor]:
    """LoRA tensors keyed as ``pipe.load_lora_weights`` reads them (``unet.`` / ``text_encoder.`` /
    ``text_encoder_2.``)."""
    tensors = {f"{prefix}.{k}": v for prefix, module in _modules(base) if getattr(module, "peft_config", None)
               for k, v in get_peft_model_state_dict(module).items()}
    return {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}


def lora_adapter_metadata(base: BaseModel) -> dict[str, Any]:
    """The peft configs (rank, alpha, targets), in the layout diffusers stores beside LoRA weights."""
    out: dict[str, Any] = {}
    for prefix, module in _modules(base):
        config = getattr(module, "peft_config", {}).get("default")
        if config is None:
            continue
        d = config.to_dict()
        for key in PEFT_KEYS:
            value = d.get(key)
            out[f"{prefix}.{key}"] = sorted(value) if isinstance(value, (set, list)) else value
    return out


def set_lora_trainable(params: list[torch.nn.Parameter], trainable: bool) -> None:
    for p in params:
        p.requires_grad_(trainable)
