"""Adapters: textual-inversion tokens, LoRA layers, and the files that carry them."""
