"""Procedural medical phantoms: images whose content is known exactly."""

from lowbudget.phantoms.chest import chest_phantom, write_chest_phantoms

__all__ = ["chest_phantom", "write_chest_phantoms"]
