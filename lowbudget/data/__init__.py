"""Training data: readers for medical and ordinary image files, captions, the image folder."""

from lowbudget.data.dataset import ImageSet, TrainingImage, load_image_folder

__all__ = ["ImageSet", "TrainingImage", "load_image_folder"]
