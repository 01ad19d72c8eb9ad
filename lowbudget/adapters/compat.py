"""Will this adapter work on that base? Checked before anything is loaded.

- a different text width is an error naming both widths and their likely families
  (768 = SD 1.x, 1024 = SD 2.x, 1280 = SDXL's second encoder), the commonest user error; on
  SDXL a file must bring a part for each encoder (``clip_l``, ``clip_g``) of its width;
- the same width with another base fingerprint is a warning: fine-tunes of one family
  usually share the vocabulary, so the embedding often still works;
- a token that already exists in the vocabulary is an error that suggests a rename.
"""

from __future__ import annotations

import torch

from lowbudget.adapters.foreign_layouts import EmbeddingFile
from lowbudget.adapters.textual_inversion import taken_pieces
from lowbudget.errors import AdapterError
from lowbudget.models.base import FAMILY_NAMES, describe_width, encoders_fingerprint, family_of_width
from lowbudget.models.tokenizer import clip_tokenizer


def check_embedding(emb: EmbeddingFile, encoders: list[tuple], *, base_name: str) -> tuple[list[torch.Tensor], list[str]]:
    """The vectors to load into each text encoder (one, or SDXL's two) and the warnings; raises
    AdapterError when they cannot fit. ``encoders``: the base's (tokenizer, text encoder) pairs."""
    vectors = _vectors_per_encoder(emb, [_width(encoder) for _, encoder in encoders], base_name)
    warnings = fingerprint_warnings(emb.metadata, encoders, base_name, str(emb.path))
    if len(emb.parts) > len(encoders):  # SDXL's first part on SD 1.x: the same CLIP, read at another layer
        warnings.append(f"'{emb.path}' is an SDXL embedding: only its {vectors[0].shape[-1]}-wide part loads on "
                        f"'{base_name}', and SDXL trained it through its encoder's penultimate layer; check its output")
    for tokenizer, _ in encoders:
        check_token_is_new(emb.token, int(vectors[0].shape[0]), tokenizer, base_name)
    return vectors, warnings


def fits(emb: EmbeddingFile, encoders: list[tuple]) -> bool:
    """Whether the embedding's widths fit the base's encoders (the rest of check_embedding aside)."""
    try:
        _vectors_per_encoder(emb, [_width(encoder) for _, encoder in encoders], "")
    except AdapterError:
        return False
    return True


def _width(text_encoder) -> int:
    return int(text_encoder.get_input_embeddings().embedding_dim)


def _vectors_per_encoder(emb: EmbeddingFile, widths: list[int], base_name: str) -> list[torch.Tensor]:
    made_for = f" (made for {emb.metadata['base_model']})" if emb.metadata.get("base_model") else ""
    have = ", ".join(describe_width(w) for w in emb.widths)
    if len(widths) == 1:
        if widths[0] not in emb.widths:
            raise AdapterError(
                f"'{emb.path}' has text width {have}{made_for} but base '{base_name}' has text width "
                f"{describe_width(widths[0])}; use an embedding trained for this model family"
            )
        return [emb.vectors(widths[0])]
    if len(emb.parts) != len(widths):  # one part: it would be half a token on a two-encoder base
        family = family_of_width(emb.widths[0])
        what = (f"an {FAMILY_NAMES[family]} embedding ({emb.widths[0]})" if family != "custom"
                else f"a {emb.widths[0]}-wide embedding")
        raise AdapterError(
            f"'{emb.path}'{made_for} holds one part, for one text encoder; base '{base_name}' is SDXL with two "
            f"({' + '.join(map(str, widths))}): {what} cannot load onto SDXL's second encoder ({widths[1]}); "
            "use an SDXL embedding (clip_l and clip_g parts)"
        )
    parts = list(emb.parts.items())  # clip_l, clip_g: read in this order (foreign_layouts.SDXL_PARTS)
    for (name, tensor), width, which in zip(parts, widths, ("first", "second")):
        if int(tensor.shape[-1]) != width:
            raise AdapterError(f"'{emb.path}' part {name} has width {describe_width(int(tensor.shape[-1]))}{made_for} "
                               f"but the {which} text encoder of base '{base_name}' has {describe_width(width)}; "
                               "use an embedding trained for this model family")
    return [tensor for _, tensor in parts]


def fingerprint_warnings(metadata: dict[str, str], encoders: list[tuple], base_name: str, what: str) -> list[str]:
    expected = metadata.get("base_fingerprint")
    if not expected:
        return []
    actual = encoders_fingerprint([encoder for _, encoder in encoders], encoders[0][0].vocab_size)
    if actual == expected:
        return []
    return [
        f"'{what}' was trained on base '{metadata.get('base_model', '?')}' (fingerprint {expected[:12]}), "
        f"not on '{base_name}' ({actual[:12]}); same width, so it loads, but check its output"
    ]


def check_not_a_word(emb: EmbeddingFile) -> None:
    """Every SD 1.x / 2.x base starts from CLIP's vocabulary: a token that is already a word
    there (or a piece '<t>_1' ... of it) cannot be loaded onto any of them."""
    check_token_is_new(emb.token, emb.n_vectors, clip_tokenizer(), "CLIP (every SD 1.x / 2.x / XL base)")


def check_token_is_new(token: str, n_vectors: int, tokenizer, base_name: str) -> None:
    taken = taken_pieces(tokenizer, token, n_vectors)
    if taken:
        raise AdapterError(
            f"token '{taken[0]}' already exists in the vocabulary of '{base_name}'; "
            f"load it under another name (--token / token='<{token.strip('<>')}-2>')"
        )


def check_lora(tensors: dict[str, torch.Tensor], unet, *, path: str, base_name: str, text_encoder=None,
               text_encoder_2=None) -> None:
    """Does a diffusers-layout LoRA fit the base? First the text width of cross-attention K/V
    (the commonest mismatch, named by family), then every adapted module: it must exist in
    the base, with the input and output sizes of the LoRA's matrices."""
    width = int(unet.config.cross_attention_dim)
    for key, tensor in tensors.items():
        if (".attn2.to_k.lora_A" in key or ".attn2.to_v.lora_A" in key) and tensor.shape[-1] != width:
            raise AdapterError(
                f"LoRA '{path}' expects text width {describe_width(int(tensor.shape[-1]))} but base "
                f"'{base_name}' has {describe_width(width)}; use a LoRA trained for this model family"
            )
    models = {"unet": unet, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2}
    modules = {prefix: dict(m.named_modules()) for prefix, m in models.items() if m is not None}
    for key, tensor in tensors.items():
        prefix, _, rest = key.partition(".")
        name, found, kind = rest.partition(".lora_")
        if prefix not in modules or not found or kind[:1] not in "AB":
            continue  # another layout (kohya, peft): diffusers converts it and reports what it cannot
        module = modules[prefix].get(name)
        if module is None:
            raise AdapterError(f"LoRA '{path}' adapts {prefix}.{name}, which base '{base_name}' does not have; "
                               "it was made for another model")
        fan_in = getattr(module, "in_features", None) or getattr(module, "in_channels", None)
        fan_out = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
        have, want = (int(tensor.shape[1]), fan_in) if kind[0] == "A" else (int(tensor.shape[0]), fan_out)
        if want is not None and have != want:
            side = "input" if kind[0] == "A" else "output"
            raise AdapterError(f"LoRA '{path}': {key} has {side} size {have} but {prefix}.{name} of base "
                               f"'{base_name}' has {want}; it was made for another model")
