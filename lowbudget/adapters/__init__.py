"""Adapters: textual-inversion tokens, LoRA layers, and the files that carry them.

  textual_inversion.py  new tokens in the text encoder's vocabulary, trained as vectors
  lora.py               LoRA layers on the U-Net and text encoder, through peft
  own_files.py          what lowbudget writes: embeddings and LoRA with a provenance header
  foreign_layouts.py    files in the layouts of A1111, kohya, ComfyUI, diffusers: read and written
  pickles.py            the only place a pickle is opened (bounded, weights only)
  compat.py             does a file fit a base: widths, modules, fingerprints, vocabulary
  keys.py, signing.py   a site's ed25519 keys; signatures in the safetensors header
  load.py               load any of them into a diffusers pipeline
  inspect.py            what a file holds, for `lowbudget inspect`
"""
