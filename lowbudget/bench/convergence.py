"""When has a token learnt its finding? Fidelity along training, against where early stopping stops.

For each finding and seed: a fixed-budget run is stopped every ``every`` steps and resumed
(lowbudget's own ``--resume``), and the detector rate of the token's images is measured at
each stop, which gives the first step at which the token reaches the fidelity target. Then the
same token is trained with each early-stopping rule, and its fidelity at the step the rule
picks is set against the fixed budget's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from lowbudget.bench.fidelity import Sampling, TokenSpec, detection_rate, generate_gray, open_with, prompts, token_recipe
from lowbudget.recipe import Recipe
from lowbudget.training import TrainResult, train

TARGET = 0.8  # the fidelity target of the benchmark: the detector fires in >= 80% of images


@dataclass
class ConvergenceConfig:
    every: int = 25  # fidelity is checked every this many steps of the fixed-budget run
    seeds: tuple[int, ...] = (0, 1, 2)
    n_check: int = 16  # images per check along the run
    n_final: int = 32  # images per compared adapter (fixed budget, early-stopped)
    validate_every: int = 10  # output.validation_every of the early-stopped runs
    rules: dict[str, dict] = field(default_factory=lambda: {
        "dvar": {"optim": {"stop": "dvar"}},
        "validation": {"optim": {"stop": "validation", "patience": 5}, "data": {"validation_fraction": 0.2}},
    })


def convergence(spec: TokenSpec, cfg: ConvergenceConfig, output: Path, sampling: Sampling,
                log: Callable[[str], None]) -> list[dict]:
    """One record per seed: the fidelity curve, the step it first reaches the target, and per
    early-stopping rule the step it stopped at, the step it wrote, and that adapter's fidelity."""
    records = []
    for seed in cfg.seeds:
        s = replace(spec, seed=seed)
        t0 = time.perf_counter()
        curve, fixed = _fidelity_curve(s, cfg, output / f"{spec.finding}-fixed-{seed}", sampling)
        record = {"seed": seed, "curve": curve, "reached": next((k for k, r in curve if r >= TARGET), None),
                  "fixed": {"steps": spec.steps, "rate": _rate(s, fixed, cfg.n_final, sampling)}}
        for name, changes in cfg.rules.items():
            result = train(_with(token_recipe(s, output / f"{spec.finding}-{name}-{seed}"), changes, cfg.validate_every),
                           progress=False, log=lambda m: None)
            record[name] = {"stopped_at": result.steps, "written_step": result.written_step, "reason": result.stopped,
                            "rate": _rate(s, _adapters(result), cfg.n_final, sampling)}
        log(f"  {spec.finding} seed {seed}: reached {TARGET} at {record['reached']}; fixed {record['fixed']['rate']:.2f}; "
            + "; ".join(f"{n} {record[n]['written_step']} steps {record[n]['rate']:.2f}" for n in cfg.rules)
            + f" ({time.perf_counter() - t0:.0f} s)")
        records.append(record)
    return records


def summary_row(finding: str, records: list[dict], rules: list[str], budget: int) -> list:
    """finding | steps to target | fixed budget | per rule: steps written and fidelity (mean +- std)."""
    reached = [r["reached"] for r in records]
    row = [finding, ", ".join(str(k) if k is not None else f"> {budget}" for k in reached), _mean_std([r["fixed"]["rate"] for r in records])]
    for name in rules:
        row += [_mean_std([r[name]["written_step"] for r in records], "{:.0f}"), _mean_std([r[name]["rate"] for r in records])]
    return row


def claim_holds(records: list[dict], rule: str, budget: int) -> bool:
    """Early-stopped fidelity >= fixed-budget fidelity - 0.05 (seed means), with at most a third of the steps."""
    early = np.mean([r[rule]["rate"] for r in records])
    fixed = np.mean([r["fixed"]["rate"] for r in records])
    steps = np.mean([r[rule]["written_step"] for r in records])
    return bool(early >= fixed - 0.05 and steps <= budget / 3)


def _fidelity_curve(spec: TokenSpec, cfg: ConvergenceConfig, run: Path, sampling: Sampling) -> tuple[list, list[Path]]:
    curve, files = [], []
    for k in range(cfg.every, spec.steps + 1, cfg.every):
        result = train(token_recipe(replace(spec, steps=k), run), resume=k > cfg.every, progress=False, log=lambda m: None)
        files = _adapters(result)
        curve.append((k, _rate(spec, files, cfg.n_check, sampling)))
    return curve, files


def _with(recipe: Recipe, changes: dict[str, dict], every: int) -> Recipe:
    tables = {name: replace(getattr(recipe, name), **values) for name, values in changes.items()}
    tables["output"] = replace(tables.get("output", recipe.output), validation_every=every)
    return replace(recipe, **tables)


def _adapters(result: TrainResult) -> list[Path]:
    return [p for p in result.files if p.suffix == ".safetensors"]


def _rate(spec: TokenSpec, files: list[Path], n: int, sampling: Sampling) -> float:
    images = generate_gray(open_with(files, spec.base), prompts(spec.finding)["token"], list(range(10_000, 10_000 + n)), sampling)
    return detection_rate(spec.finding, images)


def _mean_std(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values))}"
