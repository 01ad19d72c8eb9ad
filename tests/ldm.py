"""Test helper: write a diffusers folder as an original (LDM) single-file checkpoint.

Real single-file Stable Diffusion checkpoints use the original CompVis key names. To test
loading them without shipping one, this maps a (tiny) diffusers model back to those names:
the inverse of what diffusers' single-file loader does on load.
"""

from __future__ import annotations

import torch

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}" if tail else table.get(head, head)


def unet_to_ldm(sd: dict[str, torch.Tensor], layers_per_block: int, n_levels: int) -> dict[str, torch.Tensor]:
    out, per = {}, layers_per_block + 1
    fixed = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}  # SDXL
    for key, value in sd.items():
        parts = key.split(".")
        prefix = next((p for p in fixed if key.startswith(p + ".")), None)
        if prefix:
            new = fixed[prefix] + key[len(prefix):]
        elif parts[0] == "down_blocks":
            level, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{1 + level * per + j}.0.{_rename_resnet(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"input_blocks.{1 + level * per + j}.1.{rest}"
            else:  # downsamplers.0.conv
                new = f"input_blocks.{1 + level * per + layers_per_block}.0.op.{rest.split('.', 1)[1]}"
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            new = f"middle_block.{2 * j if kind == 'resnets' else 1}." + (_rename_resnet(rest, _RESNET) if kind == "resnets" else rest)
        elif parts[0] == "up_blocks":
            level, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            k = level * per + j
            if kind == "resnets":
                new = f"output_blocks.{k}.0.{_rename_resnet(rest, _RESNET)}"
            elif kind == "attentions":
                new = f"output_blocks.{k}.1.{rest}"
            else:  # upsamplers.0.conv: after the attention when the block has one
                has_attn = any(x.startswith(f"up_blocks.{level}.attentions.") for x in sd)
                new = f"output_blocks.{level * per + layers_per_block}.{2 if has_attn else 1}.conv.{rest.split('.', 1)[1]}"
        else:
            raise KeyError(key)
        out[f"model.diffusion_model.{new}"] = value
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor], n_levels: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        new = key
        if parts[1] == "down_blocks":
            i, kind, rest = parts[2], parts[3], parts[4:]
            new = (f"encoder.down.{i}.block.{rest[0]}." + _rename_resnet(".".join(rest[1:]), {"conv_shortcut": "nin_shortcut"})
                   if kind == "resnets" else f"encoder.down.{i}.downsample.{'.'.join(rest[1:])}")
        elif parts[1] == "up_blocks":
            i, kind, rest = n_levels - 1 - int(parts[2]), parts[3], parts[4:]
            new = (f"decoder.up.{i}.block.{rest[0]}." + _rename_resnet(".".join(rest[1:]), {"conv_shortcut": "nin_shortcut"})
                   if kind == "resnets" else f"decoder.up.{i}.upsample.{'.'.join(rest[1:])}")
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}.{'.'.join(parts[4:])}"
            else:
                rest = ".".join(parts[4:])
                layer = next(k for k in _VAE_ATTN if rest.startswith(k + "."))
                new = f"{parts[0]}.mid.attn_1.{_VAE_ATTN[layer]}{rest[len(layer):]}"
                if value.ndim == 2:  # LDM keeps the attention projections as 1x1 convolutions
                    value = value[:, :, None, None]
        elif parts[1] in ("conv_norm_out",):
            new = f"{parts[0]}.norm_out.{'.'.join(parts[2:])}"
        out[f"first_stage_model.{new}"] = value
    return out


def write_ldm_checkpoint(folder, path, *, layers_per_block: int, unet_levels: int, vae_levels: int) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    vae = AutoencoderKL.from_pretrained(folder / "vae").state_dict()
    te = CLIPTextModel.from_pretrained(folder / "text_encoder").state_dict()
    ckpt = unet_to_ldm(unet, layers_per_block, unet_levels) | vae_to_ldm(vae, vae_levels)
    for key, value in te.items():  # SD 1.x: the HF CLIP text model under one prefix
        key = key if key.startswith("text_model.") else f"text_model.{key}"
        ckpt[f"cond_stage_model.transformer.{key}"] = value
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))


_OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
              "self_attn.out_proj": "attn.out_proj"}


def open_clip_to_ldm(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """SDXL's second text encoder (CLIPTextModelWithProjection) in OpenCLIP's names: q, k and v
    as one in_proj, the projection transposed."""
    out, qkv = {}, {}
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    for key, value in sd.items():
        key = key.removeprefix("text_model.")
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif key in fixed:
            out[prefix + fixed[key]] = value
        elif key.startswith("encoder.layers."):
            _, _, i, rest = key.split(".", 3)
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((i, rest.split(".")[-1]), {})[rest.split(".")[1]] = value
                continue
            for new, old in _OPEN_CLIP.items():
                rest = rest.replace(new, old)
            out[f"{prefix}transformer.resblocks.{i}.{rest}"] = value
    for (i, kind), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def write_ldm_xl_checkpoint(folder, path, *, layers_per_block: int, unet_levels: int, vae_levels: int) -> None:
    """An SDXL diffusers folder as an original single file: both encoders under conditioner.embedders."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    vae = AutoencoderKL.from_pretrained(folder / "vae").state_dict()
    ckpt = unet_to_ldm(unet, layers_per_block, unet_levels) | vae_to_ldm(vae, vae_levels)
    for key, value in CLIPTextModel.from_pretrained(folder / "text_encoder").state_dict().items():
        key = key if key.startswith("text_model.") else f"text_model.{key}"
        ckpt[f"conditioner.embedders.0.transformer.{key}"] = value
    te2 = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2").state_dict()
    ckpt |= open_clip_to_ldm(te2, "conditioner.embedders.1.model.")
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))
