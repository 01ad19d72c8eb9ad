"""Validation images set apart by patient: one patient's images never sit on both sides.

Images of one patient look alike (same anatomy, scanner, session); a validation loss measured
on a patient the adapter also trained on rewards memorising that patient. The patient comes
from a ``patient_id`` (else ``study_id``) column of metadata.jsonl or the captions CSV; without
one every image counts as its own patient, which is right for one image per patient.
"""

from __future__ import annotations

import random
from dataclasses import replace

from lowbudget.data.dataset import ImageSet
from lowbudget.errors import DataError
from lowbudget.progress import plural


def split_by_patient(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(training, validation) with ``fraction`` of the patients held out: at least one, and at
    least one left to train on; the same patients for the same seed and images."""
    groups: dict[str, list[int]] = {}
    for i, image in enumerate(images.images):
        groups.setdefault(image.patient_key, []).append(i)
    if len(groups) < 2:
        raise DataError(f"data.validation_fraction needs images of at least 2 patients; '{images.folder}' has "
                        f"{plural(len(images), 'image')} of one patient ({images.patient_column} column)")
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    n_held = min(len(names) - 1, max(1, round(fraction * len(names))))
    held = {i for name in names[:n_held] for i in groups[name]}
    keep = [im for i, im in enumerate(images.images) if i not in held]
    out = [im for i, im in enumerate(images.images) if i in held]
    return replace(images, images=keep), replace(images, images=out, skipped=[])


def describe_split(train: ImageSet, validation: ImageSet) -> str:
    """One line for the log: how many images and patients on each side, and where patients came from."""
    def patients(s: ImageSet) -> int:
        return len({im.patient_key for im in s.images})

    source = f"{train.patient_column} column" if train.patient_column else "no patient column: one patient per image"
    return (f"validation: {plural(len(validation), 'image')} of {plural(patients(validation), 'patient')} held out, "
            f"{plural(len(train), 'image')} of {plural(patients(train), 'patient')} train ({source})")
