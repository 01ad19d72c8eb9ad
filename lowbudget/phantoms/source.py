"""The phantom world as a data source: a recipe's ``data.phantoms = "chest/effusion"`` draws its
training images in memory instead of reading a folder, through the same :class:`ImageSet` a
folder gives the training loop."""

from __future__ import annotations

from pathlib import Path

from lowbudget.data.dataset import ImageSet, TrainingImage, to_rgb
from lowbudget.errors import DataError, LowbudgetError
from lowbudget.phantoms.world import generate
from lowbudget.recipe import DataConfig


def phantom_image_set(cfg: DataConfig) -> ImageSet:
    """Phantoms drawn in memory from ``data.phantoms`` ('chest/effusion'), with their captions."""
    modality, finding = cfg.phantoms.split("/")
    try:
        phantoms = generate(modality, finding, n=cfg.phantoms_n, size=cfg.resolution, seed=cfg.phantoms_seed)
    except LowbudgetError as exc:
        raise DataError(f"data.phantoms = {cfg.phantoms!r}: {exc}") from None
    own = cfg.captions != "templates"  # 'templates': ignore the phantoms' captions, as for a folder
    images = [TrainingImage(path=Path(f"phantoms/{cfg.phantoms}/{i:04d}"), pixels=to_rgb(p.image),
                            caption=p.caption if own else None) for i, p in enumerate(phantoms)]
    return ImageSet(folder=Path(f"phantoms/{cfg.phantoms}"), images=images, caption_source="phantoms" if own else "templates")
