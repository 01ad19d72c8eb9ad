"""Embedding-level interpolation: lerp and slerp between two learned embeddings.

A different method from the paper's prompt-level composition: here the token *vectors* are
mixed into a new embedding, loaded as a temporary token, and sampled with an ordinary prompt.

Unequal vector counts: the shorter embedding is extended to the longer one's count by
repeating its vectors in order (vector i of the extended embedding is vector i mod n), the
same rule lowbudget uses to initialise a token from fewer initializer words. On SDXL a token
has vectors in both text encoders: each encoder's are mixed on their own.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from lowbudget.adapters.textual_inversion import loaded_vector_count, token_pieces
from lowbudget.errors import LowbudgetError
from lowbudget.models.text import text_encoders


def token_vectors(pipe, name: str) -> list[torch.Tensor]:
    """(n, D) per text encoder: a learned token's vectors ('<t>', '<t>_1', ...), or the
    embedding of plain words."""
    return [_vectors(tokenizer, encoder, name) for tokenizer, encoder in text_encoders(pipe)]


def _vectors(tokenizer, encoder, name: str) -> torch.Tensor:
    vocab = tokenizer.get_vocab()
    table = encoder.get_input_embeddings().weight.detach()
    if name in vocab:
        return table[[vocab[p] for p in token_pieces(name, loaded_vector_count(vocab, name))]].float().cpu()
    ids = tokenizer(name, add_special_tokens=False).input_ids
    if not ids:
        raise LowbudgetError(f"{name!r} is neither a learned token nor words the tokenizer knows")
    return table[ids].float().cpu()


def mix(method: str, a: list[torch.Tensor], b: list[torch.Tensor], w: float) -> list[torch.Tensor]:
    """``MIXERS[method]`` applied per text encoder."""
    return [MIXERS[method](x, y, w) for x, y in zip(a, b, strict=True)]


def _match_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(a), len(b))
    cycle = lambda x: x[torch.arange(n) % len(x)]  # noqa: E731
    return cycle(a), cycle(b)


def lerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    a, b = _match_counts(a, b)
    return (1 - w) * a + w * b


def slerp(a: torch.Tensor, b: torch.Tensor, w: float, eps: float = 1e-6) -> torch.Tensor:
    """Per vector: the direction moves along the great circle, the norm linearly."""
    a, b = _match_counts(a, b)
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp(min=eps), b / nb.clamp(min=eps)
    omega = torch.arccos((ua * ub).sum(-1, keepdim=True).clamp(-1 + eps, 1 - eps))
    so = torch.sin(omega)
    direction = torch.where(so > 1e-4, (torch.sin((1 - w) * omega) * ua + torch.sin(w * omega) * ub) / so,
                            (1 - w) * ua + w * ub)  # nearly parallel: lerp is exact enough
    return direction * ((1 - w) * na + w * nb)


MIXERS = {"lerp": lerp, "slerp": slerp}


@contextlib.contextmanager
def temporary_token(pipe, vectors: list[torch.Tensor], name: str = "<lowbudget-mix>") -> Iterator[str]:
    """Load ``vectors`` (one (n, D) tensor per text encoder) as a token for the duration of the
    block, then remove it again."""
    pairs = text_encoders(pipe)
    if len(vectors) != len(pairs):
        raise LowbudgetError(f"{len(vectors)} vector tensors for {len(pairs)} text encoders")
    loaded = []
    try:
        for (tokenizer, encoder), part in zip(pairs, vectors):
            pipe.load_textual_inversion({name: part}, token=name, tokenizer=tokenizer, text_encoder=encoder)
            loaded.append((tokenizer, encoder, len(part)))
        yield name
    finally:  # every piece: diffusers would otherwise leave '<t>_1', '<t>_2', ... behind
        for tokenizer, encoder, n in loaded:
            pipe.unload_textual_inversion(token_pieces(name, n), tokenizer=tokenizer, text_encoder=encoder)
