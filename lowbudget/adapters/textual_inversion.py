"""Textual inversion: new token vectors trained while the vocabulary stays untouched.

The common way to train textual inversion resizes the text encoder's token table, lets the
optimizer see all 49,408 rows, and copies the old rows back after every step. That costs an
optimizer state as large as the table, about a second per step at SD scale, and -- with weight
decay or adaptive optimizers -- slowly erodes the vocabulary when the restore is forgotten.

Here the base table is never touched. :class:`TokenTable` replaces the text encoder's input
embedding with ``base rows (frozen) + new rows (one small trainable Parameter)``: ids below
``base_rows`` look up the frozen table, ids at or above it look up the new rows. Only the new
rows get gradients and optimizer state, so every other row is bit-for-bit unchanged.

On SDXL a token lives in both text encoders: each gets its own table of new rows (768 and 1280
wide), trained together from the same loss. A token trained in one encoder only leaves the
other reading a word it does not know, and changes little (diffusers PR #9010).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from lowbudget.errors import AdapterError
from lowbudget.models.base import BaseModel
from lowbudget.recipe import TokenConfig


class TokenTable(nn.Module):
    """A token embedding made of a frozen base table and trainable new rows."""

    def __init__(self, base: nn.Embedding, new_vectors: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.base_rows = base.num_embeddings
        self.new = nn.Parameter(new_vectors.detach().clone().float())  # (n_new, D), fp32 always

    @property
    def weight(self) -> torch.Tensor:
        """The full table (base + new rows), for code that reads ``embedding.weight``."""
        return torch.cat([self.base.weight, self.new.to(self.base.weight.dtype)], dim=0)

    @property
    def num_embeddings(self) -> int:
        return self.base_rows + self.new.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.base.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids (B, 77) -> (B, 77, D)
        is_new = ids >= self.base_rows
        out = self.base(ids.clamp(max=self.base_rows - 1))
        if not bool(is_new.any()):
            return out
        new = self.new[(ids - self.base_rows).clamp(min=0)].to(out.dtype)
        return torch.where(is_new.unsqueeze(-1), new, out)


def token_pieces(name: str, n_vectors: int) -> list[str]:
    """The tokenizer entries of a multi-vector token: '<t>', '<t>_1', ..., '<t>_{n-1}' (diffusers' convention)."""
    return [name] + [f"{name}_{i}" for i in range(1, n_vectors)]


def loaded_vector_count(vocab: dict[str, int], name: str) -> int:
    """How many vectors a token already in the tokenizer has ('<t>', '<t>_1', ...); 0 if absent."""
    if name not in vocab:
        return 0
    n = 1
    while f"{name}_{n}" in vocab:
        n += 1
    return n


def taken_pieces(tokenizer, name: str, n_vectors: int) -> list[str]:
    """Those pieces of a new token the vocabulary already has (BPE words end in '</w>': 'chest</w>')."""
    vocab = tokenizer.get_vocab()
    return [p for p in token_pieces(name, n_vectors) if p in vocab or f"{p}</w>" in vocab]


@dataclass(frozen=True)
class LearnedToken:
    name: str
    n_vectors: int
    offset: int  # first row of this token inside TokenTable.new

    @property
    def pieces(self) -> list[str]:
        return token_pieces(self.name, self.n_vectors)


class TokenBank:
    """The learned tokens of one run: their rows in each text encoder, and how prompts mention them."""

    def __init__(self, tables: list[TokenTable], tokens: list[LearnedToken]) -> None:
        self.tables = tables  # one per text encoder: SDXL has two
        self.tokens = tokens

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The new rows, one tensor per text encoder: (n_new, 768) [, (n_new, 1280)]."""
        return [table.new for table in self.tables]

    @property
    def trainable(self) -> dict[str, nn.Parameter]:
        """The parameters by the names checkpoints use: 'tokens' (and 'tokens_2' on SDXL)."""
        return {("tokens" if i == 0 else f"tokens_{i + 1}"): p for i, p in enumerate(self.parameters)}

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tokens]

    def vectors(self, name: str) -> list[torch.Tensor]:
        """The token's vectors in each text encoder, (n_vectors, D_i) each."""
        token = next(t for t in self.tokens if t.name == name)
        return [p.detach()[token.offset : token.offset + token.n_vectors].clone() for p in self.parameters]

    def expand(self, text: str) -> str:
        """'a <t> here' -> 'a <t> <t>_1 <t>_2 here' for a 3-vector token."""
        return expand_tokens(text, {t.name: t.n_vectors for t in self.tokens})


def expand_tokens(text: str, n_vectors: dict[str, int]) -> str:
    for name, n in n_vectors.items():
        pieces = " ".join(token_pieces(name, n))
        # The lookahead skips '<t>_1' pieces and a '<t>' already followed by its pieces, so an
        # already expanded prompt stays as it is.
        pattern = re.escape(name) + r"(?!_\d|\s+" + re.escape(f"{name}_1") + ")"
        text = re.sub(pattern, lambda _m: pieces, text) if n > 1 else text
    return text


def attach_tokens(base: BaseModel, tokens: list[TokenConfig]) -> TokenBank:
    """Add ``tokens`` to the tokenizer(s) and install a :class:`TokenTable` in each text encoder."""
    learned, offset = [], 0
    for cfg in tokens:
        learned.append(LearnedToken(cfg.name, cfg.n_vectors, offset))
        offset += cfg.n_vectors
    tables = [_attach(base.source, tokenizer, encoder, tokens, learned) for tokenizer, encoder in base.text_encoders]
    return TokenBank(tables, learned)


def _attach(source: str, tokenizer, encoder, tokens: list[TokenConfig], learned: list[LearnedToken]) -> TokenTable:
    embedding = encoder.get_input_embeddings()
    if isinstance(embedding, TokenTable):
        raise AdapterError("this text encoder already carries learned tokens; load the base again")
    if len(tokenizer) != embedding.num_embeddings:
        raise AdapterError(
            f"base '{source}': tokenizer has {len(tokenizer)} entries but the token table has "
            f"{embedding.num_embeddings} rows; cannot add tokens safely"
        )
    init_rows = []
    for cfg, token in zip(tokens, learned):
        taken = taken_pieces(tokenizer, cfg.name, cfg.n_vectors)
        if taken:
            raise AdapterError(f"token '{taken[0]}' is already in the vocabulary of '{source}'; "
                               f"choose a new name such as '<{cfg.name.strip('<>')}>'")
        init_ids = _initializer_ids(tokenizer, cfg)
        tokenizer.add_tokens(token.pieces)
        # Vector i starts from initializer word i (cycled): '<t>' with init 'prostate mri' and
        # 4 vectors starts as 'prostate', 'mri', 'prostate', 'mri'.
        init_rows += [init_ids[i % len(init_ids)] for i in range(cfg.n_vectors)]
    with torch.no_grad():
        init = embedding.weight[torch.tensor(init_rows)].float()  # (n_new, D)
    table = TokenTable(embedding, init).to(embedding.weight.device)
    encoder.set_input_embeddings(table)
    return table


def _initializer_ids(tokenizer, cfg: TokenConfig) -> list[int]:
    ids = tokenizer(cfg.init, add_special_tokens=False).input_ids
    if not ids:
        raise AdapterError(f"token '{cfg.name}': initializer {cfg.init!r} tokenizes to nothing")
    return ids
