"""Acceptance of the sampling side on the phantom world: interpolation, combination, inpainting.

  interpolation  <healthy-chest> -> <effusion> at K weights, one row per seed: Spearman rho
                 between weight and effusion score per seed, mean over seeds, for the prompt-level
                 method ("and") and the embedding-level ones (lerp, slerp); beside it, whether
                 the detector's decision ever turns off again, where the finding first appears,
                 from which sampling step each image in between stayed healthy or diseased, and
                 how far each mixed token moves the prompt's text encoding; and, as a reference,
                 the strip whose text-encoder states are mixed linearly (no token involved)
  combination    "<effusion> AND <cardiomegaly>": both detectors flag the same image
  inpainting     a healthy phantom, a box over one lower lung, prompt with <effusion>: the
                 effusion detector flags that side; with paste-back no pixel outside the
                 feathered box changes
  placed         (used by the fidelity section) the effusion inpainted into the right and the
                 left lower lung in turn: its side chosen rather than left to the adapter
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lowbudget.bench.fidelity import Sampling, open_with, request, train_finding
from lowbudget.bench.tables import markdown_table, save_inpainting_panel, save_strip
from lowbudget.phantoms import chest, detectors
from lowbudget.phantoms.world import generate
from lowbudget.sampling.compose import interpolation, interpolation_weights
from lowbudget.sampling.interpolate import mix, temporary_token, token_vectors
from lowbudget.sampling.masks import box_mask, feather as soften
from lowbudget.sampling.prompts import encode_texts
from lowbudget.sampling.sampler import Inpainting, Watch, decode, sample, sample_states
from lowbudget.stats import spearman

PLAIN = "a frontal chest x-ray"
TEMPLATE = f"{PLAIN} with {{}}"
A, B = "<healthy-chest>", "<effusion>"  # the interpolation's ends
REFERENCE = "interpolation, text states mixed linearly (reference)"


def interpolation_check(pipe, sampling: Sampling, seeds: list[int], weights: int = 5) -> dict:
    """Per method: Spearman rho per seed and its mean, the scores, and where the finding appears.

    Besides rho (the issue's measure), each row says whether the detector's *decision* is
    monotone (once flagged at some weight, flagged at every higher one), at which weight the
    finding first appears, and at which sampling step each image between A and B settled on
    healthy or diseased: an interpolation that jumps from healthy to diseased is monotone in
    the first sense, yet its rho measures detector noise on the healthy images.
    """
    out = {}
    for method in ("and", "lerp", "slerp"):
        decisions: dict = {}
        w, images, _ = interpolation(pipe, A, B, steps=weights, method=method, template=TEMPLATE,
                                     request=request(sampling, "", seeds), watch=_decision_recorder(pipe, decisions))
        out[method] = _strip_figures(w, images.mean(dim=2).cpu().numpy(), seeds, decisions)
        if method != "and":  # prompt-level mixing mixes noise predictions, not the conditioning
            out[method]["conditioning_progress"] = conditioning_progress(pipe, method, w)
    return out


def text_state_reference(pipe, sampling: Sampling, seeds: list[int], weights: int = 5) -> dict:
    """The same strip with the prompts' text-encoder states mixed linearly, (1 - w) c(A) + w c(B).

    Here the conditioning moves exactly along the line from A to B, so whatever switch remains
    comes from the U-Net and the sampler, not from how token vectors are mixed. A reference
    for that diagnosis, not a method users are offered.
    """
    negative, ca, cb = encode_texts(pipe, ["", TEMPLATE.format(A), TEMPLATE.format(B)]).states  # 3 x (77, D)
    w, decisions, columns = interpolation_weights(weights), {}, []
    record, req = _decision_recorder(pipe, decisions), request(sampling, "", seeds)
    for x in w:
        states = torch.stack([negative, (1 - x) * ca + x * cb])  # (2, 77, D)
        columns.append(sample_states(pipe, req, states, [1.0], watch=lambda step, x=x: record(x, step)))
    return _strip_figures(w, torch.stack(columns, dim=1).mean(dim=2).cpu().numpy(), seeds, decisions)


def _decision_recorder(pipe, decisions: dict):
    """A ``watch(w, step)`` that appends, per (w, seed), the detector's decision on the
    scheduler's estimate of the final image at that step."""
    cut = detectors.threshold("chest", "effusion")

    def record(w: float, step) -> None:
        if step.x0 is None:  # schedulers that report no estimate: no trail
            return
        gray = decode(pipe, step.x0).mean(dim=1).cpu().numpy()  # (B, H, W)
        for seed, image in zip(step.seeds, gray):
            decisions.setdefault((w, seed), []).append(bool(detectors.effusion(image) > cut))
    return record


def settle_step(decisions: list[bool], final: bool) -> int:
    """The first step (1-based) from which every step's decision is the final image's."""
    k = len(decisions)
    while k > 0 and decisions[k - 1] == final:
        k -= 1
    return k + 1


def _strip_figures(w: list[float], gray: np.ndarray, seeds: list[int], decisions: dict) -> dict:
    """gray: (seeds, K, H, W). Rho per seed, the decision's monotonicity, onsets, settle steps."""
    cut = detectors.threshold("chest", "effusion")
    scores = np.array([[detectors.effusion(im) for im in row] for row in gray])  # (seeds, K)
    flagged = scores > cut
    settles = [settle_step(decisions[(x, seed)], bool(flagged[i, j]))
               for j, x in enumerate(w) if 0 < x < 1 for i, seed in enumerate(seeds) if (x, seed) in decisions]
    rhos = [spearman(np.array(w), row) for row in scores]
    return {"rho_mean": float(np.mean(rhos)), "rhos": rhos, "weights": w, "scores": scores.tolist(),
            "mean_score_by_weight": scores.mean(0).tolist(),
            "decision_monotone": float(np.mean([(np.diff(f.astype(int)) >= 0).all() for f in flagged])),
            "onsets": [w[int(np.argmax(f))] if f.any() else None for f in flagged],
            "settle_steps": settles, "change": _change_around_onset(gray, flagged), "strip": gray}


def _change_around_onset(gray: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Mean absolute change between neighbouring images of a row, in gray levels of 255:
    over the steps before the finding appears, and over the step where it does."""
    steps = np.abs(np.diff(gray, axis=1)).mean(axis=(2, 3)) * 255  # (seeds, K - 1)
    before, at = [], []
    for row, f in zip(steps, flagged):
        if f.any() and not f[0]:
            onset = int(np.argmax(f))  # row[onset - 1] is the step onto the first flagged image
            before.extend(row[: onset - 1])
            at.append(row[onset - 1])
    return {"before": float(np.mean(before)) if before else float("nan"), "at": float(np.mean(at)) if at else float("nan")}


def conditioning_progress(pipe, method: str, weights: list[float]) -> list[float]:
    """Where the mixed token's prompt lands between A's and B's, in text-encoder output space.

    The projection of c(w) - c(0) onto c(1) - c(0), over all 77 positions: 0 at A, 1 at B,
    w for a path that moves the conditioning linearly.
    """
    a, b = token_vectors(pipe, A), token_vectors(pipe, B)
    states = []
    for w in weights:
        with temporary_token(pipe, mix(method, a, b, w)) as token:
            states.append(encode_texts(pipe, [TEMPLATE.format(token)]).states[0].flatten().float())  # (77 * D,)
    line = states[-1] - states[0]
    return [float((s - states[0]) @ line / (line @ line)) for s in states]


def combination_check(pipe, sampling: Sampling, seeds: list[int]) -> dict:
    prompt = f"{PLAIN} with <effusion> :1 AND {PLAIN} with <cardiomegaly> :1"
    gray = sample(pipe, request(sampling, prompt, seeds)).mean(dim=1).cpu().numpy()
    eff = detectors.flagged("chest", "effusion", gray)
    card = detectors.flagged("chest", "cardiomegaly", gray)
    return {"prompt": prompt, "both": float((eff & card).mean()), "effusion": float(eff.mean()),
            "cardiomegaly": float(card.mean()), "images": gray}


def inpainting_check(pipe, sampling: Sampling, seeds: list[int], feather: int = 4, watch: Watch | None = None) -> dict:
    """One healthy phantom per seed; the box covers the lower half of the patient's right lung.
    ``watch`` sees every sampling step."""
    size = 64
    x0, y0, x1, y1 = effusion_box("right", size)
    mask = box_mask(f"{x0},{y0},{x1},{y1}", size)  # (1, 1, 64, 64)
    outside = (soften(mask.float(), feather) == 0)[0, 0].numpy()
    cut = detectors.threshold("chest", "effusion")
    healthy = generate("chest", "none", n=len(seeds), seed=60_000)
    inside, changed, results = [], [], []
    for s, ph in zip(seeds, healthy):
        image = torch.from_numpy(ph.image)[None, None].repeat(1, 3, 1, 1)  # (1, 3, 64, 64)
        req = replace(request(sampling, f"{PLAIN} with <effusion>", [s]),
                      inpaint=Inpainting(image=image, mask=mask, feather=feather, paste_back=True))
        out = sample(pipe, req, watch=watch)[0]  # (3, 64, 64)
        gray = out.mean(dim=0).cpu().numpy()
        inside.append(detectors.effusion_sides(gray)["right"] > cut)
        changed.append(int((out.cpu() != image[0]).any(dim=0).numpy()[outside].sum()))
        results.append(gray)
    return {"box": [x0, y0, x1, y1], "detected_in_mask": float(np.mean(inside)),
            "pixels_changed_outside": int(sum(changed)), "images": np.stack(results),
            "originals": np.stack([p.image for p in healthy])}


# Where placed effusions start (image fraction): the lower third of the lung. A phantom
# effusion's level sits at most 0.35 of the lung's height above its base (0.54 right, 0.56 left);
# a box reaching higher lets the fluid climb beside the heart, where the cardiothoracic-ratio
# reader takes it for heart width. Effusion token, 32 seeds (PHANTOM_RESULTS.md, attributes):
# cardiomegaly read in 0.19 of images from 0.45 (the lower half), 0.06 from 0.50, 0.00 from 0.55.
LOWER_THIRD = 0.55


def effusion_box(side: str, size: int = 64, top: float = 0.45) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 in pixels: the patient's ``side`` lung from ``top`` (a fraction of the image
    height; 0.45 = its lower half) down past its base, to the midline."""
    x0, x1 = int((chest.LUNG_CX["right"] - 1.3 * chest.LUNG_HALF_WIDTH) * size), int(0.47 * size)
    y0, y1 = int(top * size), int((chest.LUNG_BASE[side] + 0.06) * size)
    return (x0, y0, x1, y1) if side == "right" else (size - x1, y0, size - x0, y1)  # image right = patient left


def placed_by_side(pipe, prompt: str, healthy: torch.Tensor, sampling: Sampling, seeds: list[int],
                   feather: int = 4, top: float = LOWER_THIRD) -> np.ndarray:
    """(N, 64, 64) effusion images whose side is chosen, not left to the prompt: ``prompt``
    inpaints the lung below ``top`` (see :func:`effusion_box`) of each ``healthy`` image
    (N, 3, 64, 64), right and left in turn. Measures what placing the finding gives when an
    adapter cannot carry its side."""
    out = []
    for k, (seed, image) in enumerate(zip(seeds, healthy)):
        x0, y0, x1, y1 = effusion_box(chest.SIDES[k % 2], 64, top)
        job = Inpainting(image=image[None], mask=box_mask(f"{x0},{y0},{x1},{y1}", 64), feather=feather, paste_back=True)
        out.append(sample(pipe, replace(request(sampling, prompt, [seed]), inpaint=job))[0].mean(dim=0))
    return torch.stack(out).cpu().numpy()


def compose_checks(cfg, output: Path, log) -> tuple[list[str], dict]:
    runs = output / "runs"
    files = [*train_finding(replace(cfg.token, finding="effusion"), runs / "effusion"),
             *train_finding(replace(cfg.token, finding="cardiomegaly"), runs / "cardiomegaly"),
             *train_finding(replace(cfg.token, finding="healthy-chest"), runs / "healthy-chest")]
    pipe = open_with(files, cfg.token.base)
    seeds = list(range(70_000, 70_000 + cfg.compose_seeds))
    interp = interpolation_check(pipe, cfg.sampling, seeds)
    for method, r in interp.items():
        save_strip(r.pop("strip")[0], output / f"interpolation-{method}.png", [f"weight {w:.2f}" for w in r["weights"]],
                   title=f"{method}: seed {seeds[0]}, from {A} to {B}")
        log(f"  interpolation {method}: mean Spearman rho {r['rho_mean']:.3f}")
    reference = text_state_reference(pipe, cfg.sampling, seeds)
    save_strip(reference.pop("strip")[0], output / "interpolation-text-states.png",
               [f"weight {w:.2f}" for w in reference["weights"]], title=f"text states mixed linearly: seed {seeds[0]}")
    reference["conditioning_progress"] = reference["weights"]  # linear by construction
    log(f"  interpolation of the text states (reference): mean Spearman rho {reference['rho_mean']:.3f}")
    comb_seeds = list(range(71_000, 71_000 + 2 * cfg.compose_seeds))
    comb = combination_check(pipe, cfg.sampling, comb_seeds)
    save_strip(comb.pop("images")[:8], output / "combination.png", [f"seed {s}" for s in comb_seeds[:8]],
               title=comb["prompt"])
    inp_seeds = list(range(72_000, 72_000 + 2 * cfg.compose_seeds))
    inp = inpainting_check(pipe, cfg.sampling, inp_seeds)
    save_inpainting_panel(inp.pop("originals")[:4], inp.pop("images")[:4], inp["box"], output / "inpainting.png",
                          inp_seeds[:4])
    log(f"  combination both {comb['both']:.2f}; inpainting {inp['detected_in_mask']:.2f}, "
        f"{inp['pixels_changed_outside']} pixels changed outside")
    rows = [[f"interpolation, {m}", f"mean Spearman rho {r['rho_mean']:.3f} over {len(seeds)} seeds", ">= 0.9"]
            for m, r in interp.items()]
    rows.append([REFERENCE, f"mean Spearman rho {reference['rho_mean']:.3f} over {len(seeds)} seeds", "(reference)"])
    rows.append(["combination <effusion> AND <cardiomegaly>",
                 f"both {comb['both']:.2f} (effusion {comb['effusion']:.2f}, cardiomegaly {comb['cardiomegaly']:.2f})",
                 ">= 0.70"])
    rows.append(["inpainting <effusion>, box on the right lower lung",
                 f"detected in mask {inp['detected_in_mask']:.2f}; {inp['pixels_changed_outside']} pixels changed "
                 "outside the feathered box (paste-back)", ">= 0.80; 0"])
    detail = _interpolation_detail({**interp, REFERENCE: reference}, cfg.sampling.steps)
    return (markdown_table(["check", "result", "target"], rows) + ["", *detail],
            {"interpolation": interp, "interpolation_reference": reference, "combination": comb, "inpainting": inp})


def _median_range(values: list, fmt: str, empty: str) -> str:
    """'median (min-max)', or ``empty`` when there are no values."""
    return f"{np.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})" if values else empty


def _interpolation_detail(interp: dict, steps: int) -> list[str]:
    """Why rho is what it is: where the finding appears, when each image settled on healthy or
    diseased, and how far the conditioning moved."""
    rows = []
    for method, r in interp.items():
        onsets = [o for o in r["onsets"] if o is not None]
        progress = r.get("conditioning_progress")
        rows.append([method, " / ".join(f"{s:.3f}" for s in r["mean_score_by_weight"]),
                     f"{r['decision_monotone']:.2f}",
                     _median_range(onsets, ".2f", "never"),
                     f"{r['change']['before']:.1f} / {r['change']['at']:.1f}",
                     _median_range(r["settle_steps"], "g", "(not recorded)"),
                     " / ".join(f"{x:.2f}" for x in progress) if progress else "(mixes noise predictions)"])
    weights = " / ".join(f"{w:.2f}" for w in next(iter(interp.values()))["weights"])
    return markdown_table(["method", f"mean effusion score at w = {weights}", "share of seeds whose detection, once on, stays on",
                           "weight where it first appears: median (range)",
                           "change between neighbours, gray levels: before it appears / onto it",
                           f"sampling step (of {steps}) from which an image between A and B stays healthy or "
                           "diseased: median (range)",
                           "conditioning moved (0 = A, 1 = B)"], rows)
