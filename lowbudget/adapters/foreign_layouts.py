"""Embedding and LoRA files in the layouts other tools write, read safely and written back.
(What lowbudget itself writes, with its provenance header, is :mod:`lowbudget.adapters.own_files`.)

Layouts, as each tool's own loader reads them:

- ``diffusers``  safetensors, one key ``{token: tensor[n, dim]}`` (lowbudget's own format)
- ``a1111``      pickled ``.pt`` dict with ``string_to_param["*"]`` and ``name``
- ``kohya``      safetensors ``{"emb_params": tensor[n, dim]}``
- ``sdxl``       safetensors ``{"clip_l": [n, 768], "clip_g": [n, 1280]}`` (read only)
- ``comfyui``    reads all of the above; written as the diffusers layout, referenced in
                 prompts by file name (``embedding:<stem>``)

Pickles are only ever opened by :mod:`lowbudget.adapters.pickles`: ``torch.load(weights_only=True)``
(tensors and plain containers, never code) after bounding the work the file can cause.

A1111 checks a ``.pt`` before loading it: every entry of the zip archive must match
``^([^/]+)/((data/\d+)|version|(data\.pkl))$``. Current torch writes more entries than that
(``.format_version``, ``byteorder``, ...), so the A1111 file is re-packed with only those, in a
folder named after the file's stem.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lowbudget.adapters.own_files import trigger_word
from lowbudget.adapters.pickles import load_pt, text_dict, text_field
from lowbudget.errors import AdapterError, quote
from lowbudget.io import atomic_write
from lowbudget.models.base import describe_width

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

    @property
    def n_vectors(self) -> int:
        return max(int(t.shape[0]) for t in self.parts.values())

    def vectors(self, width: int | None = None) -> torch.Tensor:
        """The (n, dim) tensor; for SDXL files the part whose width matches ``width``."""
        if len(self.parts) == 1:
            return next(iter(self.parts.values()))
        for tensor in self.parts.values():
            if width is not None and tensor.shape[-1] == width:
                return tensor

        have = " and ".join(f"{k} {describe_width(int(v.shape[-1]))}" for k, v in self.parts.items())
        raise AdapterError(f"'{self.path}' holds {have}; none matches text width {width}")


MAX_ABS_VALUE = 1e3  # trained token vectors stay of order 1 (the vocabulary's rows: norms ~0.4)


def embedding_problems(emb: EmbeddingFile) -> list[str]:
    """Why ``emb`` cannot be used, each reason naming the file; empty when it can."""
    problems = []
    token = emb.token
    if not token.strip() or any(c.isspace() for c in token) or not token.isprintable():
        problems.append(f"'{emb.path}': token {token!r} is empty or holds whitespace; expected one word such as "
                        f"<effusion> (give one with --token / token=)")
    counts = {name: int(t.shape[0]) for name, t in emb.parts.items()}
    if len(set(counts.values())) > 1:  # ComfyUI indexes both parts by one count and crashes (kohya_ss #1264)
        problems.append(f"'{emb.path}': its parts hold different numbers of vectors "
                        f"({', '.join(f'{k} {v}' for k, v in counts.items())}); an SDXL embedding holds equally many")
    for name, tensor in emb.parts.items():
        what = f"'{emb.path}'" + (f" part {name}" if emb.layout == "sdxl" else "")
        if tensor.shape[0] == 0:
            problems.append(f"{what} holds no vectors (shape {list(tensor.shape)})")
        elif not torch.isfinite(tensor).all():
            problems.append(f"{what} holds NaN or infinite values")
        elif tensor.abs().max() > MAX_ABS_VALUE:
            problems.append(f"{what} holds values up to {float(tensor.abs().max()):.3g}; a usable token vector's "
                            f"stay below {MAX_ABS_VALUE:g}")
    return problems


def read_embedding(path: str | Path, token: str | None = None, *, check: bool = True) -> EmbeddingFile:
    """Read an embedding in any supported layout; ``token`` overrides the name it gets.

    With ``check`` (the default) an embedding that cannot be used (see
    :func:`embedding_problems`) is an AdapterError; ``inspect`` reads with ``check=False`` to show it.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"embedding file '{path}' does not exist")
    if path.suffix in (".pt", ".bin", ".pth"):
        data, metadata = load_pt(path), {}
    elif path.suffix == ".safetensors":
        data, metadata = _load_safetensors(path)
    else:
        raise AdapterError(f"'{path}' is not an embedding file; expected .safetensors or .pt")
    layout, name, parts = _interpret(path, data)
    if "lowbudget" in data:  # provenance carried inside an A1111 .pt
        metadata = text_dict(path, data["lowbudget"], "lowbudget")
    parts = {k: _as_matrix(path, v) for k, v in parts.items()}
    emb = EmbeddingFile(path, layout, token if token is not None else metadata.get("token") or name, parts, metadata)
    problems = embedding_problems(emb) if check else []
    if problems:
        raise AdapterError(problems[0])
    return emb


def read_lora(path: str | Path, *, check: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA ``.safetensors``: its tensors and header. With ``check`` (the default) a file that
    cannot be used (see :func:`lora_problems`) is an AdapterError; ``inspect`` shows it instead."""
    tensors, metadata = _load_safetensors(Path(path))
    problems = lora_problems(tensors, path) if check else []
    if problems:
        raise AdapterError(problems[0])
    return tensors, metadata


def lora_problems(tensors: dict[str, torch.Tensor], path: str | Path) -> list[str]:
    """Why a LoRA file cannot be used, each reason naming the file; empty when it can.

    Base-independent checks only; whether its modules and shapes fit a base is
    :func:`lowbudget.adapters.compat.check_lora`.
    """
    if not tensors:
        return [f"'{path}' holds no tensors"]
    problems = []
    for key, tensor in tensors.items():
        if key.endswith(".alpha"):  # kohya stores each module's alpha as a scalar
            continue
        if tensor.ndim not in (2, 4) or 0 in tensor.shape:
            problems.append(f"'{path}': tensor {key} has shape {list(tensor.shape)}; LoRA matrices have 2 dimensions "
                            "(4 for convolutions), none of them 0")
        elif not torch.isfinite(tensor).all():
            problems.append(f"'{path}': tensor {key} holds NaN or infinite values")
        elif tensor.abs().max() > MAX_ABS_VALUE:
            problems.append(f"'{path}': tensor {key} holds values up to {float(tensor.abs().max()):.3g}; trained LoRA "
                            f"matrices stay below {MAX_ABS_VALUE:g}")
    for key, down in tensors.items():  # each pair must share its rank
        up = tensors.get(key.replace("lora_A", "lora_B")) if "lora_A" in key else None
        if up is not None and down.ndim >= 2 and up.ndim >= 2 and down.shape[0] != up.shape[1]:
            problems.append(f"'{path}': {key} has rank {down.shape[0]} but its lora_B has {up.shape[1]}")
    return problems


_A1111_ENTRY = re.compile(r"(data/\d+)|version|data\.pkl")  # an entry's name below the archive's folder


def _load_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:
        raise AdapterError(f"cannot read '{path}' as safetensors: {quote(exc)}") from None


def _interpret(path: Path, data: dict) -> tuple[str, str, dict[str, torch.Tensor]]:
    default_name = f"<{trigger_word(file_stem(path))}>"  # 'bad hands.pt' -> <bad-hands>
    if "string_to_param" in data:
        params = data["string_to_param"]
        if isinstance(params, torch.nn.ParameterDict):  # original TI / early A1111: tensors in _parameters
            params = dict(vars(params).get("_parameters") or {})
        if not isinstance(params, dict) or not params:
            raise AdapterError(f"'{path}': string_to_param is empty")
        name = text_field(path, data, "name") or default_name
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
        f"kohya emb_params, SDXL clip_l/clip_g); keys: {', '.join(k[:40] for k in data if isinstance(k, str))[:200]}"
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
    """Write ``emb`` in ``layout``.

    An SDXL embedding (both parts) has one layout in every tool: ``{"clip_l", "clip_g"}`` in a
    safetensors file, which ComfyUI, the A1111 forks and kohya read as it is, and diffusers
    loads once per text encoder. It is written so whatever ``layout`` asks for.
    """
    if layout not in WRITABLE:
        raise AdapterError(f"--to {layout!r} is not a known layout; expected one of {', '.join(WRITABLE)}")
    metadata = dict(emb.metadata) | {"token": emb.token}
    if emb.layout == "sdxl" and set(emb.parts) == set(SDXL_PARTS):
        if Path(path).suffix != ".safetensors":
            raise AdapterError(f"'{path}': an SDXL embedding is written as .safetensors (every tool reads it so)")
        parts = {k: emb.parts[k].contiguous() for k in SDXL_PARTS}
        return atomic_write(path, lambda tmp: save_file(parts, str(tmp), metadata=metadata))
    if len(emb.parts) != 1:
        raise AdapterError(f"'{emb.path}' has several parts ({', '.join(emb.parts)}); pick one with --width")
    tensor = emb.vectors().contiguous()
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
        archive = a1111_archive(payload, file_stem(Path(path)))
        return atomic_write(path, lambda tmp: tmp.write_bytes(archive))
    key = "emb_params" if layout == "kohya" else emb.token
    return atomic_write(path, lambda tmp: save_file({key: tensor}, str(tmp), metadata=metadata))


def a1111_archive(payload: dict, stem: str) -> bytes:
    """``torch.save(payload)`` as a zip that passes A1111's safe-unpickle entry check.

    Only ``data.pkl``, ``data/<n>`` and ``version`` are kept, in their order, under ``<stem>/``;
    torch reads such an archive as it reads its own (the other entries are optional to it).
    """
    saved = io.BytesIO()
    torch.save(payload, saved)
    out = io.BytesIO()
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for entry in src.infolist():
            name = entry.filename.partition("/")[2]
            if _A1111_ENTRY.fullmatch(name):
                dst.writestr(f"{stem}/{name}", src.read(entry))
    return out.getvalue()


def file_stem(path: Path) -> str:
    """The name other tools trigger a file by: up to its first dot ('eff.safetensors' -> 'eff')."""
    return path.name.split(".")[0]


def triggers(emb: EmbeddingFile) -> dict[str, str]:
    """What to type in each tool's prompt to use this file, as each tool's loader names it."""
    stem = file_stem(emb.path)
    if emb.layout == "sdxl":
        diffusers = f"the token= you pass, once per text encoder (e.g. {emb.token})"
    elif emb.layout == "kohya":
        diffusers = "emb_params (the file's key), unless you pass token="
    else:  # diffusers loads a single-key file under its key and an A1111 file under its "name"
        diffusers = emb.token
    return {"lowbudget": emb.token, "diffusers": diffusers, "A1111": stem, "kohya": stem,
            "ComfyUI": f"embedding:{stem}"}


def naming_notes(written: EmbeddingFile, token: str, vocab: dict[str, int]) -> list[str]:
    """What the name of a converted file means for the tools that trigger an embedding by it.

    ``vocab`` is the CLIP vocabulary: kohya's generator adds ``stem, stem1, ..., stem<n-1>`` to
    the tokenizer and refuses the file when one of them is already a word ('eff' is).
    """
    stem = file_stem(written.path)
    notes = []
    if stem != trigger_word(token):
        notes.append(f"A1111, kohya and ComfyUI will trigger it by its file name '{stem}', not '{trigger_word(token)}'")
    words = [stem] + [f"{stem}{i}" for i in range(1, written.n_vectors)]
    clash = next((w for w in words if w in vocab), None)
    if clash:
        notes.append(f"kohya's gen_img refuses a file named '{stem}': '{clash}' is already a word of the CLIP "
                     f"vocabulary; give another --output name for kohya")
    return notes


def default_output(emb: EmbeddingFile, layout: str) -> Path:
    """``<folder>/<layout>/<word>.pt|.safetensors``: named so that the trigger word stays the token's."""
    suffix = ".pt" if layout == "a1111" and emb.layout != "sdxl" else ".safetensors"
    return emb.path.parent / layout / f"{trigger_word(emb.token)}{suffix}"
