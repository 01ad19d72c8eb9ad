"""The frozen base model adapters attach to, and what identifies it: family, text width(s),
token-table fingerprint. Loading one from a path is :mod:`lowbudget.models.loading`.

An SDXL base has a second tokenizer and text encoder (``tokenizer_2``, ``text_encoder_2``);
everything that reads text goes through :attr:`BaseModel.text_encoders`, which lists one
(tokenizer, encoder) pair on SD 1.x / 2.x and two on SDXL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

from lowbudget.models.text import text_encoders

FAMILIES = {768: "sd1", 1024: "sd2"}
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "custom": "a custom model"}
FAMILY_WIDTHS = {family: str(width) for width, family in FAMILIES.items()} | {"sdxl": "768 + 1280"}


def family_of_width(width: int) -> str:
    return FAMILIES.get(width, "custom")


def describe_width(width: int) -> str:
    """'768 (SD 1.x)' -- the form every width message uses."""
    known = {768: "SD 1.x", 1024: "SD 2.x", 1280: "SDXL's second text encoder", 2048: "SDXL's two encoders"}
    return f"{width} ({known[width]})" if width in known else str(width)


def encoders_fingerprint(text_encoders: list[Any], rows: int) -> str:
    """The fingerprint of a base's vocabulary: of its one token table, or of SDXL's two together."""
    if len(text_encoders) == 1:
        return token_table_fingerprint(text_encoders[0], rows)
    digest = hashlib.sha256(b"".join(token_table_fingerprint(e, rows).encode() for e in text_encoders))
    return digest.hexdigest()


def token_table_fingerprint(text_encoder, rows: int) -> str:
    """sha256 of the first ``rows`` rows of the token-embedding matrix and of their shape.

    Two checkpoints with the same fingerprint share a vocabulary space, so an embedding
    trained on one means the same on the other. Rows added for learned tokens are excluded.
    """
    table = text_encoder.get_input_embeddings().weight.detach()[:rows]
    digest = hashlib.sha256(str(tuple(table.shape)).encode())
    digest.update(table.float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def vae_scale_factor(vae: Any) -> int:
    """Pixels per latent cell: the VAE halves the size once per block after the first."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def native_size(unet: Any, vae: Any) -> int:
    """The image size (pixels) the base was trained at: its U-Net's latent size times the VAE's factor."""
    return int(unet.config.sample_size) * vae_scale_factor(vae)


@dataclass
class BaseModel:
    """The frozen parts of Stable Diffusion that adapters attach to."""

    name: str
    source: str
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler_config: dict[str, Any]
    prediction_type: str
    extras: dict[str, Any] = field(default_factory=dict)
    tokenizer_2: Any = None  # SDXL only
    text_encoder_2: Any = None  # SDXL only: CLIPTextModelWithProjection, whose pooled output conditions too

    @classmethod
    def from_parts(cls, name: str, source: str, *, tokenizer: Any, text_encoder: Any, vae: Any, unet: Any,
                   scheduler_config: dict[str, Any], tokenizer_2: Any = None, text_encoder_2: Any = None,
                   force_zeros_for_empty_prompt: bool = True) -> "BaseModel":
        """The one way a loaded base is assembled, from a folder or a single file alike."""
        return cls(name=name, source=source, tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet,
                   scheduler_config=scheduler_config,
                   prediction_type=scheduler_config.get("prediction_type", "epsilon"),
                   extras={"vocab_size": text_encoder.get_input_embeddings().num_embeddings,
                           "force_zeros_for_empty_prompt": force_zeros_for_empty_prompt},
                   tokenizer_2=tokenizer_2, text_encoder_2=text_encoder_2)

    @property
    def is_xl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def text_encoders(self) -> list[tuple[Any, Any]]:
        """(tokenizer, text encoder) pairs: one on SD 1.x / 2.x, two on SDXL."""
        return text_encoders(self)

    def text_encoders_train(self, mode: bool) -> None:
        """Train or eval mode for every text encoder."""
        for _, encoder in self.text_encoders:
            encoder.train(mode)

    @property
    def text_width(self) -> int:
        """The width of the first text encoder's token vectors (768 on SD 1.x and SDXL)."""
        return int(self.text_encoder.config.hidden_size)

    @property
    def text_widths(self) -> tuple[int, ...]:
        return tuple(int(encoder.config.hidden_size) for _, encoder in self.text_encoders)

    @property
    def family(self) -> str:
        return "sdxl" if self.is_xl else family_of_width(self.text_width)

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    @property
    def vocab_size(self) -> int:
        """Rows of the base token table, before any adapter token is added."""
        return int(self.extras.get("vocab_size", self.text_encoder.get_input_embeddings().num_embeddings))

    @cached_property
    def fingerprint(self) -> str:
        """See :func:`token_table_fingerprint`; computed on the untouched vocabulary."""
        return encoders_fingerprint([e for _, e in self.text_encoders], self.vocab_size)

    def noise_scheduler(self):
        """The DDPM schedule the base was trained with, for the training loss."""
        config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        config["prediction_type"] = self.prediction_type
        return DDPMScheduler.from_config(config)

    def pipeline(self, scheduler: Any = None):
        """A plain diffusers ``StableDiffusion[XL]Pipeline`` sharing this base's modules."""
        if scheduler is None:
            config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
            config["prediction_type"] = self.prediction_type
            scheduler = DDIMScheduler.from_config(config)
        if self.is_xl:
            return StableDiffusionXLPipeline(
                vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet, scheduler=scheduler,
                force_zeros_for_empty_prompt=bool(self.extras.get("force_zeros_for_empty_prompt", True)),
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
