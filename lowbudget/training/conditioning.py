"""From images to the text conditioning of one step.

:class:`Captioner` renders each image's caption (template draw or its own caption with the
learned tokens expanded) and checks up front that no caption would be truncated at 77 tokens.
:class:`TextConditioner` turns captions into what the U-Net reads (:mod:`lowbudget.models.text`,
the same function sampling uses); when nothing on the text side trains (LoRA on the U-Net
only), the conditioning of each distinct caption is computed once and reused.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from lowbudget.adapters.textual_inversion import TokenBank
from lowbudget.data.captions import render_caption
from lowbudget.data.dataset import ImageSet
from lowbudget.errors import DataError
from lowbudget.models.text import Conditioning, encode
from lowbudget.recipe import DataConfig


class Captioner:
    def __init__(self, images: ImageSet, cfg: DataConfig, tokenizer, bank: TokenBank | None) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.bank = bank
        self.token_text = " ".join(bank.names) if bank else ""
        self.raw = [self._fit(im.caption) for im in images.images]
        self._check_captions()

    def text(self, index: int, rng: random.Random) -> str:
        caption = render_caption(self.raw[index], self.cfg, self.token_text, rng)
        return self.bank.expand(caption) if self.bank else caption

    def _expanded(self, text: str) -> str:
        """A caption or template as the text encoder sees it: {token} filled, vectors expanded."""
        full = " ".join(text.replace("{token}", self.token_text).split())
        return self.bank.expand(full) if self.bank else full

    def _length(self, text: str) -> int:
        """CLIP tokens of a training text, the learned vectors expanded."""
        return len(self.tokenizer(self._expanded(text)).input_ids)

    def _fit(self, raw: str | None) -> str | None:
        """With data.long_captions = 'trim', the image's caption without the words that would
        pass the 77-token limit (a 64-vector token leaves room for about 10 words)."""
        if raw is None or self.cfg.long_captions != "trim":
            return raw
        words, limit = raw.split(), self.tokenizer.model_max_length
        while words and self._length(self.cfg.caption_format.replace("{caption}", " ".join(words))) > limit:
            words.pop()
        return " ".join(words)

    def _check_captions(self) -> None:
        """Fail before training on captions that would be truncated or never show the token."""
        if "{token}" in " ".join(self.cfg.templates + [self.cfg.caption_format]) and not self.bank:
            raise DataError("captions use {token} but this method learns no token; remove {token} or use ti / ti+lora")
        candidates = set(self.cfg.templates) if None in self.raw else set()
        candidates |= {self.cfg.caption_format.replace("{caption}", r) for r in self.raw if r is not None}
        limit = self.tokenizer.model_max_length
        for text in sorted(candidates):
            full = self._expanded(text)
            if self.bank and not any(name in full for name in self.bank.names):
                raise DataError(
                    f"caption {text[:60]!r} never mentions a learned token, so the token cannot learn from it; "
                    "add {token} to data.templates / data.caption_format"
                )
            n = len(self.tokenizer(full).input_ids)
            if n > limit:
                raise DataError(
                    f"caption {text[:60]!r} is {n} tokens with the learned vectors expanded; the limit is {limit}. "
                    "Shorten it, use fewer vectors per token, or set data.long_captions = \"trim\""
                )


class TextConditioner:
    """The conditioning of a batch of captions through the base's text encoder(s), memoised
    when the text side is frozen. ``size`` (pixels) is what SDXL's time ids state."""

    def __init__(self, encoders: list[tuple[Any, Any]], frozen: bool, size: int) -> None:
        self.encoders = encoders  # (tokenizer, encoder) pairs: one, or SDXL's two
        self.frozen = frozen
        self.size = size
        self._memo: dict[str, Conditioning] = {}

    def __call__(self, texts: list[str]) -> Conditioning:  # (B, 77, D) states, + SDXL's (B, P) and (B, 6)
        if not self.frozen:
            return encode(self.encoders, texts, size=self.size)
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            with torch.no_grad():
                out = encode(self.encoders, missing, size=self.size)
            for j, text in enumerate(missing):
                self._memo[text] = out.rows(slice(j, j + 1))
        return Conditioning.cat([self._memo[t] for t in texts])
