"""The release check: before an adapter leaves the site, does it hand back training images?

``share`` samples ``n`` images from the adapter, runs the memorisation audit against the
training images (:func:`lowbudget.evaluate.memorisation.memorisation`), and releases only when
the fraction of samples flagged as near-copies is at most ``threshold``: then it writes the
adapter, with the audit's figures in its header, signed, and the audit report beside it. When
the check fails, the report is still written (it is the evidence) but no adapter is.

Why 64 samples and 5%: the audit flags a sample closer to a training image than 99% of the
training images are to their nearest other one, so a model drawing new images from the training
distribution has about 1% of its samples flagged by construction. With 64 samples, such a model
is refused with probability 0.4% (4 or more flagged, binomial), while one that copies 10% of
the time is refused with probability 89%, and one copying 20% with 99.95%.
"""

from __future__ import annotations

import datetime as _dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lowbudget import checks
from lowbudget.adapters.own_files import AUDIT, LORA_WEIGHT_NAME, read_header
from lowbudget.adapters.load import load_adapter
from lowbudget.errors import LowbudgetError
from lowbudget.evaluate.memorisation import memorisation
from lowbudget.evaluate.report import write_report
from lowbudget.io import output_folder
from lowbudget.models.base import BaseModel
from lowbudget.sampling.outputs import record, save_png
from lowbudget.sampling.sampler import SampleRequest, sample_with_progress
from lowbudget.adapters.signing import sign_file

MIN_TRAINING = 8  # measured: 8 phantoms tell a copying LoRA from a fresh one; 2 do not


class ReleaseRefused(LowbudgetError):
    """The adapter's samples include too many near-copies of its training images."""


@dataclass(frozen=True)
class ReleaseCheck:
    samples: int = 64  # images sampled from the adapter
    threshold: float = 0.05  # largest flagged fraction that is released
    percentile: float = 1.0  # the audit's flag: below this percentile of real-to-real distances
    steps: int = 25  # sampler steps per image
    seed: int = 0  # first seed; samples use seed, seed + 1, ...

    def __post_init__(self) -> None:
        checks.at_least("--samples", self.samples, 2)
        checks.within("--threshold", self.threshold, 0.0, 1.0)
        checks.within("--percentile", self.percentile, 0.0, 100.0)


def share(adapter: str | Path, training: str | Path, key: str | Path, output: str | Path, *, base: BaseModel,
          prompt: str | None = None, check: ReleaseCheck = ReleaseCheck(), overwrite: bool = False,
          log: Callable[[str], None] = print, progress: bool = False) -> dict[str, Any]:
    """Run the release check; on success write the signed adapter and the audit into ``output``.
    ``progress`` shows the sampling's steps and time left."""
    adapter, output = Path(adapter), Path(output)
    file = adapter / LORA_WEIGHT_NAME if adapter.is_dir() else adapter
    output_folder(output, overwrite=overwrite, command="share")
    pipe = base.pipeline()
    pipe.set_progress_bar_config(disable=True)
    name = load_adapter(pipe, file, warn=log)
    text = prompt or _default_prompt(file, name)
    log(f"release check: {check.samples} samples of {text!r}, audited against '{training}'")
    with tempfile.TemporaryDirectory(prefix="lowbudget-share-") as tmp:
        request = SampleRequest(prompt=text, seeds=list(range(check.seed, check.seed + check.samples)), steps=check.steps)
        images = sample_with_progress(pipe, request, "release check: sampling", enabled=progress)  # (n, 3, H, W)
        for seed, image in zip(request.seeds, images):
            save_png(image, Path(tmp) / f"sample-{seed:06d}.png", record(request, seed, {"name": base.name}, []))
        result = memorisation(tmp, training, percentile=check.percentile)
        write_report(output, "memorisation", result)
    audit = {"flagged_fraction": result["flagged_fraction"], "samples": check.samples, "threshold": check.threshold,
             "percentile": check.percentile, "n_training": result["n_training"], "prompt": text,
             "date": _dt.date.today().isoformat()}
    if result["n_training"] < MIN_TRAINING:
        log(f"note: with {result['n_training']} training images the audit's reference is {result['n_training']} "
            f"distances; below {MIN_TRAINING} it flags new images too (with 2, a one-step LoRA had 16 of 16 flagged)")
    if result["flagged_fraction"] > check.threshold:
        raise ReleaseRefused(f"not released: {result['flagged_fraction']:.1%} of {check.samples} samples are near-copies "
                             f"of training images (threshold {check.threshold:.0%}); see {output / 'memorisation.md'}")
    released = output / file.name
    sign_file(file, key, released, add={AUDIT: json.dumps(audit, sort_keys=True)})  # one write: audit and signature
    return audit | {"file": str(released)}


def _default_prompt(file: Path, name: str) -> str:
    """The first caption template of the adapter's recipe, with its token; else the token alone."""
    recipe = json.loads(read_header(file).get("recipe") or "{}")
    templates = recipe.get("data", {}).get("templates") or []
    token = name if name.startswith("<") else ""
    if templates and "{token}" in templates[0]:
        return " ".join(templates[0].replace("{token}", token).split())
    if token:
        return token
    raise LowbudgetError(f"'{file}' is a LoRA whose recipe names no caption template; give --prompt")

