"""The demo's report: what a learned finding token does, measured and shown.

``report.md`` plus PNGs in one folder: samples before (plain prompt) and after (with the
token), the fidelity figure (detector rates), an interpolation strip from the plain prompt to
the token, a combination with another finding's shared embedding, and an inpainting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from lowbudget.adapters.load import load_adapter
from lowbudget.bench.compose_check import inpainting_check
from lowbudget.bench.fidelity import Sampling, detection_rate, generate_gray, modality_of, open_with, prompts
from lowbudget.bench.tables import save_strip
from lowbudget.io import atomic_write_text
from lowbudget.phantoms.detectors import DETECTORS, flagged
from lowbudget.sampling.compose import interpolation
from lowbudget.sampling.sampler import SampleRequest
from lowbudget.sharing.library import read_index
from lowbudget.viz import bar_chart, save_png


def demo_report(adapter: Path, finding: str, output: Path, *, library: Path | None = None, n: int = 16,
                sampling: Sampling | None = None, log: Callable[[str], None] = print) -> Path:
    """Write ``output/report.md`` for ``adapter`` (a token trained on ``finding``); returns its path."""
    sampling = sampling or Sampling()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    pipe = open_with([adapter])
    seeds = list(range(n))
    images = {what: generate_gray(pipe, p, seeds, sampling) for what, p in prompts(finding).items()}
    rates = {what: detection_rate(finding, im) for what, im in images.items()}
    save_strip(images["plain"][:8], output / "before.png")
    save_strip(images["token"][:8], output / "after.png")
    labels = {"token": "with token", "init": "initializer word", "plain": "plain prompt"}
    save_png(bar_chart([labels[k] for k in rates], list(rates.values()), title=f"{finding} detector rate, {n} images"),
             output / "fidelity.png")
    lines = [f"# {finding}: what the learned token does", "", f"Adapter: `{adapter}`", "",
             "| prompt | text | detector rate |", "|---|---|---|"]
    lines += [f"| {labels[k]} | `{prompts(finding)[k]}` | {rates[k]:.2f} |" for k in rates]
    lines += ["", "Before (plain prompt):", "", "![before](before.png)", "", "After (with the token):", "",
              "![after](after.png)", "", "![fidelity](fidelity.png)", ""]
    lines += _interpolation(pipe, finding, sampling, output) + _combination(pipe, finding, library, sampling, output, log)
    lines += _inpainting(pipe, finding, sampling, output)
    return atomic_write_text(output / "report.md", "\n".join(lines))


def _interpolation(pipe, finding: str, sampling: Sampling, output: Path) -> list[str]:
    plain = prompts(finding)["plain"]
    req = SampleRequest(prompt="", seeds=[0], steps=sampling.steps, guidance=sampling.guidance, scheduler=sampling.scheduler)
    weights, images, _ = interpolation(pipe, plain, prompts(finding)["token"], steps=6, method="and", template="{}",
                                       request=req)
    strip = images[0].mean(dim=1).cpu().numpy()  # (K, H, W)
    save_strip(strip, output / "interpolation.png")
    detect = DETECTORS[modality_of(finding)][finding]
    scores = ", ".join(f"{w:.1f}: {detect(im):.3f}" for w, im in zip(weights, strip))
    return ["## Interpolation (prompt-level, plain -> token)", "", "![interpolation](interpolation.png)", "",
            f"Detector score by weight: {scores}", ""]


def _combination(pipe, finding: str, library: Path | None, sampling: Sampling, output: Path, log) -> list[str]:
    """Combine with another finding of the same modality from the shared library, if it has one."""
    modality = modality_of(finding)
    others = [e for e in (read_index(library) if library and (library / "index.json").is_file() else [])
              if e.token != f"<{finding}>" and e.modality.startswith(modality) and not e.token.startswith("<healthy")]
    if not others:
        return ["## Combination", "", "Skipped: the library has no other finding for this modality.", ""]
    other = others[0]
    load_adapter(pipe, library / other.file, warn=log)
    other_finding = other.token.strip("<>")
    plain = prompts(finding)["plain"]
    prompt = f"{plain} with <{finding}> :1 AND {plain} with {other.token} :1"
    images = generate_gray(pipe, prompt, list(range(100, 116)), sampling)
    both = (flagged(modality, finding, images) & flagged(modality, other_finding, images)).mean()
    save_strip(images[:8], output / "combination.png")
    return ["## Combination", "", f"`{prompt}`", "", "![combination](combination.png)", "",
            f"Both findings detected in {both:.2f} of {len(images)} images.", ""]


def _inpainting(pipe, finding: str, sampling: Sampling, output: Path) -> list[str]:
    if finding != "effusion":
        return []

    result = inpainting_check(pipe, sampling, list(range(200, 208)))
    save_strip(np.concatenate([result["originals"][:4], result["images"][:4]]), output / "inpainting.png")
    return ["## Inpainting (box over the right lower lung, paste-back)", "", "![inpainting](inpainting.png)", "",
            f"Effusion detected inside the box in {result['detected_in_mask']:.2f} of 8 images; "
            f"{result['pixels_changed_outside']} pixels changed outside the feathered box.", ""]
