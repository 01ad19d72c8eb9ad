"""Interpolation strips and combination grids, both made by the one sampling loop.

- Interpolation between A and B at weights 0, 1/(K-1), ..., 1, one row per seed:
  ``and``   prompt-level (the paper): "tpl(A) :1-w AND tpl(B) :w";
  ``lerp`` / ``slerp``  embedding-level: the mixed vectors as a temporary token in tpl(...).
- Combination of components A, B, ...: each alone, then all together with their weights.

``tpl`` is the template (default "{}"), e.g. "a chest x-ray with {}".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from lowbudget.errors import LowbudgetError
from lowbudget.sampling.interpolate import MIXERS, mix, temporary_token, token_vectors
from lowbudget.sampling.prompts import SubPrompt, format_prompt
from lowbudget.sampling.sampler import SampleRequest, Step, sample

METHODS = ("and", *MIXERS)


def _fill(template: str, value: str) -> str:
    if "{}" not in template:
        raise LowbudgetError(f"--template {template!r} must contain {{}} where the component goes")
    return template.replace("{}", value)


def interpolation_weights(steps: int) -> list[float]:
    """K evenly spaced weights from 0 (all A) to 1 (all B)."""
    return [i / (steps - 1) for i in range(steps)]


def interpolation(pipe, a: str, b: str, *, steps: int, method: str, template: str, request: SampleRequest,
                  watch: Callable[[float, Step], None] | None = None) -> tuple[list[float], torch.Tensor, list[str]]:
    """Images (len(seeds), K, 3, H, W) at K weights from A (w = 0) to B (w = 1), and their prompts.

    ``watch(w, step)``, if given, sees every sampling step of every weight.
    """
    if method not in METHODS:
        raise LowbudgetError(f"--method {method!r} is not known; expected one of {', '.join(METHODS)}")
    if steps < 2:
        raise LowbudgetError(f"--weight-steps {steps}: an interpolation needs at least 2 weights")
    weights = interpolation_weights(steps)
    columns, prompts = [], []
    for w in weights:
        step_watch = None if watch is None else (lambda step, w=w: watch(w, step))
        if method == "and":
            parts = [SubPrompt(_fill(template, a), 1 - w), SubPrompt(_fill(template, b), w)]
            prompt = format_prompt([p for p in parts if p.weight != 0])
            columns.append(sample(pipe, replace(request, prompt=prompt), watch=step_watch))
        else:
            vectors = mix(method, token_vectors(pipe, a), token_vectors(pipe, b), w)
            with temporary_token(pipe, vectors) as token:
                prompt = _fill(template, token)
                columns.append(sample(pipe, replace(request, prompt=prompt), watch=step_watch))
            prompt = f"{_fill(template, f'{method}({a}, {b}, {w:.2f})')}"
        prompts.append(prompt)
    return weights, torch.stack(columns, dim=1), prompts


def combination(pipe, components: list[str], weights: list[float], *, template: str, request: SampleRequest,
                watch: Callable[[Step], None] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Images (len(seeds), len(components) + 1, 3, H, W): each component alone, then all together.

    ``watch``, if given, sees every sampling step of every column."""
    if len(components) < 2:
        raise LowbudgetError("--combine needs at least two components")
    if len(weights) != len(components):
        raise LowbudgetError(f"--weights has {len(weights)} values for {len(components)} components")
    prompts = [_fill(template, c) for c in components]
    prompts.append(format_prompt([SubPrompt(p, w) for p, w in zip(prompts, weights)]))
    columns = [sample(pipe, replace(request, prompt=p), watch=watch) for p in prompts]
    return torch.stack(columns, dim=1), prompts
