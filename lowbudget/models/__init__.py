"""Base models: loading a user's Stable Diffusion from a local path, the shipped CLIP
tokenizer, and the tiny in-process models used by the demo and the tests."""

from lowbudget.models.base import BaseModel
from lowbudget.models.loading import load_base

__all__ = ["BaseModel", "load_base"]
