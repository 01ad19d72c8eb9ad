"""The real CLIP BPE tokenizer, built offline from the vocabulary shipped in ``assets/``.

``bpe_simple_vocab_16e6.txt.gz`` is OpenAI's CLIP vocabulary (MIT licence, see
``assets/LICENSE-CLIP-BPE.txt``). Stable Diffusion 1.x and 2.x both tokenize with it, so a
tokenizer built here gives the same ids as the tokenizer folder of a real checkpoint:
"a photo of a cat" -> 49406 320 1125 539 320 2368 49407.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

from transformers import CLIPTokenizer

# CLIP keeps the first 49152 - 256 - 2 merges of the file; the remaining lines are unused.
_N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
MAX_LENGTH = 77


def _bytes_to_unicode() -> list[str]:
    """The printable stand-in for each of the 256 bytes, in CLIP's (GPT-2's) order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Build CLIP's ``vocab`` (49,408 entries) and ``merges`` from the shipped BPE file."""
    blob = resources.files("lowbudget.assets").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(blob).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : _N_MERGES + 1]]  # line 0 is a version header
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return vocab, merges


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A ``CLIPTokenizer`` identical to SD 1.x's (SD 2.x pads with ``"!"``)."""
    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token)
    tokenizer.model_max_length = MAX_LENGTH
    return tokenizer
