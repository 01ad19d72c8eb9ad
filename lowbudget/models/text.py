"""What the U-Net reads of a text, on SD 1.x / 2.x and on SDXL: one function for training and sampling.

- SD 1.x / 2.x: the text encoder's last hidden states, (N, 77, D).
- SDXL, as diffusers' ``StableDiffusionXLPipeline`` conditions it: each encoder tokenizes the
  text itself (the second pads with "!"), the two *penultimate* hidden states are concatenated,
  (N, 77, 768 + 1280), and the second encoder's projected pooled output (N, 1280) goes to the
  U-Net beside six "time ids" per image -- original size, crop top-left, target size -- through
  ``added_cond_kwargs``. Images here are never cropped, so the ids are (S, S, 0, 0, S, S).

Because the pooled embedding belongs to each text, a composed prompt ("a :0.3 AND b :0.7")
mixes it per sub-prompt along with the states: every row carries its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Conditioning:
    """The conditioning of N texts: rows can be selected, repeated and joined together."""

    states: torch.Tensor  # (N, 77, D)
    pooled: torch.Tensor | None = None  # (N, P): SDXL's second encoder, projected
    time_ids: torch.Tensor | None = None  # (N, 6): SDXL's size and crop numbers

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def _map(self, fn) -> "Conditioning":
        return Conditioning(fn(self.states), *(None if t is None else fn(t) for t in (self.pooled, self.time_ids)))

    def rows(self, index: Any) -> "Conditioning":
        return self._map(lambda t: t[index])

    def repeat_interleave(self, n: int) -> "Conditioning":
        return self._map(lambda t: t.repeat_interleave(n, dim=0))

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        return self._map(lambda t: t.to(device, dtype))

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        def joined(name: str) -> torch.Tensor | None:
            tensors = [getattr(p, name) for p in parts]
            return None if tensors[0] is None else torch.cat(tensors)
        return Conditioning(joined("states"), joined("pooled"), joined("time_ids"))

    def unet_kwargs(self) -> dict[str, Any]:
        """The U-Net's keyword arguments beside the noisy latents and the timestep."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.states}
        if self.pooled is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self.pooled, "time_ids": self.time_ids}
        return kwargs


def text_encoders(model: Any) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs of a base or a diffusers pipeline: one, or SDXL's two."""
    pairs = [(model.tokenizer, model.text_encoder)]
    if getattr(model, "text_encoder_2", None) is not None:
        pairs.append((model.tokenizer_2, model.text_encoder_2))
    return pairs


def tokenize(tokenizer: Any, texts: list[str]) -> torch.Tensor:  # -> (N, 77)
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def encode(encoders: list[tuple[Any, Any]], texts: list[str], *, size: int) -> Conditioning:
    """The conditioning of ``texts`` through (tokenizer, text encoder) pairs: one pair on
    SD 1.x / 2.x, two on SDXL. ``size`` (pixels) is the image size the SDXL time ids state.

    Gradients flow when the encoders train; the caller decides (``torch.no_grad`` to sample).
    """
    if len(encoders) == 1:
        tokenizer, encoder = encoders[0]
        return Conditioning(encoder(tokenize(tokenizer, texts).to(_device(encoder)))[0])  # (N, 77, D)
    states, pooled = [], None
    for tokenizer, encoder in encoders:
        out = encoder(tokenize(tokenizer, texts).to(_device(encoder)), output_hidden_states=True)
        states.append(out.hidden_states[-2])  # (N, 77, D_i): SDXL reads the penultimate layer
        pooled = out[0]  # the last encoder's: CLIPTextModelWithProjection's text_embeds, (N, P)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * len(texts), dtype=pooled.dtype, device=pooled.device)
    return Conditioning(torch.cat(states, dim=-1), pooled, time_ids)  # (N, 77, sum D_i), (N, P), (N, 6)


def zeros_like(cond: Conditioning) -> Conditioning:
    """SDXL's unconditional branch for an empty negative prompt (``force_zeros_for_empty_prompt``):
    states and pooled embedding all zero, the time ids kept."""
    return Conditioning(torch.zeros_like(cond.states), torch.zeros_like(cond.pooled), cond.time_ids)


def _device(module: Any) -> torch.device:
    return next(module.parameters()).device
