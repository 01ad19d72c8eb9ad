"""Embedding files in every layout users already have, read safely and written back.

Layouts (see ``shared/BRIEF.md``):

- ``diffusers``  safetensors, one key ``{token: tensor[n, dim]}`` (lowbudget's own format)
- ``a1111``      pickled ``.pt`` dict with ``string_to_param["*"]`` and ``name``
- ``kohya``      safetensors ``{"emb_params": tensor[n, dim]}``
- ``sdxl``       safetensors ``{"clip_l": [n, 768], "clip_g": [n, 1280]}`` (read only)
- ``comfyui``    reads all of the above; written as the diffusers layout, referenced in
                 prompts by file name (``embedding:<stem>``)

Pickles are only ever opened with ``torch.load(weights_only=True)``, which rebuilds tensors
and plain containers and refuses anything that would run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lowbudget.errors import AdapterError
from lowbudget.io import atomic_write

WRITABLE = ("diffusers", "a1111", "kohya", "comfyui")
SDXL_PARTS = {"clip_l": 768, "clip_g": 1280}


@dataclass
class EmbeddingFile:
    """One embedding as read from disk, whatever its layout."""

    path: Path
    layout: str  # diffusers | a1111 | kohya | sdxl
    token: str
    parts: dict[str, torch.Tensor]  # {token: (n, dim)}, or SDXL's {"clip_l": ..., "clip_g": ...}
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def widths(self) -> list[int]:
        return [int(t.shape[-1]) for t in self.parts.values()]

    def vectors(self, width: int | None = None) -> torch.Tensor:
        """The (n, dim) tensor; for SDXL files the part whose width matches ``width``."""
        if len(self.parts) == 1:
            return next(iter(self.parts.values()))
        for tensor in self.parts.values():
            if width is not None and tensor.shape[-1] == width:
                return tensor
        from lowbudget.models.base import describe_width

        have = " and ".join(f"{k} {describe_width(int(v.shape[-1]))}" for k, v in self.parts.items())
        raise AdapterError(f"'{self.path}' holds {have}; none matches text width {width}")


def read_embedding(path: str | Path, token: str | None = None) -> EmbeddingFile:
    """Read an embedding in any supported layout; ``token`` overrides the name it gets."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"embedding file '{path}' does not exist")
    if path.suffix in (".pt", ".bin", ".pth"):
        data, metadata = _load_pickle(path), {}
    elif path.suffix == ".safetensors":
        data, metadata = _load_safetensors(path)
    else:
        raise AdapterError(f"'{path}' is not an embedding file; expected .safetensors or .pt")
    layout, name, parts = _interpret(path, data)
    if isinstance(data.get("lowbudget"), dict):  # provenance carried inside an A1111 .pt
        metadata = {str(k): str(v) for k, v in data["lowbudget"].items()}
    parts = {k: _as_matrix(path, v) for k, v in parts.items()}
    return EmbeddingFile(path, layout, token or metadata.get("token") or name, parts, metadata)


def _load_pickle(path: Path) -> dict:
    import pickle

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise AdapterError(
            f"refusing '{path}': the pickle holds more than tensors (possibly code), and lowbudget only loads "
            f"weights ({str(exc).splitlines()[0][:120]})"
        ) from None
    except Exception as exc:
        raise AdapterError(f"cannot read '{path}' as a PyTorch file: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise AdapterError(f"'{path}' holds a {type(data).__name__}, not an embedding dict")
    return data


def _load_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:
        raise AdapterError(f"cannot read '{path}' as safetensors: {exc}") from None


def _interpret(path: Path, data: dict) -> tuple[str, str, dict[str, torch.Tensor]]:
    default_name = f"<{path.name.split('.')[0]}>"
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise AdapterError(f"'{path}': string_to_param is empty")
        name = str(data.get("name") or default_name)
        return "a1111", name, {name: next(iter(params.values()))}
    if "emb_params" in data:
        return "kohya", default_name, {default_name: data["emb_params"]}
    if set(SDXL_PARTS) <= set(data):
        return "sdxl", default_name, {k: data[k] for k in SDXL_PARTS}
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) == 1:
        return "diffusers", next(iter(tensors)), tensors
    if any(k.startswith(("unet.", "text_encoder.", "lora_")) or ".lora" in k for k in data):
        raise AdapterError(f"'{path}' is a LoRA file, not an embedding")
    raise AdapterError(
        f"'{path}' is not an embedding in a known layout (diffusers single key, A1111 string_to_param, "
        f"kohya emb_params, SDXL clip_l/clip_g); keys: {', '.join(list(map(str, data))[:5])}"
    )


def _as_matrix(path: Path, tensor) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise AdapterError(f"'{path}': expected a tensor, found {type(tensor).__name__}")
    tensor = tensor.detach().cpu()
    if tensor.ndim == 1:  # single-vector embeddings are sometimes stored as (dim,)
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 2 or not tensor.is_floating_point():
        raise AdapterError(f"'{path}': expected a float (n_vectors, dim) tensor, got {tuple(tensor.shape)} {tensor.dtype}")
    return tensor


def write_embedding(emb: EmbeddingFile, layout: str, path: str | Path) -> Path:
    """Write ``emb`` in ``layout``; SDXL files must first be reduced to one part."""
    from safetensors.torch import save_file

    if layout not in WRITABLE:
        raise AdapterError(f"--to {layout!r} is not a known layout; expected one of {', '.join(WRITABLE)}")
    if len(emb.parts) != 1:
        raise AdapterError(f"'{emb.path}' has several parts ({', '.join(emb.parts)}); pick one with --width")
    tensor = emb.vectors().contiguous()
    metadata = dict(emb.metadata) | {"token": emb.token}
    if layout == "a1111":
        payload = {
            "string_to_token": {"*": 265},  # A1111's placeholder id; it is not used on load
            "string_to_param": {"*": tensor},
            "name": emb.token,
            "step": int(metadata.get("steps", 0) or 0),
            "sd_checkpoint": None,
            "sd_checkpoint_name": metadata.get("base_model"),
            "lowbudget": metadata,
        }
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))
    key = "emb_params" if layout == "kohya" else emb.token
    return atomic_write(path, lambda tmp: save_file({key: tensor}, str(tmp), metadata=metadata))


def default_output(emb: EmbeddingFile, layout: str) -> Path:
    suffix = ".pt" if layout == "a1111" else ".safetensors"
    stem = emb.path.name.split(".")[0]
    return emb.path.with_name(f"{stem}-{layout}{suffix}")
