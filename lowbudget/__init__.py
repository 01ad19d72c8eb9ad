"""lowbudget: adapt pretrained Stable Diffusion to medical imaging on a budget.

The package is organised by what a user does with it:

- ``recipe``      typed training recipes loaded from TOML
- ``data``        image ingest (PNG/JPEG/TIFF, DICOM, NIfTI) and captions
- ``models``      base models from local paths, the CLIP tokenizer, tiny models
- ``adapters``    textual inversion, LoRA, and their files
- ``training``    the one training loop, checkpoints, latent cache, feedback
- ``cli``         the Typer command line (the only module that imports Typer)
"""

__version__ = "0.1.0"

from lowbudget.errors import LowbudgetError

__all__ = ["LowbudgetError", "__version__"]
