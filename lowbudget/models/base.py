"""The frozen base model adapters attach to, and what identifies it: family, text width,
token-table fingerprint. Loading one from a path is :mod:`lowbudget.models.loading`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline

FAMILIES = {768: "sd1", 1024: "sd2"}
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "custom": "a custom model"}


def family_of_width(width: int) -> str:
    return FAMILIES.get(width, "custom")


def sdxl_not_supported(source: str, inpainting: bool) -> str:
    """The message for an SDXL base: named by family, so the user knows what was recognised."""
    kind = "an SDXL inpainting" if inpainting else "an SDXL"
    return (f"base model '{source}' is {kind} model (two text encoders, 768 + 1280 wide); lowbudget trains and "
            "samples on SD 1.x and SD 2.x bases only so far: use one of those as --base")


def describe_width(width: int) -> str:
    """'768 (SD 1.x)' -- the form every width message uses."""
    known = {768: "SD 1.x", 1024: "SD 2.x", 1280: "SDXL's second text encoder"}
    return f"{width} ({known[width]})" if width in known else str(width)


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

    @classmethod
    def from_parts(cls, name: str, source: str, *, tokenizer: Any, text_encoder: Any, vae: Any, unet: Any,
                   scheduler_config: dict[str, Any]) -> "BaseModel":
        """The one way a loaded base is assembled, from a folder or a single file alike."""
        return cls(name=name, source=source, tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, unet=unet,
                   scheduler_config=scheduler_config,
                   prediction_type=scheduler_config.get("prediction_type", "epsilon"),
                   extras={"vocab_size": text_encoder.get_input_embeddings().num_embeddings})

    @property
    def text_width(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def family(self) -> str:
        return family_of_width(self.text_width)

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
        return token_table_fingerprint(self.text_encoder, self.vocab_size)

    def noise_scheduler(self):
        """The DDPM schedule the base was trained with, for the training loss."""
        config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        config["prediction_type"] = self.prediction_type
        return DDPMScheduler.from_config(config)

    def pipeline(self, scheduler: Any = None):
        """A plain diffusers ``StableDiffusionPipeline`` sharing this base's modules."""
        if scheduler is None:
            config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
            config["prediction_type"] = self.prediction_type
            scheduler = DDIMScheduler.from_config(config)
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
