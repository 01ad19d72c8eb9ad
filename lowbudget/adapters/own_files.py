"""lowbudget's own adapter files, in the layouts plain diffusers reads unchanged. (Files in
other tools' layouts are read and written by :mod:`lowbudget.adapters.foreign_layouts`.)

- Embedding: one token per ``.safetensors``, a single key ``{token: tensor[n_vectors, dim]}``
  (``pipe.load_textual_inversion(path)``), with provenance in the safetensors header. An SDXL
  token is ``{"clip_l": [n, 768], "clip_g": [n, 1280]}``, the layout ComfyUI, the A1111 forks
  and diffusers' SDXL examples read (diffusers loads each part into its encoder).
- LoRA: ``unet.*`` / ``text_encoder.*`` (SDXL: and ``text_encoder_2.*``) keys and diffusers' ``lora_adapter_metadata`` header
  entry (``pipe.load_lora_weights(folder)``), with the same provenance.

Header values are strings (a safetensors rule). No image data, file names, local paths or
patient identifiers go in: the recipe is stored in its shareable form.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lowbudget.errors import AdapterError
from lowbudget.io import atomic_write
from lowbudget.version import __version__

FORMAT_VERSION = "1"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # the name diffusers looks for in a folder
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
TRAINING = "lowbudget_training"  # header entry: how training ended (see Provenance.training), JSON
FEDERATION = "lowbudget_federation"  # header entry: the sites, rounds and aggregation of a federated run, JSON
AUDIT = "lowbudget_audit"  # header entry written by the release check (`lowbudget share`): its figures, JSON


@dataclass
class Provenance:
    """Who made an adapter, from what, and how -- written into every adapter file."""

    base_name: str
    base_fingerprint: str
    modality: str = ""
    n_images: int = 0
    steps: int = 0
    recipe: dict[str, Any] | None = None
    description: str = ""
    license: str = ""
    training: dict[str, Any] | None = None  # how training ended: steps run, stopping rule and reason, losses
    federation: dict[str, Any] | None = None  # a federated run: sites (labels, images), rounds, local steps, aggregation

    def header(self, kind: str) -> dict[str, str]:
        extra = {key: json.dumps(value, sort_keys=True) for key, value in ((TRAINING, self.training),
                                                                           (FEDERATION, self.federation)) if value}
        return extra | {
            "format": "pt",
            "lowbudget_format": f"{kind}/{FORMAT_VERSION}",
            "lowbudget_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "base_model": self.base_name,
            "base_fingerprint": self.base_fingerprint,
            "modality": self.modality,
            "n_images": str(self.n_images),
            "steps": str(self.steps),
            "recipe": json.dumps(self.recipe or {}, sort_keys=True),
            "description": self.description,
            "license": self.license,
        }


def trigger_word(token: str) -> str:
    """The word a file is named after: the token without its brackets, safe in any file system.

    A1111, kohya's generator and ComfyUI trigger an embedding by its file stem, so a file named
    after this word is triggered by the token's own word in every tool ('<effusion>' -> 'effusion').
    """
    word = "".join(c if c.isalnum() or c in "-_." else "-" for c in token.strip().strip("<>"))
    return word.strip("-.") or "token"


def token_file_name(token: str) -> str:
    """'<prostate-mri>' -> 'prostate-mri.safetensors'."""
    return f"{trigger_word(token)}.safetensors"


SDXL_KEYS = ("clip_l", "clip_g")  # SDXL embedding files: the first encoder's part, then the second's


def embedding_parts(vectors: list[torch.Tensor]) -> dict[str, torch.Tensor] | torch.Tensor:
    """A token's vectors per text encoder as a file holds them: the one tensor, or SDXL's two parts."""
    return vectors[0] if len(vectors) == 1 else dict(zip(SDXL_KEYS, vectors, strict=True))


def save_embedding(path: str | Path, token: str, vectors: torch.Tensor | dict[str, torch.Tensor],
                   provenance: Provenance, *, init: str = "", dtype: str = "fp32") -> Path:
    """Write ``{token: vectors (n, dim)}`` (or SDXL's ``{"clip_l": ..., "clip_g": ...}``) with
    provenance; atomic, 0644."""
    parts = vectors if isinstance(vectors, dict) else {token: vectors}
    for name, tensor in parts.items():
        what = f"embedding '{token}'" + (f" part {name}" if name != token else "")
        if tensor.ndim != 2:
            raise AdapterError(f"{what} must be (n_vectors, dim), got shape {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise AdapterError(f"{what} has NaN or infinite values; refusing to write {path}")
    counts = {int(t.shape[0]) for t in parts.values()}
    if len(counts) != 1:  # tools that read SDXL files index both parts by one count (kohya_ss #1264)
        raise AdapterError(f"embedding '{token}': its parts hold {sorted(counts)} vectors; they must hold equally many")
    header = provenance.header("embedding") | {
        "token": token,
        "n_vectors": str(counts.pop()),
        "dim": "+".join(str(t.shape[1]) for t in parts.values()),
        "init": init,
    }
    tensors = {name: t.detach().to(_DTYPES[dtype]).cpu().contiguous() for name, t in parts.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def save_lora(path: str | Path, tensors: dict[str, torch.Tensor], adapter_metadata: dict[str, Any],
              provenance: Provenance, *, dtype: str = "fp32") -> Path:
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise AdapterError(f"LoRA tensor {bad[0]} has NaN or infinite values; refusing to write {path}")
    header = provenance.header("lora") | {
        "lora_adapter_metadata": json.dumps(adapter_metadata, indent=2, sort_keys=True),
    }
    out = {k: v.to(_DTYPES[dtype]).contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(out, str(tmp), metadata=header))


def read_header(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})
