"""How big is a LoRA on SDXL's U-Net? Parameters and file sizes counted on the meta device.

The SD 1.5 / 2.1 U-Nets (lowbudget.models.architectures) and SDXL base 1.0's are built with no
memory behind their tensors, the cross-kv preset is injected with peft as training does (on
SDXL: the K/V projections of the 640-wide level only; "every block" adds the 1280-wide ones),
and the LoRA tensors are counted per rank and per U-Net width, in fp32 and fp16 (a safetensors
file is these bytes plus a header of a few kB).

A second table counts the text encoders (SDXL: CLIP ViT-L and OpenCLIP bigG) on the meta
device and the size of a textual-inversion file on each: a token holds one vector per text
encoder per vector count (SDXL's clip_l + clip_g parts).

    python benchmarks/sdxl_sizes.py          # a few seconds, no weights needed
"""

from __future__ import annotations

from collections import Counter

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig

from lowbudget.adapters.lora import PRESET_TARGETS, unet_targets
from lowbudget.models.architectures import SD15, SD21, SDXL, SDXL_UNET, Shape, build_components
from lowbudget.recipe import LoraConfig as RecipeLora

UNETS = {"SD 1.5": SD15.unet, "SD 2.1": SD21.unet, "SDXL": SDXL_UNET}


def lora_counts(unet_config: dict, rank: int, every_block: bool = False) -> tuple[int, int, Counter]:
    """(U-Net parameters, adapted cross-attention blocks, cross-kv LoRA parameters per output
    width) at ``rank``: the preset as training injects it, or on ``every_block``."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
    total = sum(p.numel() for p in unet.parameters())
    targets = PRESET_TARGETS["cross-kv"] if every_block else unet_targets(RecipeLora(rank=rank), unet)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=True))
    blocks, per_width = 0, Counter()
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_k") and hasattr(module, "base_layer"):
            blocks += 1
        if name.endswith(("attn2.to_k", "attn2.to_v")) and hasattr(module, "base_layer"):  # A: (rank, 2048 on SDXL), B: (width, rank)
            per_width[module.base_layer.out_features] += sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)
    return total, blocks, per_width


def main() -> None:
    print("| base | U-Net parameters | adapted cross-attention blocks | rank | LoRA parameters | fp32 MB | fp16 MB | by U-Net width |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(family, config, False) for family, config in UNETS.items()] + [("SDXL, every block", SDXL_UNET, True)]
    for family, config, every_block in rows:
        for rank in (1, 2, 4):
            total, blocks, per_width = lora_counts(config, rank, every_block)
            lora = sum(per_width.values())
            widths = ", ".join(f"{w}: {n:,}" for w, n in sorted(per_width.items()))
            print(f"| {family} | {total / 1e9:.3f} B | {blocks} | {rank} | {lora:,} | {lora * 4 / 1e6:.2f} | "
                  f"{lora * 2 / 1e6:.2f} | {widths} |", flush=True)


def text_counts(shape: Shape) -> tuple[int, list[int]]:
    """(text-encoder parameters, token-vector width of each encoder), built on the meta device."""
    with torch.device("meta"):
        parts = build_components(shape)
    encoders = [parts[k] for k in ("text_encoder", "text_encoder_2") if k in parts]
    return (sum(p.numel() for e in encoders for p in e.parameters()),
            [int(e.get_input_embeddings().embedding_dim) for e in encoders])


def embedding_table() -> None:
    print("\n| base | text encoders | text-encoder parameters | token widths | vectors | embedding fp32 KB |")
    print("|---|---|---|---|---|---|")
    for family, shape in (("SD 1.5", SD15), ("SD 2.1", SD21), ("SDXL", SDXL)):
        total, widths = text_counts(shape)
        for n in (1, 8, 64):
            print(f"| {family} | {len(widths)} | {total / 1e6:.1f} M | {' + '.join(map(str, widths))} | {n} | "
                  f"{n * sum(widths) * 4 / 1024:.1f} |", flush=True)


if __name__ == "__main__":
    main()
    embedding_table()
