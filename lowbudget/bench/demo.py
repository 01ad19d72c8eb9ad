"""The demo's report: what a learned finding token does, measured and shown.

``report.md`` and ``report.html`` (the same, for a browser) plus PNGs in one folder: samples
before (plain prompt) and after (with the token), the fidelity figure (detector rates), an
interpolation strip from the plain prompt to the token, a combination with another finding's
shared embedding, and an inpainting (input, mask, output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lowbudget.adapters.load import load_adapter
from lowbudget.bench.compose_check import inpainting_check
from lowbudget.bench.fidelity import Sampling, detection_rate, generate_gray, modality_of, open_with, prompts, request
from lowbudget.bench.tables import save_inpainting_panel, save_strip
from lowbudget.io import atomic_write_text
from lowbudget.phantoms.detectors import DETECTORS, flagged
from lowbudget.progress import Progress
from lowbudget.sampling.compose import interpolation
from lowbudget.sampling.sampler import unet_calls
from lowbudget.sharing.library import LibraryEntry, read_index
from lowbudget.viz import bar_chart, save_png, write_html

INTERPOLATION_WEIGHTS = 6
COMBINATION_SEEDS = list(range(100, 116))
INPAINTING_SEEDS = list(range(200, 208))


def demo_report(adapter: Path, finding: str, output: Path, *, library: Path | None = None, n: int = 16,
                sampling: Sampling | None = None, log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Write ``output/report.md`` and ``report.html`` for ``adapter`` (a token trained on
    ``finding``); returns the markdown's path. ``progress`` shows the sampling steps done and left."""
    sampling = sampling or Sampling()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    partner = _partner(finding, library)
    seeds = list(range(n))
    calls = lambda seeds: unet_calls(request(sampling, "", seeds))  # noqa: E731
    total = (len(prompts(finding)) * calls(seeds) + INTERPOLATION_WEIGHTS * calls([0])
             + (calls(COMBINATION_SEEDS) if partner else 0) + (len(INPAINTING_SEEDS) * calls([0]) if finding == "effusion" else 0))
    with Progress(total, "report", enabled=progress) as bar:
        tick = lambda *_: bar.update()  # noqa: E731
        bar.doing("loading the base and the token")
        pipe = open_with([adapter])
        bar.doing(f"sampling {n} images for each of {len(prompts(finding))} prompts")
        images = {what: generate_gray(pipe, p, seeds, sampling, watch=tick) for what, p in prompts(finding).items()}
        lines = _fidelity(finding, adapter, images, output)
        bar.doing("the interpolation strip")
        lines += _interpolation(pipe, finding, sampling, output, tick)
        bar.doing("the combination" if partner else "")
        lines += _combination(pipe, finding, library, partner, sampling, output, log, tick)
        bar.doing("the inpainting" if finding == "effusion" else "")
        lines += _inpainting(pipe, finding, sampling, output, tick)
    text = "\n".join(lines)
    write_html(text, output / "report.html", title=f"{finding}: what the learned token does")
    return atomic_write_text(output / "report.md", text)


def _fidelity(finding: str, adapter: Path, images: dict, output: Path) -> list[str]:
    rates = {what: detection_rate(finding, im) for what, im in images.items()}
    seeds = [f"seed {s}" for s in range(8)]
    save_strip(images["plain"][:8], output / "before.png", seeds, title=f"plain prompt: {prompts(finding)['plain']}")
    save_strip(images["token"][:8], output / "after.png", seeds, title=f"with the token: {prompts(finding)['token']}")
    labels = {"token": "with token", "init": "initializer word", "plain": "plain prompt"}
    n = len(images["token"])
    save_png(bar_chart([labels[k] for k in rates], list(rates.values()), title=f"{finding} detector rate, {n} images"),
             output / "fidelity.png")
    lines = [f"# {finding}: what the learned token does", "", f"Adapter: `{adapter}`", "",
             "| prompt | text | detector rate |", "|---|---|---|"]
    lines += [f"| {labels[k]} | `{prompts(finding)[k]}` | {rates[k]:.2f} |" for k in rates]
    return lines + ["", "Before (plain prompt):", "", "![before](before.png)", "", "After (with the token):", "",
                    "![after](after.png)", "", "![fidelity](fidelity.png)", ""]


def _interpolation(pipe, finding: str, sampling: Sampling, output: Path, tick) -> list[str]:
    plain = prompts(finding)["plain"]
    weights, images, _ = interpolation(pipe, plain, prompts(finding)["token"], steps=INTERPOLATION_WEIGHTS, method="and",
                                       template="{}", request=request(sampling, "", [0]), watch=tick)
    strip = images[0].mean(dim=1).cpu().numpy()  # (K, H, W)
    save_strip(strip, output / "interpolation.png", [f"weight {w:.1f}" for w in weights],
               title="seed 0, from the plain prompt (weight 0) to the token (weight 1)")
    detect = DETECTORS[modality_of(finding)][finding]
    scores = ", ".join(f"{w:.1f}: {detect(im):.3f}" for w, im in zip(weights, strip))
    return ["## Interpolation (prompt-level, plain -> token)", "", "![interpolation](interpolation.png)", "",
            f"Detector score by weight: {scores}", ""]


def _partner(finding: str, library: Path | None) -> LibraryEntry | None:
    """Another finding of the same modality in the shared library, to combine with."""
    modality = modality_of(finding)
    others = [e for e in (read_index(library) if library and (library / "index.json").is_file() else [])
              if e.token != f"<{finding}>" and e.modality.startswith(modality) and not e.token.startswith("<healthy")]
    return others[0] if others else None


def _combination(pipe, finding: str, library: Path | None, other: LibraryEntry | None, sampling: Sampling,
                 output: Path, log, tick) -> list[str]:
    if other is None:
        return ["## Combination", "", "Skipped: the library has no other finding for this modality.", ""]
    load_adapter(pipe, library / other.file, warn=log)
    other_finding = other.token.strip("<>")
    plain = prompts(finding)["plain"]
    prompt = f"{plain} with <{finding}> :1 AND {plain} with {other.token} :1"
    images = generate_gray(pipe, prompt, COMBINATION_SEEDS, sampling, watch=tick)
    modality = modality_of(finding)
    both = (flagged(modality, finding, images) & flagged(modality, other_finding, images)).mean()
    save_strip(images[:8], output / "combination.png", [f"seed {s}" for s in COMBINATION_SEEDS[:8]], title=prompt)
    return ["## Combination", "", f"`{prompt}`", "", "![combination](combination.png)", "",
            f"Both findings detected in {both:.2f} of {len(images)} images.", ""]


def _inpainting(pipe, finding: str, sampling: Sampling, output: Path, tick) -> list[str]:
    if finding != "effusion":
        return []
    result = inpainting_check(pipe, sampling, INPAINTING_SEEDS, watch=tick)
    save_inpainting_panel(result["originals"][:4], result["images"][:4], result["box"], output / "inpainting.png",
                          INPAINTING_SEEDS[:4], title="<effusion> painted into the box; outside it the input is kept")
    return ["## Inpainting (box over the right lower lung, paste-back)", "", "![inpainting](inpainting.png)", "",
            f"Effusion detected inside the box in {result['detected_in_mask']:.2f} of {len(INPAINTING_SEEDS)} images; "
            f"{result['pixels_changed_outside']} pixels changed outside the feathered box.", ""]
