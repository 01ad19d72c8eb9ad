"""Load a base Stable Diffusion model from a local path, and only from a local path.

Accepted: a diffusers folder (``model_index.json`` with ``unet/ vae/ text_encoder/ tokenizer/
scheduler/``) or a single-file SD 1.x / 2.x checkpoint (``.safetensors``). Nothing is ever
fetched from a hub: every ``from_pretrained`` call is ``local_files_only``, and single-file
checkpoints get their component configs from :mod:`lowbudget.models.architectures`.
Leaving the path empty selects the embedded base model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from lowbudget.errors import ModelError, quote

_FOLDER_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
FAMILIES = {768: "sd1", 1024: "sd2"}
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "custom": "a custom model"}


def family_of_width(width: int) -> str:
    return FAMILIES.get(width, "custom")


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

    @property
    def text_width(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @property
    def family(self) -> str:
        return family_of_width(self.text_width)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

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
        from diffusers import DDPMScheduler

        config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        config["prediction_type"] = self.prediction_type
        return DDPMScheduler.from_config(config)

    def pipeline(self, scheduler: Any = None):
        """A plain diffusers ``StableDiffusionPipeline`` sharing this base's modules."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

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


def load_base(
    path: str | os.PathLike | None = None,
    *,
    prediction_type: str = "auto",
    expected_family: str = "any",
) -> BaseModel:
    """Load a base model from ``path`` (``None`` or ``""``: the embedded base)."""
    if path is None or str(path) == "":
        from lowbudget.models.embedded import embedded_base_path

        path = embedded_base_path()
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(
            f"base model '{path}' does not exist; expected a diffusers folder (with model_index.json) "
            "or a single-file SD checkpoint (.safetensors)"
        )
    if path.is_dir():
        base = _load_folder(path)
    elif path.suffix == ".safetensors":
        from lowbudget.models.single_file import load_single_file

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
    want = {"sd1": 768, "sd2": 1024}[expected]
    raise ModelError(
        f"the recipe expects an {FAMILY_NAMES[expected]} base (text width {want}) but '{base.source}' "
        f"has text width {describe_width(base.text_width)}; use a recipe for that family or another --base"
    )


def _load_folder(path: Path) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if not (path / "model_index.json").is_file():
        raise ModelError(
            f"base model folder '{path}' has no model_index.json; expected a diffusers Stable Diffusion folder"
        )
    missing = [part for part in _FOLDER_PARTS if not (path / part).is_dir()]
    if missing:
        raise ModelError(f"base model folder '{path}' lacks the subfolder(s) {', '.join(missing)}")
    loaders = {"tokenizer": CLIPTokenizer, "text_encoder": CLIPTextModel, "vae": AutoencoderKL,
               "unet": UNet2DConditionModel}
    parts = {}
    for part, cls in loaders.items():
        try:
            parts[part] = cls.from_pretrained(path / part, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            # transformers reports weights that disagree with config.json in a log, then raises this
            reason = ("its weights do not match its config.json (tensor shapes differ)"
                      if "mismatched_sizes" in str(exc) or "size mismatch" in str(exc) else quote(exc))
            raise ModelError(f"cannot load '{path / part}' of base model '{path}': {reason}") from exc
    scheduler_config = _read_scheduler_config(path / "scheduler")
    return BaseModel(
        name=path.name,
        source=str(path),
        **parts,
        scheduler_config=scheduler_config,
        prediction_type=scheduler_config.get("prediction_type", "epsilon"),
        extras={"vocab_size": parts["text_encoder"].get_input_embeddings().num_embeddings},
    )


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    import json

    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        raise ModelError(f"base model scheduler folder '{folder}' has no scheduler_config.json")
    try:
        config = json.loads(config_file.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"'{config_file}' is not a JSON file ({quote(exc)})") from None
    if not isinstance(config, dict):
        raise ModelError(f"'{config_file}' holds {type(config).__name__}; expected a JSON object")
    return config
