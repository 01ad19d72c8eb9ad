"""How big is a LoRA on SDXL's U-Net? Parameters and file sizes counted on the meta device.

The SD 1.5 / 2.1 U-Nets (lowbudget.models.architectures) and SDXL base 1.0's are built with no
memory behind their tensors, the cross-kv preset (attn2.to_k, attn2.to_v) is injected with peft
as training does, and the LoRA tensors are counted per rank and per U-Net width, in fp32 and
fp16 (a safetensors file is these bytes plus a header of a few kB).

    python benchmarks/sdxl_sizes.py          # a few seconds, no weights needed
"""

from __future__ import annotations

from collections import Counter

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from lowbudget.adapters.lora import PRESET_TARGETS
from lowbudget.models.architectures import SD15, SD21, SDXL_UNET

UNETS = {"SD 1.5": SD15.unet, "SD 2.1": SD21.unet, "SDXL": SDXL_UNET}


def lora_counts(unet_config: dict, rank: int) -> tuple[int, int, Counter]:
    """(U-Net parameters, cross-attention blocks, cross-kv LoRA parameters per output width) at ``rank``."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    total = sum(p.numel() for p in unet.parameters())
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=PRESET_TARGETS["cross-kv"], init_lora_weights=True))
    blocks, per_width = 0, Counter()
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_k"):
            blocks += 1
        if name.endswith(("attn2.to_k", "attn2.to_v")):  # A: (rank, 2048 on SDXL), B: (width, rank)
            per_width[module.base_layer.out_features] += sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    return total, blocks, per_width


def main() -> None:
    print("| base | U-Net parameters | cross-attention blocks | rank | LoRA parameters | fp32 MB | fp16 MB | by U-Net width |")
    print("|---|---|---|---|---|---|---|---|")
    for family, config in UNETS.items():
        for rank in (1, 2, 4):
            total, blocks, per_width = lora_counts(config, rank)
            lora = sum(per_width.values())
            widths = ", ".join(f"{w}: {n:,}" for w, n in sorted(per_width.items()))
            print(f"| {family} | {total / 1e9:.3f} B | {blocks} | {rank} | {lora:,} | {lora * 4 / 1e6:.2f} | "
                  f"{lora * 2 / 1e6:.2f} | {widths} |", flush=True)


if __name__ == "__main__":
    main()
