"""lowbudget: adapt pretrained Stable Diffusion to medical imaging on a budget.

The package is organised by what a user does with it:

- ``recipe``      typed training recipes loaded from TOML
- ``data``        image ingest (PNG/JPEG/TIFF, DICOM, NIfTI) and captions
- ``models``      base models from local paths, the CLIP tokenizer, tiny models
- ``adapters``    textual inversion, LoRA, and their files
- ``training``    the one training loop, checkpoints, latent cache, feedback
- ``sampling``    the one sampling loop: generate, compose, inpaint
- ``evaluate``    diversity, realism, downstream classifier, memorisation audit
- ``sharing``     the adapter library, keys and signatures, the release check, libraries over HTTP
- ``phantoms``    the phantom world: generators, detectors, the benchmark
- ``io``, ``checks``, ``errors``  atomic writes and the rule for outputs, value checks, exceptions
- ``cli``         the Typer command line (the only module that imports Typer)
"""

__version__ = "0.1.0"

from lowbudget.errors import LowbudgetError


def load_adapter(pipe, path, **kwargs):
    """Load a lowbudget / A1111 / kohya / SDXL embedding or a LoRA into a diffusers pipeline.

    See :func:`lowbudget.adapters.load.load_adapter`; imported lazily so that
    ``import lowbudget`` stays cheap.
    """
    from lowbudget.adapters.load import load_adapter as _load_adapter

    return _load_adapter(pipe, path, **kwargs)


__all__ = ["LowbudgetError", "__version__", "load_adapter"]
