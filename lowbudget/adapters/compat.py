"""Will this adapter work on that base? Checked before anything is loaded.

- a different text width is an error naming both widths and their likely families
  (768 = SD 1.x, 1024 = SD 2.x, 1280 = SDXL's second encoder), the commonest user error;
- the same width with another base fingerprint is a warning: fine-tunes of one family
  usually share the vocabulary, so the embedding often still works;
- a token that already exists in the vocabulary is an error that suggests a rename.
"""

from __future__ import annotations

import torch

from lowbudget.adapters.formats import EmbeddingFile
from lowbudget.adapters.textual_inversion import taken_pieces
from lowbudget.errors import AdapterError
from lowbudget.models.base import describe_width, token_table_fingerprint


def check_embedding(emb: EmbeddingFile, tokenizer, text_encoder, *, base_name: str) -> tuple[torch.Tensor, list[str]]:
    """The vectors to load and the warnings; raises AdapterError when they cannot fit."""
    width = int(text_encoder.get_input_embeddings().embedding_dim)
    if width not in emb.widths:
        have = ", ".join(describe_width(w) for w in emb.widths)
        made_for = f" (made for {emb.metadata['base_model']})" if emb.metadata.get("base_model") else ""
        raise AdapterError(
            f"'{emb.path}' has text width {have}{made_for} but base '{base_name}' has text width "
            f"{describe_width(width)}; use an embedding trained for this model family"
        )
    vectors = emb.vectors(width)
    warnings = fingerprint_warnings(emb.metadata, tokenizer, text_encoder, base_name, str(emb.path))
    check_token_is_new(emb.token, int(vectors.shape[0]), tokenizer, base_name)
    return vectors, warnings


def fingerprint_warnings(metadata: dict[str, str], tokenizer, text_encoder, base_name: str, what: str) -> list[str]:
    expected = metadata.get("base_fingerprint")
    if not expected:
        return []
    actual = token_table_fingerprint(text_encoder, tokenizer.vocab_size)
    if actual == expected:
        return []
    return [
        f"'{what}' was trained on base '{metadata.get('base_model', '?')}' (fingerprint {expected[:12]}), "
        f"not on '{base_name}' ({actual[:12]}); same width, so it loads, but check its output"
    ]


def check_token_is_new(token: str, n_vectors: int, tokenizer, base_name: str) -> None:
    taken = taken_pieces(tokenizer, token, n_vectors)
    if taken:
        raise AdapterError(
            f"token '{taken[0]}' already exists in the vocabulary of '{base_name}'; "
            f"load it under another name (--token / token='<{token.strip('<>')}-2>')"
        )


def check_lora(tensors: dict[str, torch.Tensor], unet, *, path: str, base_name: str) -> None:
    """Cross-attention K/V LoRA input width must equal the base's text width."""
    width = int(unet.config.cross_attention_dim)
    for key, tensor in tensors.items():
        if ".attn2.to_k.lora_A" in key or ".attn2.to_v.lora_A" in key:
            if tensor.shape[-1] != width:
                raise AdapterError(
                    f"LoRA '{path}' expects text width {describe_width(int(tensor.shape[-1]))} but base "
                    f"'{base_name}' has {describe_width(width)}; use a LoRA trained for this model family"
                )
            return
