"""One call to put a lowbudget (or A1111 / kohya / SDXL) adapter into a diffusers pipeline.

    import lowbudget
    lowbudget.load_adapter(pipe, "effusion.safetensors")        # an embedding, any layout
    lowbudget.load_adapter(pipe, "runs/cxr")                    # a LoRA folder or file

Compared with calling ``pipe.load_textual_inversion`` / ``pipe.load_lora_weights`` directly,
the file is read safely whatever its layout, and a width mismatch, a foreign base or a token
clash is explained in one line (see :mod:`lowbudget.adapters.compat`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from safetensors import safe_open

from lowbudget.adapters.compat import check_embedding, check_lora, fingerprint_warnings
from lowbudget.adapters.own_files import LORA_WEIGHT_NAME
from lowbudget.adapters.foreign_layouts import read_embedding, read_lora
from lowbudget.adapters.signing import check_signature
from lowbudget.errors import AdapterError, quote
from lowbudget.models.text import text_encoders


def is_lora_file(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    try:
        with safe_open(str(path), framework="pt") as fh:
            return any(".lora" in k or k.startswith(("lora_unet", "lora_te")) for k in fh.keys())
    except Exception:
        return False


def load_adapter(pipe: Any, path: str | Path, *, token: str | None = None, trust: str | Path | None = None,
                 require_signature: bool = False,
                 warn: Callable[[str], None] = lambda m: warnings.warn(m, stacklevel=3)) -> str:
    """Load an embedding or a LoRA into ``pipe``; return the token or the LoRA adapter name.

    ``trust`` is a folder of public keys (``<site>.pub``): a signed file must then verify
    against one of them. ``require_signature`` refuses unsigned files too. Without either,
    files load as they are, with a note saying whether they carry a signature.
    """
    path = Path(path)
    base_name = str(getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "") or "this pipeline")
    if path.is_dir():
        if not (path / LORA_WEIGHT_NAME).is_file():
            raise AdapterError(f"folder '{path}' has no {LORA_WEIGHT_NAME}; give the adapter file itself")
        path = path / LORA_WEIGHT_NAME
    note = check_signature(path, trust, require_signature)
    if note:
        warn(note)
    if is_lora_file(path):
        return _load_lora(pipe, path, base_name, warn)
    emb = read_embedding(path, token)
    encoders = text_encoders(pipe)
    vectors, messages = check_embedding(emb, encoders, base_name=base_name)
    for message in messages:
        warn(message)
    for (tokenizer, encoder), part in zip(encoders, vectors):  # SDXL: each part into its own encoder
        pipe.load_textual_inversion({emb.token: part}, token=emb.token, tokenizer=tokenizer, text_encoder=encoder)
    return emb.token


def _load_lora(pipe: Any, path: Path, base_name: str, warn: Callable[[str], None]) -> str:
    tensors, metadata = read_lora(path)
    check_lora(tensors, pipe.unet, path=str(path), base_name=base_name, text_encoder=pipe.text_encoder,
               text_encoder_2=getattr(pipe, "text_encoder_2", None))
    for message in fingerprint_warnings(metadata, text_encoders(pipe), base_name, str(path)):
        warn(message)
    name = path.parent.name if path.name == LORA_WEIGHT_NAME else path.stem
    try:
        # folder + weight_name: diffusers 0.38 refuses a bare file path in offline mode; 0.42 takes either
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
    except (ValueError, KeyError, RuntimeError, TypeError) as exc:  # layouts we do not check ourselves
        raise AdapterError(f"diffusers cannot load LoRA '{path}': {quote(exc)}") from None
    return name
