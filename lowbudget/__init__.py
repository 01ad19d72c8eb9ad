"""lowbudget: adapt pretrained Stable Diffusion to medical imaging on a budget.

The package, in layers; a module imports only from its own package and the layers above it
in this list (checked by ``tests/test_architecture.py``):

- ``errors``, ``checks``, ``stats``, ``io``, ``viz``, ``recipe``, ``version``
                  exceptions, value checks, rank statistics, atomic writes and the rule for
                  outputs, image grids, typed training recipes loaded from TOML
- ``models``      base models from local paths, the CLIP tokenizer, tiny and embedded models
- ``data``        image ingest (PNG/JPEG/TIFF, DICOM, NIfTI) and captions
- ``adapters``    textual inversion, LoRA, their files, keys and signatures
- ``evaluate``    diversity, realism, downstream classifier, memorisation audit
- ``phantoms``    the phantom world beside the product: generators, detectors, a data source
- ``sampling``    the one sampling loop: generate, compose, inpaint
- ``training``    the one training loop, checkpoints, latent cache, feedback
- ``sharing``     the adapter library, the release check, libraries over HTTP
- ``federation``  sites training one adapter together over Flower (the ``federate`` extra)
- ``bench``       the proving ground: fidelity, the benchmark, compose checks, the demo
                  report, pretraining the embedded base
- ``cli``         the Typer command line (the only package that imports Typer)
"""

from lowbudget.errors import LowbudgetError
from lowbudget.version import __version__


def load_adapter(pipe, path, **kwargs):
    """Load a lowbudget / A1111 / kohya / SDXL embedding or a LoRA into a diffusers pipeline.

    See :func:`lowbudget.adapters.load.load_adapter`; imported lazily so that
    ``import lowbudget`` stays cheap.
    """
    from lowbudget.adapters.load import load_adapter as _load_adapter

    return _load_adapter(pipe, path, **kwargs)


__all__ = ["LowbudgetError", "__version__", "load_adapter"]
