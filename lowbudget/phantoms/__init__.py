"""The phantom world, beside the product: procedural medical images whose content is known
exactly, detectors that read it back, and phantoms as a training-data source.

  chest.py, prostate.py, texture.py  the generators
  scanners.py                        how a site's scanner shows them (exposure, contrast, noise, resolution)
  world.py                           modalities, captions, labels; writing phantom folders
  detectors.py                       a calibrated detector per finding, and modality recognition
  source.py                          ``data.phantoms = "chest/effusion"``: phantoms drawn in memory

What is measured on this world (fidelity, the benchmark, the demo report) is in :mod:`lowbudget.bench`.
"""

from lowbudget.phantoms.world import MODALITIES, generate, write_chest_phantoms, write_phantoms

__all__ = ["MODALITIES", "generate", "write_chest_phantoms", "write_phantoms"]
