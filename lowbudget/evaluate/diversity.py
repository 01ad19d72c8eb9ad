"""Diversity as within-prompt MS-SSIM, as RoentGen measured it.

Images generated from one prompt are taken in groups of 4; the 6 pairwise MS-SSIM scores of
each group (grayscale, data range 1.0) are averaged. Lower means more diverse. The same is
computed for random groups of 4 real images as the reference: a generator as diverse as the
data scores about the same.

MS-SSIM is Wang et al.'s (2003): an 11-pixel Gaussian window (sigma 1.5), 5 scales with
weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333 when the images are large enough (>= 176 px);
smaller images use as many scales as fit, with the weights renormalised, and the report
says how many.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from lowbudget import checks
from lowbudget.errors import DataError, quote
from lowbudget.evaluate.images import list_images, load_image
from lowbudget.progress import track

BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
KERNEL, SIGMA, GROUP = 11, 1.5, 4


def n_scales(size: int) -> int:
    """Most scales whose coarsest level still holds one 11-pixel window."""
    k = len(BETAS)
    while k > 1 and size / 2 ** (k - 1) < KERNEL:
        k -= 1
    return k


def _gaussian_filter(x: torch.Tensor) -> torch.Tensor:
    """Separable 11x11 Gaussian (sigma 1.5), 'valid' region only, as in Wang et al. (2003)."""
    g = torch.exp(-((torch.arange(KERNEL, dtype=x.dtype) - KERNEL // 2) ** 2) / (2 * SIGMA**2))
    g = g / g.sum()
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of image pairs (N, 1, H, W) in [0, 1] (data range 1.0) -> (N,).

    Contrast-structure terms at the finer scales, full SSIM at the coarsest; negative terms
    (possible for unrelated noise) count as 0 rather than giving NaN powers.
    """
    a, b = a.double(), b.double()
    k = n_scales(min(a.shape[-2:]))
    betas = torch.tensor(BETAS[:k], dtype=torch.double) / sum(BETAS[:k])
    c1, c2 = 0.01**2, 0.03**2
    terms = []
    for level in range(k):
        mx, my = _gaussian_filter(a), _gaussian_filter(b)
        sxx = _gaussian_filter(a * a) - mx**2
        syy = _gaussian_filter(b * b) - my**2
        sxy = _gaussian_filter(a * b) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if level < k - 1:
            terms.append(cs.mean(dim=(1, 2, 3)).clamp(min=0))
            pad = [s % 2 for s in a.shape[-2:]]
            a, b = F.avg_pool2d(a, 2, padding=pad), F.avg_pool2d(b, 2, padding=pad)
        else:
            ssim = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
            terms.append(ssim.mean(dim=(1, 2, 3)).clamp(min=0))
    return torch.prod(torch.stack(terms) ** betas.view(-1, 1), dim=0).float()


def group_scores(groups: list[list[Path]], size: int, progress: str | None = None) -> list[float]:
    """Mean of the 6 pairwise MS-SSIM scores of each group of 4 (one group in memory at a time)."""
    scores = []
    for group in track(groups, progress, "group"):
        images = torch.stack([load_image(p, size, grayscale=True) for p in group])  # (4, 1, S, S)
        pairs = list(itertools.combinations(range(len(group)), 2))
        i, j = zip(*pairs)
        scores.append(float(ms_ssim(images[list(i)], images[list(j)]).mean()))
    return scores


def prompt_groups(paths: list[Path]) -> list[list[Path]] | None:
    """Groups by the prompt stored in each PNG (lowbudget's or A1111's text chunk), if all have one."""
    by_prompt: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        if path.suffix.lower() != ".png":
            return None
        try:
            with Image.open(path) as img:
                info = dict(img.info)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read '{path}': {quote(exc)}") from None
        prompt = None
        if "lowbudget" in info:
            prompt = str(json.loads(info["lowbudget"]).get("prompt"))
        elif "parameters" in info:
            prompt = str(info["parameters"]).split("\n")[0]
        if prompt is None:
            return None
        by_prompt[prompt].append(path)
    return [g[i : i + GROUP] for g in by_prompt.values() for i in range(0, len(g) - GROUP + 1, GROUP)]


def diversity(generated: str | Path, real: str | Path | None = None, *, size: int = 256,
              seed: int = 0, max_groups: int = 100, progress: bool = False) -> dict[str, Any]:
    """Within-prompt MS-SSIM of ``generated`` and, for reference, of random groups of ``real``."""
    checks.within("--size", size, 16, checks.MAX_IMAGE_SIZE)  # MS-SSIM needs one 11-pixel window
    paths = list_images(generated)
    groups = prompt_groups(paths)
    grouping = "prompt"
    if groups is None:  # no prompts stored: consecutive files in name order, 4 at a time
        groups, grouping = [paths[i : i + GROUP] for i in range(0, len(paths) - GROUP + 1, GROUP)], "file order"
    if not groups:
        raise DataError(f"'{generated}' needs at least {GROUP} images per prompt for within-prompt MS-SSIM")
    groups = groups[:max_groups]
    scores = group_scores(groups, size, "generated" if progress else None)
    result: dict[str, Any] = {
        "ms_ssim_mean": _mean(scores), "ms_ssim_std": _std(scores), "n_groups": len(groups),
        "n_pairs": 6 * len(groups), "grouping": grouping, "image_size": size, "scales": n_scales(size),
        "group_scores": scores,
    }
    if real is not None:
        real_paths = list_images(real)
        if len(real_paths) < GROUP:
            raise DataError(f"'{real}' needs at least {GROUP} images for the reference")
        rng = random.Random(seed)
        ref_groups = [rng.sample(real_paths, GROUP) for _ in range(min(len(groups), max_groups))]
        ref = group_scores(ref_groups, size, "real" if progress else None)
        result |= {"reference_ms_ssim_mean": _mean(ref), "reference_ms_ssim_std": _std(ref), "reference_groups": len(ref)}
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float:
    m = _mean(values)
    return (sum((v - m) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
