"""Weighted sub-prompts ("healthy chest x-ray :0.3 AND <effusion> :0.7") and their encoding.

The paper's composition (prompt-level, as in the popular web UI): each sub-prompt is encoded
on its own and the noise predictions are mixed each step. Because each sub-prompt has its own
77-token window, two 64-vector disease tokens combine; a sub-prompt that would not fit is an
error, never a silent cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from lowbudget.adapters.textual_inversion import expand_tokens, loaded_vector_count
from lowbudget.errors import LowbudgetError
from lowbudget.models.base import native_size
from lowbudget.models.text import Conditioning, encode, text_encoders

_WEIGHT = re.compile(r"(?:^|\s):\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*$")


@dataclass(frozen=True)
class SubPrompt:
    text: str
    weight: float = 1.0


def parse_prompt(prompt: str) -> list[SubPrompt]:
    """'a :0.3 AND b :0.7' -> [SubPrompt('a', 0.3), SubPrompt('b', 0.7)]; no weight means 1."""
    parts = []
    for piece in re.split(r"\s+AND\s+", prompt.strip()):
        match = _WEIGHT.search(piece)
        weight = float(match.group(1)) if match else 1.0
        text = piece[: match.start()].strip() if match else piece.strip()
        if not text:
            raise LowbudgetError(f"prompt {prompt!r} has an empty sub-prompt; write 'text :weight AND text :weight'")
        parts.append(SubPrompt(text, weight))
    return parts


def format_prompt(parts: list[SubPrompt]) -> str:
    return " AND ".join(f"{p.text} :{p.weight:g}" for p in parts) if len(parts) > 1 else parts[0].text


def expand_learned_tokens(pipe, text: str) -> str:
    """Expand multi-vector tokens the diffusers way ('<t>' -> '<t> <t>_1 ...')."""
    vocab = pipe.tokenizer.get_vocab()
    counts = {w: loaded_vector_count(vocab, w) for w in {t.strip(",.;:") for t in re.findall(r"\S+", text)}}
    return expand_tokens(text, {w: n for w, n in counts.items() if n > 1})


_LEARNED = re.compile(r"<[^<>\s]+>")  # '<effusion>': how learned tokens are spelled by convention


def check_tokens_known(pipe, texts: list[str]) -> None:
    """A '<token>' a vocabulary lacks would be drawn as the letters of its name: refuse it. On
    SDXL both tokenizers must know it -- a token loaded into one encoder only is half a token."""
    pairs = text_encoders(pipe)
    for n, (tokenizer, _) in enumerate(pairs):
        vocab = tokenizer.get_vocab()
        unknown = sorted({w for t in texts for w in _LEARNED.findall(t) if w not in vocab and f"{w}</w>" not in vocab})
        if not unknown:
            continue
        learned = sorted(w for w in vocab if _LEARNED.fullmatch(w) and "|" not in w)  # not <|endoftext|>
        have = f"loaded: {', '.join(learned)}" if learned else "no token is loaded"
        which = f"this model's {'second' if n else 'first'} text encoder" if len(pairs) > 1 else "this model"
        raise LowbudgetError(f"the prompt names {', '.join(unknown)}, which {which} does not know ({have}); "
                             "load its file with --adapter")


@torch.no_grad()
def encode_texts(pipe, texts: list[str], size: int | None = None) -> Conditioning:
    """The conditioning of each text in its own 77-token window: states (len(texts), 77, D), and
    on SDXL the pooled embeddings and time ids for images of ``size`` pixels (default: native)."""
    tokenizer = pipe.tokenizer
    limit = tokenizer.model_max_length
    check_tokens_known(pipe, texts)
    expanded = [expand_learned_tokens(pipe, t) for t in texts]
    for text, full in zip(texts, expanded):
        n = len(tokenizer(full).input_ids)
        if n > limit:
            raise LowbudgetError(
                f"sub-prompt {text[:60]!r} is {n} tokens with learned vectors expanded (limit {limit}); "
                "split it with AND or shorten it"
            )
    return encode(text_encoders(pipe), expanded, size=size or native_size(pipe.unet, pipe.vae))
