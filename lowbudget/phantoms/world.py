"""The phantom world: modalities, their findings, captions, and writing image folders.

A *generator spec* names what to draw: a modality, the findings every image shows, and the
prevalence of the other findings. Captions describe only what a report would say without the
held-out vocabulary (view, body habitus, exposure, devices, gland size): the findings are never
named, so a token has to learn them from the pixels.

Pretraining captions (``describe=True``) add what a layperson's alt-text would say about the
picture ("hazy left base", "round dot in the right lung"): Stable Diffusion has seen white haze
and round dots with words for them, never with the word "effusion". This is what makes a
finding *reachable* from the text encoder, so that a token has somewhere to go; the hospital's
own captions (what ``lowbudget phantom images`` writes and the tokens train on) never carry it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lowbudget import checks
from lowbudget.data.writers import write_dicom, write_png
from lowbudget.errors import LowbudgetError
from lowbudget.io import atomic_write_text
from lowbudget.phantoms import chest, prostate
from lowbudget.phantoms.scanners import Scanner


@dataclass(frozen=True)
class Modality:
    name: str
    findings: tuple[str, ...]
    sample: Callable[[np.random.Generator, set[str], float], Any]
    render: Callable[[Any, int, np.random.Generator], tuple[np.ndarray, dict[str, np.ndarray]]]
    caption: Callable[[Any, bool], str]  # (labels, describe appearance) -> caption
    plain_prompt: str  # what a user types for this modality without any finding


def _chest_caption(labels: chest.ChestLabels, describe: bool = False) -> str:
    words = ["a frontal chest x-ray"]
    if labels.habitus < 0.97:
        words.append("of a slim patient")
    elif labels.habitus > 1.03:
        words.append("of a broad patient")
    if labels.exposure < 0.95:
        words.append(", dark film")
    elif labels.exposure > 1.05:
        words.append(", bright film")
    if labels.pacemaker:
        words.append(f", {labels.pacemaker} pacemaker")
    if labels.ecg:
        words.append(", ecg leads")
    if labels.marker:
        words.append(f", marker top {labels.marker}")
    if describe:
        words += _chest_appearance(labels)
    return " ".join(words).replace(" ,", ",")


def _chest_appearance(labels: chest.ChestLabels) -> list[str]:
    """Plain words for what each finding looks like; never a finding's name or initializer word."""
    words = []
    if labels.effusion:
        words.append(f", hazy {labels.effusion} base")
    if labels.pneumothorax:
        words.append(f", lucent {labels.pneumothorax} rim")
    if labels.findings()["cardiomegaly"]:
        words.append(", wide central shadow")
    if labels.nodule is not None:
        words.append(f", round dot in the {'left' if labels.nodule[0] > 0.5 else 'right'} lung")  # image right = patient left
    return words


def _prostate_caption(labels: prostate.ProstateLabels, describe: bool = False) -> str:
    words = ["an axial t2 prostate mri"]
    if labels.gland < 0.95:
        words.append("of a small gland")
    elif labels.gland > 1.1:
        words.append("of a large gland")
    if labels.bladder:
        words.append(", bladder base")
    if labels.rectal_fluid:
        words.append(", filled rectum")
    if labels.prosthesis:
        words.append(f", {labels.prosthesis} hip prosthesis")
    if describe and labels.lesion:
        words.append(f", dark focus {labels.lesion} posterior")
    return " ".join(words).replace(" ,", ",")


MODALITIES = {
    "chest": Modality("chest", chest.FINDINGS, chest.sample_chest_labels, chest.render_chest, _chest_caption,
                      "a frontal chest x-ray"),
    "prostate": Modality("prostate", prostate.FINDINGS, prostate.sample_prostate_labels, prostate.render_prostate,
                         _prostate_caption, "an axial t2 prostate mri"),
}


def get_modality(name: str) -> Modality:
    if name not in MODALITIES:
        raise LowbudgetError(f"phantom modality {name!r} is not known; expected one of {', '.join(MODALITIES)}")
    return MODALITIES[name]


def check_finding(modality: Modality, finding: str) -> None:
    allowed = (*modality.findings, "none")
    if finding not in allowed:
        raise LowbudgetError(f"--finding {finding!r} is not known for {modality.name}; expected one of {', '.join(allowed)}")


@dataclass
class Phantom:
    image: np.ndarray  # (size, size) float32 in [0, 1]
    caption: str
    labels: dict[str, Any]  # flat: finding -> 0/1 plus attributes (side, size, ...)
    masks: dict[str, np.ndarray]


def check_request(modality: str, finding: str, *, n: int, size: int, seed: int, prevalence: float) -> Any:
    """The modality module, once every value of a request is known to work."""
    mod = get_modality(modality)
    check_finding(mod, finding)
    checks.at_least("-n", n, 1)
    checks.within("--size", size, 16, checks.MAX_IMAGE_SIZE)  # 100,000 px would need ~75 GiB per image
    checks.within("--prevalence", prevalence, 0.0, 1.0)
    checks.seed("--seed", seed)
    return mod


def generate(modality: str, finding: str = "none", *, n: int, size: int = 64, seed: int = 0,
             prevalence: float = 0.0, describe: bool = False, scanner: Scanner | None = None) -> list[Phantom]:
    """``n`` phantoms that all show ``finding`` ('none': no forced finding), others at ``prevalence``.

    ``describe`` adds the appearance words of pretraining captions; the images do not change.
    ``scanner`` shows them as a site's scanner would (the labels, masks and captions stay).
    """
    mod = check_request(modality, finding, n=n, size=size, seed=seed, prevalence=prevalence)
    rng = np.random.default_rng(seed)
    present = set() if finding == "none" else {finding}
    out = []
    for _ in range(n):
        labels = mod.sample(rng, present, prevalence)
        image, masks = mod.render(labels, size, rng)
        if scanner is not None:  # its own generator: the anatomy of image k is the same under every scanner
            image = scanner.acquire(image, np.random.default_rng([seed, len(out)]))
        out.append(Phantom(image, mod.caption(labels, describe), _flat_labels(labels), masks))
    return out


def _flat_labels(labels: Any) -> dict[str, Any]:
    flat = dict(labels.findings())
    for key, value in vars(labels).items():
        if isinstance(value, tuple):
            value = ";".join(f"{v:.4f}" for v in value)
        elif isinstance(value, float):
            value = round(value, 4)
        flat[f"{key}_attr" if key in flat else key] = "" if value is None else value
    return flat


def write_phantoms(output: Path, modality: str = "chest", finding: str = "none", *, n: int, size: int = 64,
                   fmt: str = "png", seed: int = 0, prevalence: float = 0.0, scanner: Scanner | None = None) -> list[Path]:
    """Write ``n`` images plus ``metadata.jsonl`` (captions) and ``labels.csv`` (ground truth)."""

    formats = {"png": ["png"], "png16": ["png16"], "dicom": ["dicom"], "mixed": ["png", "png16", "dicom"]}
    if fmt not in formats:
        raise LowbudgetError(f"--format {fmt!r} is not known; expected one of {', '.join(formats)}")
    output = Path(output)
    paths, rows, table = [], [], []
    for i, ph in enumerate(generate(modality, finding, n=n, size=size, seed=seed, prevalence=prevalence, scanner=scanner)):
        kind = formats[fmt][i % len(formats[fmt])]
        name = f"{modality}-{i:04d}." + ("dcm" if kind == "dicom" else "png")
        if kind == "dicom":
            paths.append(write_dicom(output / name, ph.image, monochrome1=bool(i % 2)))
        else:
            paths.append(write_png(output / name, ph.image, bits=16 if kind == "png16" else 8))
        rows.append({"file_name": name, "text": ph.caption})
        table.append({"file_name": name, **ph.labels, "scanner": scanner.name if scanner else "reference"})
    atomic_write_text(output / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(output / "labels.csv", buffer.getvalue())
    return paths


def write_chest_phantoms(output: Path, *, n: int, finding: str = "effusion", size: int = 64, fmt: str = "png",
                         seed: int = 0) -> list[Path]:
    """Chest phantoms that all show ``finding`` (kept for the tests' fixtures and old scripts)."""
    return write_phantoms(output, "chest", finding, n=n, size=size, fmt=fmt, seed=seed)
