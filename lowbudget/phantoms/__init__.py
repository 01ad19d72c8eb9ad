"""Procedural medical phantoms: images whose content is known exactly, and detectors for it."""

from lowbudget.phantoms.world import MODALITIES, generate, write_chest_phantoms, write_phantoms

__all__ = ["MODALITIES", "generate", "write_chest_phantoms", "write_phantoms"]
